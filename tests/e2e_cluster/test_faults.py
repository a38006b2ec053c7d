"""Scenario 5 of the cluster e2e (issue 11 §3.5): pods deleted in the middle of a run, as the real operator and
Ray handle it. The run uses tests/models/slow_model.py (mounted from a ConfigMap into the Ray pods) so that it
lasts long enough to be interrupted; the pods are deleted once some shards are committed and others are not.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROW_KEY, assert_exact, fullname, job_logs, log, manifest_of,
                         mid_run, raycluster_ready, rayjob_finished, rayjob_status, rayjob_succeeded, rerun,
                         slow_model_values, values_args, wait_for, workers_deleted_mid_run, write_input)

SHARDS = 10


def install(helm, s3, ns: str, release: str, data, output: str, values_file, **extra) -> str:
    sets = {"objectStore.endpoint": s3.endpoint, "job.input": data.uri, "job.output": f"s3://{ns}/{output}",
            "job.keyColumns": [ROW_KEY], "job.batchSize": 500, **slow_model_values(delay=1.5), **extra}
    helm("install", release, str(CHART), "-n", ns,
         *values_args([CI_VALUES / values_file, E2E_VALUES / "local-cluster.yaml"], sets))
    log(f"helm install {release} ({values_file}, slow model: 1.5 s per batch of 500 rows)")
    return fullname(release)


def new_head_ready(kube, ns: str, cluster: str, old_head: str) -> bool:
    """A head pod of `cluster` other than `old_head` has condition Ready: the head Service resolves to it."""
    heads = kube.items("pods", ns, f"ray.io/cluster={cluster},ray.io/node-type=head")
    return any(p["metadata"]["name"] != old_head and any(
        c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
        for p in heads)


def test_a_worker_pod_deleted_mid_run_the_run_still_completes_exact(kube, helm, s3, s3_namespace):
    """Workers killed mid-run (a node that fails, a preemption): deleted with 1 s of grace, since a plain delete now
    drains them (the chart's preStop hook keeps a worker serving while a job runs, up to Ray's job stop wait, and a
    short run then finishes on them: seen in CI). Ray retries their shards on the workers KubeRay starts anew."""
    ns = s3_namespace.name
    data = write_input(s3, ns, "input", shards=SHARDS, rows=2000)
    name = install(helm, s3, ns, "workers", data, "output", "cpu-values.yaml")
    workers = workers_deleted_mid_run(kube, s3, ns, name, "output")
    manifest = assert_exact(s3, data, "output")
    after = {s["worker"]["hostname"] for s in manifest["shards"]}
    assert after - set(workers), f"no shard was scored by a worker started after the deletion: {after}"
    log(f"shards scored by {sorted(after)}; the deleted workers were {workers}")


def lease(s3, bucket: str, output: str) -> dict:
    """The output's current lease record (the highest generation)."""
    files = sorted((k for k in s3.keys(bucket, f"{output}/_shardscore/lease") if k.endswith(".json")),
                   key=lambda k: int(k.rsplit("/", 1)[1].split(".")[0]))
    return json.loads(s3.read(bucket, files[-1]))


def unschedulable(kube, ns: str, cluster: str, group: str) -> list[str]:
    """The pods of a worker group that the scheduler found no room for."""
    return [p["metadata"]["name"] for p in kube.items("pods", ns, f"ray.io/cluster={cluster},ray.io/group={group}")
            if any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                   for c in (p.get("status") or {}).get("conditions") or [])]


@pytest.fixture
def head_priority(kube, s3_namespace):
    """A PriorityClass above the workers' (which have none: priority 0), as docs/kubernetes.md advises for a
    cluster that can fill up. Cluster-scoped, so named after the test's namespace and deleted after it."""
    name = f"{s3_namespace.name}-head"
    kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                "value": 1000, "description": "shardscore e2e: a Ray head before its workers"})
    yield name
    kube("delete", "priorityclass", name, "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.whole_cluster  # its requests fill the CPU node, and its head's priority preempts what is there
def test_the_head_pod_deleted_mid_run_the_rerun_completes_exact_without_duplicates(kube, helm, s3, s3_namespace,
                                                                                    head_priority):
    """The head (GCS, dashboard and the run's driver) dies mid-run: deleted with a grace period of 1 s, as a node
    failure ends it (a plain delete gives the driver its --grace-period through the chart's preStop hook, and the
    run ends `aborted`: test_stop_paths.py). KubeRay makes a new head; the Ray job is gone with the old one. The run
    resumes: by the RayJob's own path when its submitter's retry finds the new head, else by a rerun of the RayJob
    (on an existing cluster KubeRay does not retry: backoffLimit is refused there) once the killed driver's lease
    has expired. Either way every shard committed before the kill is kept, and no row is written twice.

    The CPU node is full when the head dies (requests that fill it: the head and two workers, two more workers
    wait): the new head and those workers race for the room the old head leaves, and the
    autoscaler that could remove them died with the head. Seen in CI on 2026-12-01: a worker won and the new head
    stayed Pending. With the head's PriorityClass the scheduler preempts a worker for it (its DefaultPreemption;
    seen in every run that logged it)."""
    ns = s3_namespace.name
    shards = 16
    rows = 2000  # 6 s a shard (4 batches of 1.5 s): mid-run at the kill, and less left to resume after it
    data = write_input(s3, ns, "input", shards=shards, rows=rows)
    # The head's pod (700m and its autoscaler's 200m) and two workers of 500m: 1900m of the node's 2000m. The
    # overlay's requests are lower and its limits higher (its comment says why); memory as the overlay's limits.
    small = yaml.safe_load((E2E_VALUES / "local-cluster.yaml").read_text())["cluster"]
    chart_requests = {f"cluster.{part}.resources.requests": {**small[part]["resources"]["limits"], "cpu": cpu}
                      for part, cpu in (("head", "700m"), ("autoscaling", "200m"), ("cpuWorkers", "500m"))}
    # One task per shard, all submitted at once: the autoscaler asks for maxReplicas (4) workers at once, of which
    # the node holds two, before the run is half done (a run's own bound grows only as workers come).
    name = install(helm, s3, ns, "head", data, "output", "cpu-values.yaml", **chart_requests,
                   **{"cluster.head.priorityClassName": head_priority, "job.maxInFlight": shards,
                      "job.maxShardsPerTask": 1, "cluster.cpuWorkers.maxReplicas": 4})
    wait_for(lambda: kube.get("raycluster", name, ns), raycluster_ready, 300, f"RayCluster {name} to be ready")
    waiting = wait_for(lambda: unschedulable(kube, ns, name, "cpu"), bool, 120,
                       "a CPU worker the full node has no room for")
    done = mid_run(kube, s3, ns, name, "output", most=shards // 2)
    head = kube.items("pods", ns, f"ray.io/cluster={name},ray.io/node-type=head")[0]["metadata"]["name"]
    kube("-n", ns, "delete", "pod", head, "--grace-period=1", "--wait=false")
    killed_at = time.time()
    log(f"deleted head pod {head} with {done}/{shards} shards committed; unschedulable CPU workers: {waiting}")
    first = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"RayJob {name} to finish")
    message = first["status"].get("message", "")
    log(f"RayJob {name}: {rayjob_status(first)}: {message[:200]} ... {message[-700:]}")
    after = manifest_of(s3, ns, "output")
    # A success here is the RayJob's own path: its submitter Job (backoffLimit 2, KubeRay's createNewK8sJob in
    # rayjob_controller.go) retried the submission on the new head, seen when that head was back within its
    # retries; the manifest is then a later driver's, not the killed one's.
    assert after is None or after["status"] != "succeeded" or after["started_at"] > killed_at, \
        f"the run finished before the head was killed: {after}"
    if not rayjob_succeeded(first):
        held = lease(s3, ns, "output")
        assert not held["released"], held  # the driver was killed: it never released the output
        wait_for(lambda: time.time() - lease(s3, ns, "output")["heartbeat_at"], lambda age: age > held["ttl"] + 2,
                 held["ttl"] + 120, f"the killed run's lease ({held['host']}) to expire ({held['ttl']:.0f} s)")
        # Not the RayCluster's state: it can still read `ready` from before the kill while the new head starts
        # (seen here), and a rerun's submitter then fails to resolve the head Service, which is headless and has
        # no address until the new head pod is Ready.
        wait_for(lambda: new_head_ready(kube, ns, name, head), bool, 300, f"a new head of {name} to be Ready")
        rerun(kube, ns, name)
        final = wait_for(lambda: kube.get("rayjob", name, ns), lambda j: rayjob_finished(j) and
                         j["metadata"]["uid"] != first["metadata"]["uid"], 600, f"the rerun of RayJob {name}")
        assert rayjob_succeeded(final), final["status"]
    preempted = [f"{e['involvedObject']['name']}: {e.get('message', '')}" for e in kube.events(ns)
                 if e.get("reason") == "Preempted"]
    heads = kube.items("pods", ns, f"ray.io/cluster={name},ray.io/node-type=head")
    assert [p["spec"].get("priority") for p in heads] == [1000], [p["metadata"]["name"] for p in heads]
    submitters = job_logs(kube, ns, name)
    log(f"resumed by {'the submitter Job' if rayjob_succeeded(first) else 'a rerun'} ({len(submitters)} submitter "
        f"pods); pods preempted for the new head: {preempted or 'none (the scheduler took it first)'}")
    assert "took over the output's lease" in submitters[-1], submitters[-1][-3000:]
    manifest = assert_exact(s3, data, "output")
    totals = manifest["totals"]
    log(f"after the rerun: {totals}")
    assert totals["committed"] == shards and totals["skipped_already_committed"] >= done, totals
    assert totals["rows_scored_this_run"] == len(data) - rows * totals["skipped_already_committed"], totals
