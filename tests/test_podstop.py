"""The Ray pods' preStop hook (shardscore.k8s.podstop), against the test cluster's real Jobs API: on the head it stops
the running jobs (the driver gets SIGTERM) and returns when they have ended; on a worker it waits without stopping
them; with no dashboard to ask it returns at once. tests/e2e_cluster/test_stop_paths.py runs it in the real pods."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from support import base_env, free_port, wait_for

pytestmark = [pytest.mark.ray]


def drain(address: str, stop_jobs: bool, timeout: float, env: dict[str, str], poll: float = 1.0) -> str:
    """podstop.drain in a process of its own, as the pod runs it, with the env KubeRay gives a Ray container (the
    cluster's token): Ray reads RAY_AUTH_MODE once per process, so the test process's own Ray state must not decide
    it. Not podstop.main, whose `ray stop` would stop every Ray process of this machine. Returns its stderr."""
    code = f"from shardscore.k8s import podstop; podstop.drain({address!r}, {stop_jobs}, {timeout}, poll={poll})"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout + 60)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr

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
    """The job's status as `ray job status` words it, lower case ("job '...' was stopped", "... is running")."""
    proc = ray_cluster.ray("job", "status", "--address", ray_cluster.dashboard, job_id)
    return (proc.stdout + proc.stderr).lower()


def test_the_heads_hook_stops_the_running_job_with_sigterm_and_returns_when_it_ended(ray_cluster):
    job_id = submit(ray_cluster)
    drain(ray_cluster.dashboard, True, 60, ray_cluster.env)
    assert "stopped" in status(job_id, ray_cluster)
    assert "driver: SIGTERM received, writing the manifest" in logs(ray_cluster, job_id)


def test_a_workers_hook_waits_for_the_running_job_without_stopping_it(ray_cluster):
    """With RAY_ADDRESS naming a GCS that does not answer, as KubeRay's on a worker whose head is going away: the
    hook asks the dashboard it is given, not the GCS (which would wait out Ray's GCS timeout, then give up)."""
    job_id = submit(ray_cluster)
    try:
        gone = {**ray_cluster.env, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
        err = drain(ray_cluster.dashboard, False, 3, gone, poll=0.5)
        assert f"jobs still unfinished after 3 s: ['{job_id}']" in err
        assert "running" in status(job_id, ray_cluster)
    finally:
        drain(ray_cluster.dashboard, True, 60, ray_cluster.env)
    assert "stopped" in status(job_id, ray_cluster)


def test_the_hook_returns_at_once_when_no_dashboard_answers():
    address = f"http://127.0.0.1:{free_port()}"
    err = drain(address, True, 60, {**base_env(), "RAY_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert f"cannot ask the dashboard at {address} (ConnectionError" in err, err
