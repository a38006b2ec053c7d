"""The kind e2e (`make e2e-kind`, tests/e2e_kind/run.sh) runs the cluster e2e's own suite (tests/e2e_cluster) on a
kind cluster: these checks keep the two in step, without kind. The run itself is `make e2e-kind` (never timed: kind
cannot run here; the same suite takes about 22 minutes on the local cluster). It needs network access for the kind
node image and the KubeRay chart, and skips, naming what is missing, where kind is not.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "e2e_kind" / "run.sh"
CLUSTERLIB = ROOT / "tests" / "e2e_cluster" / "clusterlib.py"


def test_the_kind_e2e_runs_the_cluster_suite_not_a_copy():
    script = SCRIPT.read_text()
    assert re.search(r"pytest -m cluster tests/e2e_cluster\b", script), "run.sh must run tests/e2e_cluster"
    assert sorted(p.name for p in (ROOT / "tests" / "e2e_kind").iterdir()) == ["run.sh"], \
        "scenarios belong in tests/e2e_cluster, not beside run.sh"
    # Every variable run.sh sets for the suite is one the suite reads.
    lib = CLUSTERLIB.read_text()
    exported = set(re.findall(r"\b(SHARDSCORE_E2E_[A-Z_]+)=", script))
    assert exported, "run.sh sets no SHARDSCORE_E2E_* variable"
    assert {v for v in exported if f'"{v}"' not in lib} == set(), exported


def test_kind_config_has_the_topology_the_suite_expects():
    """The suite finds nodes by labels (clusterlib.CPU_POOL, GPU_POOL) and tolerates the GPU taint."""
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    pools = {n["labels"]["shardscore.io/pool"]: n for n in workers}
    assert set(pools) == {"cpu", "gpu"}, pools
    assert pools["gpu"]["labels"]["nvidia.com/gpu.present"] == "true"
    patch = yaml.safe_load(pools["gpu"]["kubeadmConfigPatches"][0])
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in \
        patch["nodeRegistration"]["taints"], patch


def test_the_kind_e2e_says_what_it_lacks_or_that_it_is_ready():
    proc = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(("SKIP: kind e2e not run: missing: ", "kind e2e: every prerequisite is here")), \
        proc.stdout
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
