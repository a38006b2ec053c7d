from __future__ import annotations

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
