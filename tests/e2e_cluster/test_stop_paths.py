"""Issue 16 §11: the three ways Kubernetes stops a run give its driver the run's --grace-period (job.gracePeriod),
so that it writes its manifest as `aborted` and releases the output's lease, and a rerun right after completes.

- `helm uninstall` of a release with its own RayCluster: helm deletes the RayJob (KubeRay's finalizer asks the
  dashboard to stop the Ray job) and the RayCluster (every pod is deleted at once).
- `kubectl delete rayjob` of a RayJob with its own cluster: the finalizer's stop, and the garbage collector deletes
  the RayCluster it owns, pods included, at the same time.
- a CronJob tick whose deadline passes: the tick deletes its RayJob on the release's long-lived cluster, and only
  the finalizer's stop reaches the Ray job.

Without the chart's stop settings the driver is SIGKILLed by Ray's job supervisor 3 s after its SIGTERM
(RAY_JOB_STOP_WAIT_TIME_S, JobSupervisor.run) or with its pod, and leaves a `running` manifest and a held lease.
Each shard lasts about 10 s (4 batches of 2.5 s), longer than those 3 s, shorter than the grace period.
"""

from __future__ import annotations

import json
import re
import time

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROW_KEY, Dataset, assert_exact, committed_shards, fullname,
                         job_condition, job_logs, log, manifest_of, mid_run, models_mount_values, raycluster_ready,
                         rayjob_finished, rayjob_succeeded, slow_model_values, utc_stamp, values_args, wait_for,
                         write_input)
from .test_faults import lease
from .test_schedules import Ticks, ray_jobs

SHARDS = 8


def run_values(s3, ns: str, data: Dataset, output: str) -> dict:
    return {"objectStore.endpoint": s3.endpoint, "job.input": data.uri, "job.output": f"s3://{ns}/{output}",
            "job.keyColumns": [ROW_KEY], "job.batchSize": 500, **slow_model_values(delay=2.5)}


def install(helm, s3, ns: str, release: str, values_file: str, data: Dataset, output: str) -> str:
    helm("install", release, str(CHART), "-n", ns,
         *values_args([CI_VALUES / values_file, E2E_VALUES / "local-cluster.yaml"], run_values(s3, ns, data, output)))
    log(f"helm install {release} ({values_file}; slow model: 10 s per shard)")
    return fullname(release)


def pods_gone(kube, ns: str, cluster: str) -> bool:
    return not kube.items("pods", ns, f"ray.io/cluster={cluster}")


def assert_stopped_in_grace(s3, ns: str, output: str, done: int) -> None:
    """The stopped run's manifest says `aborted`, keeps the shards committed before the stop, and its lease is
    released: read once the Ray job has ended (its pods gone, or Ray's status terminal), so no later write counts."""
    manifest = manifest_of(s3, ns, output)
    assert manifest is not None and manifest["status"] == "aborted", \
        f"the stopped run left no aborted manifest: {manifest and {k: manifest[k] for k in ('status', 'totals')}}"
    assert manifest["error"] == "stopped by SIGTERM", manifest["error"]
    assert manifest["totals"]["committed"] >= done, manifest["totals"]
    held = lease(s3, ns, output)
    assert held["released"], f"the stopped run did not release the output's lease: {held}"
    log(f"stopped run: {manifest['status']}, totals {manifest['totals']}; lease generation released")


def test_helm_uninstall_mid_run_aborts_in_grace_and_the_reinstall_completes_exact(kube, helm, s3, s3_namespace):
    ns = s3_namespace.name
    data = write_input(s3, ns, "input", shards=SHARDS, rows=2000)
    name = install(helm, s3, ns, "gone", "cpu-values.yaml", data, "output")
    wait_for(lambda: kube.get("raycluster", name, ns), raycluster_ready, 300, f"RayCluster {name} to be ready")
    done = mid_run(kube, s3, ns, name, "output", most=SHARDS - 3)
    helm("uninstall", "gone", "-n", ns)
    log(f"helm uninstall with {done}/{SHARDS} shards committed")
    wait_for(lambda: pods_gone(kube, ns, name) and kube.get("raycluster", name, ns) is None, bool, 240,
             f"RayCluster {name} and its pods to be gone")
    assert_stopped_in_grace(s3, ns, "output", done)
    install(helm, s3, ns, "gone", "cpu-values.yaml", data, "output")
    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"the reinstalled RayJob {name}")
    assert rayjob_succeeded(final), final["status"]
    totals = assert_exact(s3, data, "output")["totals"]
    assert totals["skipped_already_committed"] >= done, totals


def test_kubectl_delete_rayjob_mid_run_aborts_in_grace_and_the_rerun_completes_exact(kube, helm, s3, s3_namespace):
    """The RayJob brings its own cluster (ci/ephemeral-values.yaml): its deletion deletes that cluster too."""
    ns = s3_namespace.name
    data = write_input(s3, ns, "input", shards=SHARDS, rows=2000)
    name = install(helm, s3, ns, "deleted", "ephemeral-values.yaml", data, "output")
    done = mid_run(kube, s3, ns, name, "output", most=SHARDS - 3)
    old = kube.get("rayjob", name, ns)
    cluster = old["status"]["rayClusterName"]
    kube("-n", ns, "delete", "rayjob", name, "--wait=false")
    log(f"kubectl delete rayjob {name} with {done}/{SHARDS} shards committed (its RayCluster {cluster})")
    wait_for(lambda: pods_gone(kube, ns, cluster), bool, 240, f"the pods of RayCluster {cluster} to be gone")
    assert_stopped_in_grace(s3, ns, "output", done)
    wait_for(lambda: kube.get("rayjob", name, ns), lambda j: j is None, 120, f"RayJob {name} to be gone")
    kube("create", "-f", "-", input=json.dumps({"apiVersion": old["apiVersion"], "kind": "RayJob", "spec": old["spec"],
                                                "metadata": {k: old["metadata"][k] for k in ("name", "namespace")}}))
    log(f"RayJob {name} created again with the same spec")
    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"the rerun of RayJob {name}")
    assert rayjob_succeeded(final), final["status"]
    totals = assert_exact(s3, data, "output")["totals"]
    assert totals["skipped_already_committed"] >= done, totals


def test_a_tick_past_its_deadline_aborts_its_run_in_grace_and_the_next_tick_completes_exact(kube, helm, s3,
                                                                                          s3_namespace):
    """On the release's long-lived cluster: the tick deletes its RayJob at the deadline; the head stays, so Ray's
    job stop wait on the head (RAY_JOB_STOP_WAIT_TIME_S) is all that separates the SIGTERM from the SIGKILL. The
    tick for the same scheduled minute, run again with a later deadline, resumes the run folder."""
    ns = s3_namespace
    ticks = Ticks(kube, helm, s3, ns)
    # 10 s per shard (4 batches of 2.5 s), 120 s of scoring on the overlay's 2 workers: still going at the deadline,
    # LEAD s after the tick starts, however fast the driver starts (25 to 60 s seen: at most 65 s of scoring, 13
    # shards, by then), and a shard committed well before it. The next tick scores what is left.
    data = write_input(s3, ns.name, "input", shards=24, rows=2000)
    values = {**slow_model_values(delay=2.5), "job.batchSize": 500}
    lead = 90
    ticks.install("ticks", data, "unused", **models_mount_values())  # the cluster; its own CronJob stays suspended
    wait_for(lambda: kube.get("raycluster", ticks.cluster, ns.name), raycluster_ready, 300,
             f"RayCluster {ticks.cluster} to be ready")
    # The tick's deadline counts from its scheduled minute (tick.run): the current minute, and a deadline that ends
    # LEAD s from now, set by the tick's own release on the ready cluster.
    now = time.time()
    minutes = int(now // 60)
    deadline_seconds = int(now - minutes * 60) + lead
    name = ticks.install("late", data, "late", **values, **{"cronJob.deadlineSeconds": deadline_seconds})
    output = f"late/run={utc_stamp(minutes)}"
    job, rayjob = ticks.fire(name, minutes), f"{name}-{minutes}"
    running = wait_for(lambda: kube.get("rayjob", rayjob, ns.name),
                       lambda j: ((j or {}).get("status") or {}).get("jobStatus") == "RUNNING", 120,
                       f"RayJob {rayjob} to run", fail=rayjob_finished)
    # Without a committed shard the stopped run changed nothing and writes no manifest (Run._abort): the case
    # this test is about is a stop that keeps what was committed.
    done = wait_for(lambda: committed_shards(s3, ns.name, output), bool, minutes * 60 + deadline_seconds - time.time(),
                    "a shard committed before the tick's deadline")
    job_id = running["status"]["jobId"]
    wait_for(lambda: kube.get("rayjob", rayjob, ns.name), lambda j: j is None, deadline_seconds + 240,
             f"the tick to delete RayJob {rayjob} at its deadline")
    failed = wait_for(lambda: kube.get("job", job, ns.name), job_condition, 180, f"tick Job {job} to fail")
    tick_log = job_logs(kube, ns.name, job)[0]
    assert "passed the tick's deadline" in tick_log
    # The tick's log follows the run's progress, which its driver keeps on the RayJob (k8s/rayjob_report.py).
    assert re.search(rf"RayJob {rayjob}: \d+/24 shards \(", tick_log), tick_log[-3000:]
    stopped = wait_for(lambda: [j for j in ray_jobs(kube, ns.name, ticks.cluster) if j["submission_id"] == job_id],
                       lambda js: js and js[0]["status"] in ("STOPPED", "FAILED", "SUCCEEDED"), 120,
                       f"Ray job {job_id} to end")
    log(f"Ray job {job_id}: {stopped[0]['status']}; tick Job {job}: {job_condition(failed)}")
    assert_stopped_in_grace(s3, ns.name, output, done)
    # The same scheduled minute again, with a later deadline: a new Job of the same name, the same run folder.
    kube("-n", ns.name, "delete", "job", job, "--wait=true", timeout=180)
    # A deadline an hour after the scheduled minute (`--set ...=null` with --reuse-values kept the first one: seen).
    ticks.helm("upgrade", "late", str(CHART), "-n", ns.name, "--reuse-values", "--set", "cronJob.deadlineSeconds=3600")
    ticks.fire(name, minutes)
    final = wait_for(lambda: kube.get("rayjob", rayjob, ns.name), rayjob_finished, 600, f"the rerun of {rayjob}")
    assert rayjob_succeeded(final), final["status"]
    assert_exact(s3, data, output)
