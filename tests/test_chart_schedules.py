from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

import chartlib as c
from chartlib import CRONJOB, FULLNAME, IMAGE, RAYCRONJOB, entrypoint_argv, submitter_then_head_argv


def tick_output(entrypoint: str, rayjob_name: str) -> str:
    argv = submitter_then_head_argv(entrypoint, {"SHARDSCORE_TICK_JOB": rayjob_name})
    return argv[argv.index("--output") + 1]


def utc_stamp(minutes: int) -> str:
    return datetime.fromtimestamp(minutes * 60, tz=timezone.utc).strftime("%Y%m%dT%H%MZ")


def test_cronjob(rendered):
    docs = rendered["cronjob-values"]
    assert not c.of_kind(docs, "RayJob") and not c.of_kind(docs, "RayCronJob")
    cron = c.one(docs, "CronJob")
    assert cron["apiVersion"] == "batch/v1" and cron["metadata"]["name"] == f"{FULLNAME}-tick"
    spec = cron["spec"]
    assert spec["schedule"] == "30 2 * * *" and spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] == 300
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["suspend"] is False
    job = spec["jobTemplate"]["spec"]
    assert "activeDeadlineSeconds" not in job
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == f"{FULLNAME}-tick"
    assert pod["automountServiceAccountToken"] is True
    ctr = pod["containers"][0]
    # The project's own image (the one the Ray pods run), its `shardscore tick`, the chart's tick.json.
    assert ctr["image"] == IMAGE and ctr["command"] == ["shardscore", "tick", "--config", "/etc/shardscore/tick.json"]
    env = c.env_of(ctr)
    assert env["TICK_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert env["TICK_JOB_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/shardscore"]]["configMap"]["name"] == f"{FULLNAME}-tick"
    # RBAC: exactly the tick's three calls, on rayjobs, in the release namespace (the run report's Role is
    # test_chart_security.py's).
    role = next(r for r in c.of_kind(docs, "Role") if r["metadata"]["name"] == f"{FULLNAME}-tick")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "delete"]}]
    assert not c.of_kind(docs, "ClusterRole") and not c.of_kind(docs, "ClusterRoleBinding")
    binding = next(b for b in c.of_kind(docs, "RoleBinding") if b["metadata"]["name"] == f"{FULLNAME}-tick")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-tick", "namespace": c.NAMESPACE}]
    tick_sa = [sa for sa in c.of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == f"{FULLNAME}-tick"]
    assert tick_sa and tick_sa[0]["automountServiceAccountToken"] is False, "only the tick pod mounts the token"


def test_the_tick_job_fails_at_once_when_a_retry_cannot_help():
    tick = pytest.importorskip("shardscore.k8s.tick", reason="the shardscore job package is not installed (make venv)")
    job = c.one(c.render([CRONJOB]), "CronJob")["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"][0]["onExitCodes"]
    assert fail == {"containerName": "tick", "operator": "In", "values": sorted({tick.TickError.exit_code,
                                                                                  tick.EXIT_FINAL})}
    assert tick.EXIT_RETRY not in fail["values"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_the_tick_rayjob(rendered):
    docs = rendered["cronjob-values"]
    cfg = c.tick_config(docs)
    assert cfg["namePrefix"] == FULLNAME and cfg["output"] == "s3://shardscore/scheduled"
    assert cfg["argv"][cfg["argv"].index("--output") + 1] == "s3://shardscore/scheduled"
    assert cfg["wait"] is True and cfg["pollSeconds"] == 15 and cfg["deadlineSeconds"] is None
    assert "entrypoint" not in cfg["rayJob"]["spec"] and "name" not in cfg["rayJob"]["metadata"]
    job = c.tick_rayjob(docs)
    assert not c.crd_errors(job) and not c.pruned_fields(job)
    assert job["metadata"]["name"] == f"{FULLNAME}-{c.TICK_MINUTES}" and len(job["metadata"]["name"]) <= 47
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": c.TICK_JOB,
                                                   "uid": c.TICK_JOB_UID}]
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == c.RELEASE
    assert "rayClusterSpec" in job["spec"]
    # Its output is the tick's, written literally: the head gets it through both shells.
    argv = submitter_then_head_argv(job["spec"]["entrypoint"])
    assert argv[argv.index("--output") + 1] == f"s3://shardscore/scheduled/run={utc_stamp(c.TICK_MINUTES)}" == \
        "s3://shardscore/scheduled/run=20251121T1330Z"
    sub = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert "SHARDSCORE_TICK_JOB" not in c.env_of(sub)
    # A retried tick (same Job) makes the very same RayJob; the next tick another one.
    assert c.tick_rayjob(docs) == job
    assert c.tick_rayjob(docs, f"{FULLNAME}-tick-{c.TICK_MINUTES + 60}")["metadata"]["name"] == \
        f"{FULLNAME}-{c.TICK_MINUTES + 60}"


def test_cronjob_options(advertised):
    docs = c.render([CRONJOB], ["cronJob.concurrencyPolicy=Replace", "cronJob.startingDeadlineSeconds=60",
                                "cronJob.successfulJobsHistoryLimit=1", "cronJob.deadlineSeconds=3600",
                                "cronJob.waitForCompletion=false", "cronJob.pollSeconds=30", "suspend=true"])
    spec = c.one(docs, "CronJob")["spec"]
    assert spec["concurrencyPolicy"] == "Replace" and spec["startingDeadlineSeconds"] == 60
    assert spec["successfulJobsHistoryLimit"] == 1 and spec["suspend"] is True
    # The tick deletes its RayJob at the deadline; the Job's own deadline is a later backstop.
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600 + 30 + 120
    cfg = c.tick_config(docs)
    assert (cfg["deadlineSeconds"], cfg["wait"], cfg["pollSeconds"]) == (3600, False, 30)


def test_raycronjob(rendered):
    docs = rendered["raycronjob-values"]
    assert not c.of_kind(docs, "CronJob") and not c.of_kind(docs, "RayJob") and not c.of_kind(docs, "RayCluster")
    cron = c.one(docs, "RayCronJob")
    assert cron["metadata"]["name"] == FULLNAME and len(FULLNAME) <= 36
    assert cron["spec"]["schedule"] == "@hourly" and cron["spec"]["suspend"] is False
    job = cron["spec"]["jobTemplate"]
    # Its own cluster by default: KubeRay deletes nothing in clusterSelector mode, so children would pile up.
    assert "clusterSelector" not in job and job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] == 300
    assert job["submissionMode"] == "K8sJobMode"
    sub = c.env_of(job["submitterPodTemplate"]["spec"]["containers"][0])
    assert sub["SHARDSCORE_TICK_JOB"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/job-name']"
    # children are <name>-<unix minutes>; their submitter Jobs carry the same name.
    outputs = {m: tick_output(job["entrypoint"], f"{FULLNAME}-{m}") for m in (29395530, 29395590)}
    assert outputs == {29395530: "s3://shardscore/hourly/run=20251121T1330Z",
                       29395590: "s3://shardscore/hourly/run=20251121T1430Z"}
    assert outputs == {m: f"s3://shardscore/hourly/run={utc_stamp(m)}" for m in outputs}
    rest = submitter_then_head_argv(job["entrypoint"], {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-29395530"})
    assert rest[:5] == ["shardscore", "run", "--input", "s3://shardscore/input", "--output"]
    # The tick's time as the run's logical time, and the per-tick layout's pointer, as the CronJob tick passes them.
    assert rest[6:] == ["--model", "shardscore.models.dummy:load_model", "--grace-period", "20",
                        "--logical-time", "2025-11-21T13:30:00Z", "--latest-pointer", "s3://shardscore/hourly/_LATEST"]


def test_a_raycronjob_child_named_by_kuberay_1_6_gets_no_logical_time(rendered):
    """KubeRay v1.6.x names children <name>-<5 random characters> (constructRayJob): no minutes, so no logical time
    (a placeholder then fails the run with exit 2, naming it) and the run folder is run=<those characters>."""
    job = c.one(rendered["raycronjob-values"], "RayCronJob")["spec"]["jobTemplate"]
    argv = submitter_then_head_argv(job["entrypoint"], {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-x7k2p"})
    assert "--logical-time" not in argv and argv[argv.index("--output") + 1] == "s3://shardscore/hourly/run=x7k2p"


def test_tick_output_is_this_minute_for_a_fresh_tick(rendered):
    minutes = int(time.time() // 60)
    job = c.one(rendered["raycronjob-values"], "RayCronJob")["spec"]["jobTemplate"]
    assert tick_output(job["entrypoint"], f"{FULLNAME}-{minutes}").endswith(f"/run={utc_stamp(minutes)}")


def test_schedule_layouts_reach_the_tick_and_the_raycronjob():
    """scheduleLayout: the tick learns it from tick.json (tick.layout_output: where its run writes); incremental
    puts --incremental in the argv, and a RayCronJob child then writes job.output itself, not a derived folder; with
    perDate the child's own logical time fills the placeholders."""
    assert c.tick_config(c.render([CRONJOB]))["layout"] == "perTick"
    dated = c.render([CRONJOB], ["scheduleLayout=perDate", "job.input=s3://b/events/date={date}",
                                 "job.output=s3://b/scores/date={date}"])
    cfg = c.tick_config(dated)
    assert cfg["layout"] == "perDate" and cfg["output"] == "s3://b/scores/date={date}"
    assert cfg["argv"][2:6] == ["--input", "s3://b/events/date={date}", "--output", "s3://b/scores/date={date}"]
    grown = c.tick_config(c.render([CRONJOB], ["scheduleLayout=incremental"]))
    assert grown["layout"] == "incremental" and "--incremental" in grown["argv"]
    job = c.one(c.render([RAYCRONJOB], ["scheduleLayout=incremental"]), "RayCronJob")["spec"]["jobTemplate"]
    argv = submitter_then_head_argv(job["entrypoint"], {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-29395530"})
    assert argv[argv.index("--output") + 1] == "s3://shardscore/hourly" and "--incremental" in argv
    assert "--latest-pointer" not in argv
    # perDate on a RayCronJob: the child fills the placeholders itself from the logical time its name gives.
    job = c.one(c.render([RAYCRONJOB], ["scheduleLayout=perDate", "job.input=s3://b/events/date={date}",
                                        "job.output=s3://b/scores/date={date}"]), "RayCronJob")["spec"]["jobTemplate"]
    argv = submitter_then_head_argv(job["entrypoint"], {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-29395530"})
    assert argv[2:6] == ["--input", "s3://b/events/date={date}", "--output", "s3://b/scores/date={date}"]
    assert argv[argv.index("--logical-time") + 1] == "2025-11-21T13:30:00Z" and "--latest-pointer" not in argv


def test_one_shot_output_is_not_per_tick(rendered):
    argv = entrypoint_argv(c.one(rendered["cpu-values"], "RayJob"))
    assert argv[argv.index("--output") + 1] == "s3://shardscore/output"
    sub = c.one(rendered["cpu-values"], "RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert "SHARDSCORE_TICK_JOB" not in c.env_of(sub)


def test_long_release_names_fit_kuberay_limits(advertised):
    cron = c.one(advertised["long release name, raycronjob"], "RayCronJob")
    # KubeRay allows RayCronJob names of 36 (MaxRayCronJobNameLength), so that <name>-<10-digit minutes> fits 47.
    assert len(cron["metadata"]["name"]) == 36 and not c.crd_errors(cron)
    assert len(cron["metadata"]["name"]) + len(f"-{2**32}") <= 47
    docs = advertised["long release name, cronjob"]
    cronjob = c.one(docs, "CronJob")["metadata"]["name"]
    assert len(cronjob) <= 52
    job = c.tick_rayjob(docs, f"{cronjob}-{c.TICK_MINUTES}")
    assert not c.crd_errors(job), c.crd_errors(job)
    for d in advertised["long release name"]:
        assert not c.metadata_errors(d), c.metadata_errors(d)
