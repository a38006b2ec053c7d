"""The kind e2e (tests/e2e_kind/run.sh): the chart on a kind cluster with the KubeRay operator.

Runs only where docker (with a running engine), kind, kubectl and helm are present; elsewhere it is skipped and
says exactly what is missing. It takes 10-20 minutes and needs network access (kind node image, KubeRay chart and
operator image, moto server image).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "e2e_kind" / "run.sh"


def missing_prerequisites() -> list[str]:
    missing = [tool for tool in ("kind", "docker", "kubectl", "helm") if not shutil.which(tool)]
    if shutil.which("docker"):
        if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
            missing.append("a running Docker engine")
    return missing


def test_chart_on_kind_with_kuberay():
    missing = missing_prerequisites()
    if missing:
        pytest.skip(f"kind e2e needs: kind, kubectl, helm, a running Docker engine (missing: {', '.join(missing)})")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3600, cwd=ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20000:]
    assert "SKIP" not in proc.stdout, output[-5000:]
    assert "PASS: kind e2e" in proc.stdout, output[-5000:]
