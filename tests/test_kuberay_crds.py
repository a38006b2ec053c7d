"""scripts/kuberay-crds.py: the chart tests' CRDs come from the pinned KubeRay release, checked, or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kuberay-crds.py"


def _run(tools: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("SHARDSCORE_KUBERAY_ARCHIVE", "SHARDSCORE_CRD_DIR", "GOPROXY")}
    return subprocess.run([sys.executable, str(SCRIPT), str(tools)], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)


def test_an_archive_that_is_not_the_release_is_refused_and_nothing_is_written(tmp_path: Path):
    fake = tmp_path / "kuberay.tar.gz"
    fake.write_bytes(b"not the release")
    r = _run(tmp_path / "tools", SHARDSCORE_KUBERAY_ARCHIVE=str(fake))
    assert r.returncode == 1
    assert f"SHARDSCORE_KUBERAY_ARCHIVE={fake} has sha256" in r.stderr and "not the pinned" in r.stderr
    assert not (tmp_path / "tools").exists()


def test_without_a_source_it_fails_at_once_saying_what_to_set(tmp_path: Path):
    # A module proxy that answers nothing (a closed port on loopback) and no archive.
    r = _run(tmp_path / "tools", GOPROXY="http://127.0.0.1:9")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Set SHARDSCORE_KUBERAY_ARCHIVE" in r.stderr and "SHARDSCORE_CRD_DIR" in r.stderr
    assert not (tmp_path / "tools").exists()


def test_crds_already_there_for_the_pinned_release_are_kept_without_a_source(tmp_path: Path):
    release = next(line.split("=", 1)[1] for line in (ROOT / "cluster" / "versions.env").read_text().splitlines()
                   if line.startswith("KUBERAY_RELEASE="))
    (tmp_path / "kuberay-crds").mkdir()
    (tmp_path / "kuberay-crds" / "RELEASE").write_text(release + "\n")
    assert _run(tmp_path, GOPROXY="http://127.0.0.1:9").returncode == 0
    (tmp_path / "kuberay-crds" / "RELEASE").write_text("v0.0.1\n")  # another release's: fetched again
    assert _run(tmp_path, GOPROXY="http://127.0.0.1:9").returncode == 1
