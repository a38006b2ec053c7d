"""The Ray pods' preStop hook (shardscore.podstop), against the test cluster's real Jobs API: on the head it stops
the running jobs (the driver gets SIGTERM) and returns when they have ended; on a worker it waits without stopping
them; with no dashboard to ask it returns at once. tests/e2e_cluster/test_stop_paths.py runs it in the real pods."""

from __future__ import annotations

import sys
import uuid

import pytest

from shardscore import podstop
from support import free_port, wait_for

pytestmark = [pytest.mark.ray]


@pytest.fixture
def cluster(monkeypatch, ray_cluster):
    """The hook runs in a Ray container, where KubeRay puts the cluster's token into the env: so here."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, ray_cluster.env[name])
    return ray_cluster

DRIVER = ("import signal, sys, time\n"
          "def stop(*_):\n"
          "    print('driver: SIGTERM received,', 'writing the manifest', flush=True)\n"
          "    time.sleep(1)\n"
          "    sys.exit(3)\n"
          "signal.signal(signal.SIGTERM, stop)\n"
          "print('driver:', 'running', flush=True)\n"
          "time.sleep(600)\n")


def submit(ray_cluster) -> str:
    job_id = f"podstop-{uuid.uuid4().hex[:8]}"
    ray_cluster.ray("job", "submit", "--address", ray_cluster.dashboard, "--no-wait", "--submission-id", job_id,
                    "--", sys.executable, "-c", DRIVER)
    wait_for(lambda: "driver: running" in logs(ray_cluster, job_id), 120, f"job {job_id} to run", interval=0.5)
    return job_id


def logs(ray_cluster, job_id: str) -> str:
    return ray_cluster.ray("job", "logs", "--address", ray_cluster.dashboard, job_id, check=False).stdout


def status(job_id: str, ray_cluster) -> str:
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(ray_cluster.dashboard).get_job_info(job_id)
    return f"{info.status}: {info.message}"


def test_the_heads_hook_stops_the_running_job_with_sigterm_and_returns_when_it_ended(cluster):
    job_id = submit(cluster)
    podstop.drain(cluster.dashboard, stop_jobs=True, timeout=60)
    assert status(job_id, cluster).startswith("STOPPED")
    assert "driver: SIGTERM received, writing the manifest" in logs(cluster, job_id)


def test_a_workers_hook_waits_for_the_running_job_without_stopping_it(cluster, capsys):
    job_id = submit(cluster)
    try:
        podstop.drain(cluster.dashboard, stop_jobs=False, timeout=3, poll=0.5)
        assert f"jobs still unfinished after 3 s: ['{job_id}']" in capsys.readouterr().err
        assert status(job_id, cluster).startswith("RUNNING")
    finally:
        podstop.drain(cluster.dashboard, stop_jobs=True, timeout=60)
    assert status(job_id, cluster).startswith("STOPPED")


def test_the_hook_returns_at_once_when_no_dashboard_answers(capsys):
    address = f"http://127.0.0.1:{free_port()}"
    podstop.drain(address, stop_jobs=True, timeout=60)
    assert f"cannot ask the dashboard at {address}" in capsys.readouterr().err
