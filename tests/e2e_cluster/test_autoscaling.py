"""A run on a long-lived cluster that starts small grows its worker group (session.InFlightBound): the tasks a
run keeps queued are the demand Ray's autoscaler sees, so the bound must follow the cluster as it grows. With a
bound fixed at the start (twice the slots then) a run that starts on one worker was held to two, of the group's
four (seen in the head-fault test, which could not fill the node without --max-in-flight).
"""

from __future__ import annotations

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROW_KEY, assert_exact, fullname, log, raycluster_ready,
                         rayjob_finished, rayjob_succeeded, slow_model_values, values_args, wait_for, write_input)


def test_a_run_that_starts_on_one_worker_grows_the_group_towards_max_replicas(kube, helm, s3, s3_namespace):
    ns = s3_namespace.name
    data = write_input(s3, ns, "input", shards=24, rows=3000)
    # One task per shard (9 s each with the slow model), as big shards are anyway (a bundle holds 131072 rows): small
    # shards are bundled at the start into 4 tasks per slot, and 4 tasks would end before new workers came.
    sets = {"objectStore.endpoint": s3.endpoint, "job.input": data.uri, "job.output": f"s3://{ns}/output",
            "job.keyColumns": [ROW_KEY], "job.batchSize": 500, **slow_model_values(delay=1.5),
            "job.maxShardsPerTask": 1, "cluster.cpuWorkers.replicas": 1, "cluster.cpuWorkers.maxReplicas": 4}
    helm("install", "grow", str(CHART), "-n", ns,
         *values_args([CI_VALUES / "cpu-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
    name = fullname("grow")
    cluster = wait_for(lambda: kube.get("raycluster", name, ns), raycluster_ready, 300, f"RayCluster {name} to be ready")
    at_start = cluster["status"].get("availableWorkerReplicas", cluster["status"].get("readyWorkerReplicas"))
    log(f"RayCluster {name} ready with {at_start} CPU worker(s); the run's default bound is twice its slots")
    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"RayJob {name} to finish")
    assert rayjob_succeeded(final), final["status"]
    manifest = assert_exact(s3, data, "output")
    workers = sorted({s["worker"]["hostname"] for s in manifest["shards"]})
    log(f"shards scored by {len(workers)} worker pods: {workers}")
    assert at_start == 1, cluster["status"]
    assert len(workers) >= 3, f"the run never asked for more than twice the one worker it started on: {workers}"
