"""Scenario 4 of the cluster e2e (issue 11 §3.4) and issue 12 §2: scheduled runs, with the real schedulers.

- scheduleMode rayCronJob (helm/shardscore/ci/raycronjob-values.yaml): KubeRay's RayCronJob controller makes a
  child RayJob with its own cluster, which succeeds and writes that tick's run folder, with the tick's time as its
  logical time (KubeRay >= 1.7.0) and `_LATEST` naming it.
- scheduleMode cronJob (ci/cronjob-values.yaml): the Kubernetes CronJob controller fires a real tick Job whose pod
  runs `shardscore tick` from the chart's image under the tick's own ServiceAccount and the chart's Role (a verb the
  Role lacks fails the tick), and the tick's RayJob succeeds.
- The tick's other paths on a long-lived cluster, with the real operator writing the RayJob status: a failed run
  is deleted by the tick and run again by the Job's retry; a retried tick pod waits for the RayJob that is running
  instead of starting a second one; at the deadline the tick deletes its RayJob and KubeRay stops the Ray job.
  These tick Jobs are made from the CronJob (`kubectl create job --from=cronjob/...`, as the tick's own help says
  to run one by hand): the same pod template, account and Role as a scheduled one, at a chosen minute.

Every schedule is set to every minute (`* * * * *`) and suspended as soon as it fired once.
"""

from __future__ import annotations

import json
import time

import pytest

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROW_KEY, Dataset, assert_exact, fullname, job_condition,
                         job_logs, job_pods, log, models_mount_values, rayjob_finished, rayjob_succeeded,
                         slow_model_values, utc_stamp, values_args, wait_for, write_input)
from .conftest import make_namespace  # noqa: F401 (the module fixture)

EVERY_MINUTE = "* * * * *"

#: The run's state, which its driver keeps on its RayJob (job/shardscore/k8s/rayjob_report.py).
REPORT_STATE = "shardscore.io/state"


def common(s3, ns: str, data, output: str) -> dict:
    return {"objectStore.endpoint": s3.endpoint, "job.input": data.uri, "job.output": f"s3://{ns}/{output}",
            "job.keyColumns": [ROW_KEY], "job.modelArgs": {"payload_mb": 1}}


# --------------------------------------------------------------------------------------------- RayCronJob

def rayjob_children(kube, ns: str, name: str) -> list[dict]:
    return kube.items("rayjobs", ns, f"ray.io/cronjob-name={name}")


def child_output(child: str, parent: str) -> str:
    """The run folder of a RayCronJob child, as the chart's entrypoint derives it from the child's name: KubeRay
    v1.7.0 names children <name>-<unix minutes> (run=<UTC time>), v1.6.x <name>-<5 random characters> (run=<them>)."""
    suffix = child[len(parent) + 1:]
    return f"run={utc_stamp(int(suffix))}" if suffix.isdigit() else f"run={suffix}"


TICK = "ray.io/cronjob-scheduled-timestamp"  # utils.RayCronJobTimestampAnnotationKey: the tick a child is for


def test_a_raycronjob_child_rayjob_succeeds(kube, helm, s3, s3_namespace, target):
    ns = s3_namespace
    data = write_input(s3, ns.name, "input", shards=4, rows=3000)
    name = fullname("hourly")
    sets = {**common(s3, ns.name, data, "hourly"), "schedule": EVERY_MINUTE, "rayJob.ttlSecondsAfterFinished": 5}
    helm("install", "hourly", str(CHART), "-n", ns.name,
         *values_args([CI_VALUES / "raycronjob-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
    log(f"helm install hourly: RayCronJob {name}, every minute")
    children = wait_for(lambda: rayjob_children(kube, ns.name, name), bool, 150,
                        f"RayCronJob {name} to make its first child RayJob")
    kube("-n", ns.name, "patch", "raycronjob", name, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    child = children[0]["metadata"]["name"]
    log(f"child RayJob {child}; RayCronJob suspended")
    assert child.startswith(f"{name}-"), child
    assert "rayClusterSpec" in children[0]["spec"] and "clusterSelector" not in children[0]["spec"]
    final = wait_for(lambda: kube.get("rayjob", child, ns.name), rayjob_finished, 600,
                     f"child RayJob {child} to finish")
    assert rayjob_succeeded(final), final["status"]
    # Its driver told the run on it, as on every RayJob of the chart (k8s/rayjob_report.py).
    assert final["metadata"]["annotations"].get(REPORT_STATE) == "succeeded", final["metadata"]
    assert_exact(s3, data, f"hourly/{child_output(child, name)}")
    # The child's run got the tick's time as --logical-time from its name on v1.7.0 (the chart's
    # shardscore.tickLogicalTime): the manifest records the same instant as KubeRay's annotation. v1.6.x names
    # carry no time. Either way _LATEST names the child's folder.
    manifest = json.loads(s3.read(data.bucket, f"hourly/{child_output(child, name)}/_manifest.json"))
    expected = children[0]["metadata"]["annotations"][TICK] if target.kuberay >= (1, 7, 0) else None
    assert manifest["logical_time"] == expected, (manifest["logical_time"], children[0]["metadata"])
    assert json.loads(s3.read(data.bucket, "hourly/_LATEST"))["output"] == \
        f"s3://{data.bucket}/hourly/{child_output(child, name)}"
    cluster = final["status"]["rayClusterName"]
    wait_for(lambda: kube.get("raycluster", cluster, ns.name), lambda c: c is None, 180,
             f"the child's RayCluster {cluster} to be deleted (shutdownAfterJobFinishes, TTL 5 s)")
    ticks = sorted(c["metadata"]["annotations"][TICK] for c in rayjob_children(kube, ns.name, name))
    assert len(set(ticks)) == 1, f"a child for a later tick ran although suspended: {ticks}"
    if target.kuberay < (1, 7, 0):
        # v1.6.x's Reconcile (raycronjob_controller.go) names each child <name>-<rand.String(5)> and reads
        # LastScheduleTime from the informer's cache: the reconcile the first child's creation triggers can find it
        # stale and create a second child for the same tick (seen on the local cluster). v1.7.0 names children
        # after the tick's minute, so the second Create fails AlreadyExists.
        if len(ticks) > 1:
            log(f"KubeRay {target.kuberay_version} made {len(ticks)} children for the tick {ticks[0]}")
    else:
        assert len(ticks) == 1, f"two children for one tick: {ticks}"


# --------------------------------------------------------------------------------------------- CronJob tick

def test_the_cronjob_tick_creates_its_rayjob_which_succeeds(kube, helm, s3, s3_namespace):
    ns = s3_namespace
    data = write_input(s3, ns.name, "input", shards=4, rows=3000)
    name = fullname("nightly")
    cron = f"{name}-tick"
    sets = {**common(s3, ns.name, data, "scheduled"), "schedule": EVERY_MINUTE, "cronJob.pollSeconds": 3}
    helm("install", "nightly", str(CHART), "-n", ns.name,
         *values_args([CI_VALUES / "cronjob-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
    log(f"helm install nightly: CronJob {cron}, every minute")
    jobs = wait_for(lambda: kube.items("jobs", ns.name, ""), bool, 150, f"CronJob {cron} to fire a tick Job")
    kube("-n", ns.name, "patch", "cronjob", cron, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    job = jobs[0]["metadata"]["name"]
    minutes = int(job.rsplit("-", 1)[1])
    assert job == f"{cron}-{minutes}", job
    assert jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    rayjob = f"{name}-{minutes}"
    log(f"tick Job {job} (scheduled {utc_stamp(minutes)}); its RayJob will be {rayjob}; CronJob suspended")
    created = wait_for(lambda: kube.get("rayjob", rayjob, ns.name), bool, 180, f"the tick to create RayJob {rayjob}")
    assert [(o["kind"], o["name"]) for o in created["metadata"]["ownerReferences"]] == [("Job", job)]
    final = wait_for(lambda: kube.get("rayjob", rayjob, ns.name), rayjob_finished, 600, f"RayJob {rayjob} to finish")
    assert rayjob_succeeded(final), final["status"]
    assert final["metadata"]["annotations"].get(REPORT_STATE) == "succeeded", final["metadata"]
    done = wait_for(lambda: kube.get("job", job, ns.name), job_condition, 120, f"tick Job {job} to finish")
    assert job_condition(done) == "Complete:CompletionsReached" or job_condition(done).startswith("Complete"), \
        done["status"]
    pod = job_pods(kube, ns.name, job)[0]
    assert pod["spec"]["serviceAccountName"] == cron
    assert pod["spec"]["containers"][0]["command"][:2] == ["shardscore", "tick"]
    logs = job_logs(kube, ns.name, job)[0]
    log(logs[-1500:])
    assert f"created RayJob {rayjob}" in logs and f"RayJob {rayjob} succeeded" in logs, logs
    assert_exact(s3, data, f"scheduled/run={utc_stamp(minutes)}")
    assert json.loads(s3.read(data.bucket, "scheduled/_LATEST"))["output"] == \
        f"s3://{data.bucket}/scheduled/run={utc_stamp(minutes)}"


# --------------------------------------------------------------------------------------------- the tick's paths

class Ticks:
    """A long-lived RayCluster and, on it, one release per tick behaviour (each its own CronJob, suspended)."""

    def __init__(self, kube, helm, s3, ns):
        self.kube, self.helm, self.s3, self.namespace = kube, helm, s3, ns
        self.cluster = fullname("ticks")

    def install(self, release: str, data, output: str, **values) -> str:
        sets = {**common(self.s3, self.namespace.name, data, output), "schedule": "@daily", "suspend": True,
                "cronJob.pollSeconds": 3, **values}
        if release != "ticks":
            sets |= {"cluster.create": False, "rayJob.clusterName": self.cluster}
        self.helm("install", release, str(CHART), "-n", self.namespace.name,
                  *values_args([CI_VALUES / "cpu-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
        log(f"helm install {release}: CronJob {fullname(release)}-tick (suspended) on RayCluster {self.cluster}")
        return fullname(release)

    def fire(self, name: str, minutes: int) -> str:
        job = f"{name}-tick-{minutes}"
        self.kube("-n", self.namespace.name, "create", "job", f"--from=cronjob/{name}-tick", job)
        log(f"created tick Job {job} from CronJob {name}-tick (scheduled {utc_stamp(minutes)})")
        return job


@pytest.fixture(scope="module")
def ticks(kube, helm, s3):
    ns = make_namespace(kube, "tick-paths", s3)
    try:
        t = Ticks(kube, helm, s3, ns)
        data = write_input(s3, ns.name, "input", shards=2, rows=1000)
        t.install("ticks", data, "warmup", **models_mount_values())
        wait_for(lambda: kube.get("raycluster", t.cluster, ns.name),
                 lambda c: (c.get("status") or {}).get("state") == "ready", 300, f"RayCluster {t.cluster} to be ready")
        yield t
    finally:
        ns.delete()


def test_the_tick_deletes_a_failed_rayjob_and_its_retry_runs_it_again(ticks, kube, s3):
    """The first run fails (its input is not there yet): the operator marks the RayJob Failed, the tick deletes it
    (so that KubeRay stops its Ray job) and exits 1; the Job retries the tick, which creates the RayJob again and,
    the input being there now, it succeeds."""
    ns = ticks.namespace.name
    from .clusterlib import Dataset

    data = Dataset(ns, "input-late", {})
    name = ticks.install("late", data, "late")
    minutes = int(time.time() // 60)
    job, rayjob = ticks.fire(name, minutes), f"{name}-{minutes}"
    # The Job's count of failed pods, not the RayJob's Failed state: the tick deletes a failed RayJob within a
    # poll (3 s), so a test that waits to see it Failed can miss it, see a retry's RayJob instead, and write the
    # input after the last retry has read it (seen in CI on 2026-12-01: all three pods failed).
    wait_for(lambda: (kube.get("job", job, ns) or {}).get("status", {}).get("failed", 0), bool, 300,
             f"the first pod of tick Job {job} to fail", interval=1)
    data = write_input(s3, ns, "input-late", shards=3, rows=2000)
    second = wait_for(lambda: kube.get("rayjob", rayjob, ns), rayjob_finished, 420,
                      f"the retried tick's RayJob {rayjob} to finish")
    assert rayjob_succeeded(second), second["status"]
    done = wait_for(lambda: kube.get("job", job, ns), job_condition, 120, f"tick Job {job} to finish")
    assert job_condition(done).startswith("Complete"), done["status"]
    assert done["status"].get("failed") == 1 and done["status"].get("succeeded") == 1, done["status"]
    first_log, second_log = job_logs(kube, ns, job)
    log("first tick pod:\n" + first_log[-1200:] + "\nsecond tick pod:\n" + second_log[-800:])
    assert "input-late: no such file or directory" in first_log, first_log  # the first RayJob failed for the input
    assert f"deleting RayJob {rayjob}" in first_log and f"RayJob {rayjob} deleted" in first_log, first_log
    assert f"created RayJob {rayjob}" in second_log and f"RayJob {rayjob} succeeded" in second_log, second_log
    assert_exact(s3, data, f"late/run={utc_stamp(minutes)}")


def test_a_retried_tick_waits_for_the_running_rayjob(ticks, kube, s3):
    """The tick pod is deleted while its RayJob runs: the Job's next pod finds the RayJob (same name, owned by the
    same Job) and waits for it; one run, one Ray job, exact output."""
    ns = ticks.namespace.name
    data = write_input(s3, ns, "input-slow", shards=6, rows=1000)
    name = ticks.install("slow", data, "slow", **slow_model_values(delay=2.0), **{"job.batchSize": 500})
    minutes = int(time.time() // 60)
    job, rayjob = ticks.fire(name, minutes), f"{name}-{minutes}"
    running = wait_for(lambda: kube.get("rayjob", rayjob, ns),
                       lambda j: ((j or {}).get("status") or {}).get("jobStatus") == "RUNNING", 300,
                       f"RayJob {rayjob} to run", fail=rayjob_finished)
    pod = job_pods(kube, ns, job)[0]["metadata"]["name"]
    kube("-n", ns, "delete", "pod", pod, "--wait=false")
    log(f"deleted tick pod {pod} while RayJob {rayjob} runs (Ray job {running['status']['jobId']})")
    final = wait_for(lambda: kube.get("rayjob", rayjob, ns), rayjob_finished, 420, f"RayJob {rayjob} to finish")
    assert rayjob_succeeded(final), final["status"]
    assert final["metadata"]["uid"] == running["metadata"]["uid"], "the RayJob was made again"
    done = wait_for(lambda: kube.get("job", job, ns), job_condition, 180, f"tick Job {job} to finish")
    assert job_condition(done).startswith("Complete"), done["status"]
    log(f"tick Job {job}: {done['status']}")
    # The deleted pod counts as one failure (it was not evicted: no DisruptionTarget condition).
    assert done["status"].get("failed") == 1 and done["status"].get("succeeded") == 1, done["status"]
    retried = job_pods(kube, ns, job)
    assert [p["metadata"]["name"] for p in retried] != [pod] and len(retried) == 1, retried
    logs = job_logs(kube, ns, job)[0]
    assert f"RayJob {rayjob} exists already (a retried tick)" in logs, logs
    assert f"created RayJob {rayjob}" not in logs and f"RayJob {rayjob} succeeded" in logs, logs
    manifest = assert_exact(s3, data, f"slow/run={utc_stamp(minutes)}")
    assert manifest["totals"]["skipped_already_committed"] == 0, manifest["totals"]  # one run did all of it
    jobs = ray_jobs(kube, ns, ticks.cluster)
    assert [j["submission_id"] for j in jobs].count(final["status"]["jobId"]) == 1, jobs


def run_tick(ticks, kube, name: str, minutes: int) -> None:
    """Fire the tick of `minutes` and wait for its RayJob to succeed."""
    rayjob = f"{name}-{minutes}"
    ticks.fire(name, minutes)
    final = wait_for(lambda: kube.get("rayjob", rayjob, ticks.namespace.name), rayjob_finished, 420,
                     f"RayJob {rayjob} to finish")
    assert rayjob_succeeded(final), final["status"]


def run_records(s3, bucket: str, output: str) -> list[dict]:
    keys = sorted(k for k in s3.keys(bucket, f"{output}/_shardscore/runs") if k.endswith(".json"))
    return [json.loads(s3.read(bucket, k)) for k in keys]


def test_a_backfill_tick_scores_its_own_day_and_latest_moves_only_forward(ticks, kube, s3):
    """Today's tick, then yesterday's made by hand (`kubectl create job --from=cronjob/... <name>-<its minutes>`, the
    documented backfill): each writes its own run folder, exact; `_LATEST` names today's after both."""
    ns = ticks.namespace.name
    data = write_input(s3, ns, "input-days", shards=2, rows=1000)
    name = ticks.install("days", data, "days")
    today = int(time.time() // 60)
    for minutes in (today, today - 1440):
        run_tick(ticks, kube, name, minutes)
        assert_exact(s3, data, f"days/run={utc_stamp(minutes)}")
        pointer = json.loads(s3.read(data.bucket, "days/_LATEST"))
        log(f"after the tick of {utc_stamp(minutes)}: _LATEST {pointer}")
        assert pointer["output"] == f"s3://{data.bucket}/days/run={utc_stamp(today)}", pointer
        assert pointer["logical_time"] == time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(today * 60)), pointer


def test_an_incremental_release_scores_only_the_new_files_at_the_next_tick(ticks, kube, s3):
    """scheduleLayout incremental: two ticks into one output, a file added between them: the second tick's run
    scores that file alone (its run record says so), and the output holds every input row once."""
    ns = ticks.namespace.name
    data = write_input(s3, ns, "input-grow", shards=2, rows=1000)
    name = ticks.install("grow", data, "grown", scheduleLayout="incremental")
    first = int(time.time() // 60)
    run_tick(ticks, kube, name, first)
    late = write_input(s3, ns, "input-grow-late", shards=3, rows=1000)  # row ids 2000..2999 in its part-00002
    s3.client().copy_object(Bucket=ns, Key="input-grow/part-00002.parquet",
                            CopySource={"Bucket": ns, "Key": "input-grow-late/part-00002.parquet"})
    run_tick(ticks, kube, name, first + 1)
    grown = Dataset(ns, "input-grow", {**data.passengers,
                                       **{i: p for i, p in late.passengers.items() if i >= 2000}})
    manifest = assert_exact(s3, grown, "grown")
    assert manifest["totals"]["rows_scored_this_run"] == 1000, manifest["totals"]
    records = run_records(s3, ns, "grown")
    log(f"run records: {[(r['logical_time'], [a['shard_id'] for a in r['added']]) for r in records]}")
    assert [[a["shard_id"] for a in r["added"]] for r in records] == [
        ["part-00000.parquet", "part-00001.parquet"], ["part-00002.parquet"]]
    assert [r["logical_time"] for r in records] == [
        time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(m * 60)) for m in (first, first + 1)]


def test_a_per_date_release_writes_each_ticks_date(ticks, kube, s3):
    """scheduleLayout perDate: job.input and job.output name the date; a tick (here a backfill of two days ago)
    reads and writes its own date's folders."""
    ns = ticks.namespace.name
    minutes = int(time.time() // 60) - 2 * 1440
    day = time.strftime("%Y-%m-%d", time.gmtime(minutes * 60))
    data = write_input(s3, ns, f"events/date={day}", shards=2, rows=1000)
    name = ticks.install("dated", data, "unused", scheduleLayout="perDate",
                         **{"job.input": f"s3://{ns}/events/date={{date}}", "job.output": f"s3://{ns}/scores/date={{date}}"})
    run_tick(ticks, kube, name, minutes)
    manifest = assert_exact(s3, data, f"scores/date={day}")
    assert manifest["templates"] == {"input": f"s3://{ns}/events/date={{date}}",
                                     "output": f"s3://{ns}/scores/date={{date}}"}, manifest["templates"]


def ray_jobs(kube, ns: str, cluster: str) -> list[dict]:
    """The Jobs API's list, asked inside the head (its container has the cluster's token)."""
    head = kube.items("pods", ns, f"ray.io/cluster={cluster},ray.io/node-type=head")[0]["metadata"]["name"]
    script = ("import json, os, urllib.request\n"
              "r = urllib.request.Request('http://127.0.0.1:8265/api/jobs/', headers={'x-ray-authorization': "
              "'Bearer ' + os.environ['RAY_AUTH_TOKEN']})\n"
              "print(urllib.request.urlopen(r, timeout=20).read().decode())\n")
    return json.loads(kube("-n", ns, "exec", head, "-c", "ray-head", "--", "python", "-c", script).stdout)


def test_at_the_deadline_the_tick_deletes_its_rayjob_and_kuberay_stops_the_ray_job(ticks, kube, s3):
    """A run that would take far longer than cronJob.deadlineSeconds: at the deadline the tick deletes the RayJob;
    KubeRay's finalizer stops the Ray job (on a shared cluster nothing else would), and the tick fails for good
    (exit 3: the Job's podFailurePolicy fails it at once)."""
    ns = ticks.namespace.name
    data = write_input(s3, ns, "input-stuck", shards=2, rows=1000)
    # The current minute, and a deadline 50 s from now: time for the run to start, then to pass it.
    now = time.time()
    minutes = int(now // 60)
    deadline_seconds = int(now - minutes * 60) + 50
    name = ticks.install("stuck", data, "stuck", **slow_model_values(delay=600.0),
                         **{"cronJob.deadlineSeconds": deadline_seconds})
    job, rayjob = ticks.fire(name, minutes), f"{name}-{minutes}"
    log(f"deadline at {time.strftime('%H:%M:%S', time.localtime(minutes * 60 + deadline_seconds))}")
    running = wait_for(lambda: kube.get("rayjob", rayjob, ns),
                       lambda j: ((j or {}).get("status") or {}).get("jobStatus") == "RUNNING", 120,
                       f"RayJob {rayjob} to run", fail=rayjob_finished)
    job_id = running["status"]["jobId"]
    wait_for(lambda: kube.get("rayjob", rayjob, ns), lambda j: j is None, deadline_seconds + 240,
             f"the tick to delete RayJob {rayjob} at its deadline")
    done = wait_for(lambda: kube.get("job", job, ns), job_condition, 180, f"tick Job {job} to fail")
    assert job_condition(done) == "Failed:PodFailurePolicy", done["status"]
    logs = job_logs(kube, ns, job)
    assert len(logs) == 1, "the tick was retried after its deadline"
    assert "passed the tick's deadline" in logs[0] and f"RayJob {rayjob} deleted" in logs[0], logs[0]
    stopped = wait_for(lambda: [j for j in ray_jobs(kube, ns, ticks.cluster) if j["submission_id"] == job_id],
                       lambda js: js and js[0]["status"] in ("STOPPED", "FAILED", "SUCCEEDED"), 120,
                       f"Ray job {job_id} to end")
    assert stopped[0]["status"] == "STOPPED", stopped
    log(f"Ray job {job_id}: {stopped[0]['status']} ({stopped[0].get('message')})")
