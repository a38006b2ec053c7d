from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

import chartlib as c
from chartlib import CPU, CRONJOB, EPHEMERAL, clusters, entrypoint_argv


@pytest.mark.parametrize("grace,stop_wait", [(None, 35), ("7.5", 23), ("0", 15), ("600", 615)])
@pytest.mark.parametrize("values", [CPU, EPHEMERAL, CRONJOB], ids=lambda p: p.stem)
def test_every_ray_pod_outlasts_the_runs_grace_period_by_the_derived_stop_wait(values, grace, stop_wait):
    """One value, job.gracePeriod, sets the run's --grace-period, Ray's job stop wait on the head (JobSupervisor.run
    SIGKILLs the driver after RAY_JOB_STOP_WAIT_TIME_S, default 3 s) and every Ray pod's termination grace, during
    which the preStop hook stops the Ray jobs (head) or waits for them (workers)."""
    docs = c.render([values], [f"job.gracePeriod={grace}"] if grace else [])
    words = entrypoint_argv(c.tick_rayjob(docs) if values == CRONJOB else c.one(docs, "RayJob"))
    assert words[words.index("--grace-period") + 1] == (grace or "20"), words
    specs = clusters(docs)
    assert specs
    for spec in specs:
        for group, tmpl in c.pod_templates(spec):
            head = group == "head"
            container = tmpl["spec"]["containers"][0]
            assert tmpl["spec"]["terminationGracePeriodSeconds"] == stop_wait + 15, group
            hook = container["lifecycle"]["preStop"]["exec"]["command"]
            assert hook == ["python", "-m", "shardscore.k8s.podstop", "--container-log",
                            *(["--stop-jobs", "--timeout", str(stop_wait + 15)] if head else
                              ["--timeout", str(stop_wait)])], (group, hook)
            env = c.env_of(container)
            # The hook drained the pod: Ray's own drain on SIGTERM would wait 30 s for a GCS gone with the head.
            assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]["value"] == "0", group
            if head:
                assert env["RAY_JOB_STOP_WAIT_TIME_S"]["value"] == str(stop_wait), group
            else:
                assert "RAY_JOB_STOP_WAIT_TIME_S" not in env, group


@pytest.mark.parametrize("sets", [["extraEnv[0].name=RAY_JOB_STOP_WAIT_TIME_S", "extraEnv[0].value=3"],
                                  ["cluster.head.env[0].name=RAY_JOB_STOP_WAIT_TIME_S", "cluster.head.env[0].value=3"]])
def test_the_job_stop_wait_is_refused_beside_the_grace_period(sets):
    err = c.render_error([CPU], sets)
    assert "RAY_JOB_STOP_WAIT_TIME_S" in err and "job.gracePeriod" in err, err


def test_the_grace_period_takes_seconds_from_0_to_3600():
    for grace in ("0", "2.5", "3600"):
        assert c.render([CPU], [f"job.gracePeriod={grace}"])
    for grace in ("-1", "3601", "soon"):
        assert "gracePeriod" in c.render_error([CPU], [f"job.gracePeriod={grace}"]), grace


def _as_pid_1(args: str) -> int | None:
    """Runs `/bin/bash -c -- args` (the autoscaler container's command, BuildAutoscalerContainer in KubeRay's
    common/pod.go, v1.7.0) as PID 1 of a new PID namespace, with KubeRay's start command standing for a process
    that, like Ray's autoscaler, sets no SIGTERM handler; sends PID 1 SIGTERM as the kubelet does. Returns its exit
    status, or None when it is still running 5 s later."""
    env = {**os.environ, "KUBERAY_GEN_AUTOSCALER_START_CMD": "sleep 60"}
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "/bin/bash", "-c", "--", args], env=env)
    try:
        deadline = time.monotonic() + 10
        while not (pid_1 := subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                           text=True).stdout.split()):
            assert proc.poll() is None and time.monotonic() < deadline, "unshare started no process"
            time.sleep(0.05)
        time.sleep(0.5)  # bash has set its trap and started the command
        os.kill(int(pid_1[0]), signal.SIGTERM)
        return proc.wait(5)
    except subprocess.TimeoutExpired:
        return None
    finally:
        proc.kill()
        proc.wait()


def test_a_deleted_head_pods_autoscaler_ends_at_sigterm():
    """The kubelet's SIGTERM reaches a container's PID 1 only where it set a handler (pid_namespaces(7)). KubeRay's
    command makes Ray's autoscaler PID 1 without one, so every deleted head pod stayed for its whole grace period
    (50 s by default); the chart's args keep bash as PID 1 with a TERM trap."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--pid", "--fork", "true"]).returncode != 0:
        pytest.skip("needs unshare(1) with the right to make a PID namespace (root, or CAP_SYS_ADMIN)")
    args = c.one(c.render([EPHEMERAL]), "RayJob")["spec"]["rayClusterSpec"]["autoscalerOptions"]["args"]
    assert _as_pid_1(" ".join(args)) == 0
    assert _as_pid_1("$KUBERAY_GEN_AUTOSCALER_START_CMD") is None  # KubeRay's own args: SIGTERM unheard
