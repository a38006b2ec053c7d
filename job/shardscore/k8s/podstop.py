"""The preStop hook of the chart's Ray pods: a Ray pod that Kubernetes deletes (`helm uninstall`, `kubectl delete
rayjob`, a tick's deadline, a drain) keeps Ray running until the cluster's Ray jobs have stopped, so that a run's
driver gets its --grace-period, writes its `aborted` manifest and releases its lease.

Why a hook: KubeRay runs the Ray container as `/bin/bash -c -- "ulimit ...; ray start ... --block"` (BuildPod in
common/pod.go, GetContainerCommand in utils/util.go; v1.6.2 and v1.7.0). bash is the container's PID 1 and sets no
SIGTERM handler, so the kubelet's SIGTERM is dropped (pid_namespaces(7)): no process of the pod hears of the deletion
until the SIGKILL at the end of terminationGracePeriodSeconds, and the driver, a child of Ray's job supervisor on the
head, dies with it. When the RayJob is deleted, KubeRay's finalizer (RayJobReconciler.Reconcile) asks the dashboard
to stop the job and the garbage collector deletes the RayCluster, all pods included, at the same time.

On the head the hook asks Ray to stop every unfinished job (JobManager.stop_job: JobSupervisor.run sends the driver
SIGTERM and SIGKILL only after RAY_JOB_STOP_WAIT_TIME_S, which the chart sets above --grace-period); on a worker it
only waits (at most Ray's job stop wait: a worker deleted alone serves the run meanwhile), so that the shards in
flight there can finish. Then it runs `ray stop`, so that the pod ends when the
jobs have, not at the end of its grace period.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any, TextIO


_out: TextIO | None = None  # the container's log when --container-log, else sys.stderr


def log(message: str) -> None:
    print(f"shardscore podstop: {message}", file=_out or sys.stderr, flush=True)


def container_log() -> TextIO:
    """The container's log, PID 1's stdout (the kubelet keeps a preStop hook's own output only when it fails), or
    stderr where that cannot be opened."""
    try:
        return open("/proc/1/fd/1", "w", buffering=1)  # noqa: SIM115 - open for the life of the hook
    except OSError:
        return sys.stderr


def unfinished(client: Any) -> list[str]:
    """Submission ids of the cluster's jobs that are not in a terminal state (PENDING, RUNNING)."""
    return [job.submission_id for job in client.list_jobs() if job.submission_id and not job.status.is_terminal()]


def drain(address: str, stop_jobs: bool, timeout: float, poll: float = 1.0) -> None:
    """Stop (on the head) and wait for the unfinished jobs of the cluster at `address`, at most `timeout` seconds.
    A dashboard that cannot be reached (the head already gone, or not up yet) means there is nothing to wait for."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    # get_address_for_submission_client (ray/dashboard/utils.py) lets RAY_ADDRESS override the address given, and
    # KubeRay sets it in every Ray container to the head's GCS (setContainerEnvVars, common/pod.go): the client would
    # look the dashboard up in the GCS instead, which on a worker whose head is going away waits out Ray's GCS
    # timeout (40 s seen, the pod's whole grace) rather than failing at once. The hook asks the dashboard it names.
    os.environ.pop("RAY_ADDRESS", None)
    try:
        client = JobSubmissionClient(address)  # token auth from RAY_AUTH_MODE/RAY_AUTH_TOKEN, as KubeRay sets them
        jobs = unfinished(client)
        if stop_jobs:
            for job in jobs:
                log(f"stopping Ray job {job}: its driver gets SIGTERM")
                client.stop_job(job)
        while jobs and time.monotonic() < deadline:
            time.sleep(poll)
            jobs = unfinished(client)
    except Exception as exc:  # noqa: BLE001 - a head that is gone has no job left; the hook must end either way
        log(f"cannot ask the dashboard at {address} ({type(exc).__name__}: {exc}): not waiting for its jobs")
        return
    log(f"jobs still unfinished after {timeout:g} s: {jobs}" if jobs else "no Ray job is running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shardscore.k8s.podstop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stop-jobs", action="store_true", help="stop the jobs (the head's hook)")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait at most")
    parser.add_argument("--container-log", action="store_true", help="write to the container's log (PID 1's stdout)")
    args = parser.parse_args(argv)
    global _out
    _out = container_log() if args.container_log else None
    # On the head, its own dashboard; on a worker, the head Service, which KubeRay's setContainerEnvVars puts in
    # FQ_RAY_IP (headless, with PublishNotReadyAddresses: it still resolves while the head terminates).
    host = "127.0.0.1" if args.stop_jobs else os.environ.get("FQ_RAY_IP", "127.0.0.1")
    drain(f"http://{host}:8265", args.stop_jobs, args.timeout)
    log("ray stop")
    subprocess.run(["ray", "stop"], check=False, stdout=_out, stderr=_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
