"""Scenario 3 of the cluster e2e (issue 11 §3.3): the ephemeral mode, a RayJob with its own cluster (rayClusterSpec).

helm/shardscore/ci/ephemeral-values.yaml renders no RayCluster of its own: the RayJob brings one, which KubeRay
makes, the job runs on, and KubeRay deletes `rayJob.ttlSecondsAfterFinished` seconds after the job finished
(`shutdownAfterJobFinishes: true`). The values' 60 s TTL is shortened to 20 s to keep the suite short; the test
checks that the cluster outlives the job by at least that TTL and is then deleted, the RayJob kept.
"""

from __future__ import annotations

from datetime import datetime

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROW_KEY, assert_exact, fullname, log, raycluster_ready,
                         rayjob_finished, rayjob_succeeded, values_args, wait_for, write_input)

TTL = 20


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_an_ephemeral_rayjob_makes_its_cluster_succeeds_and_the_cluster_is_deleted(kube, helm, s3, s3_namespace):
    ns = s3_namespace.name
    data = write_input(s3, ns, "input", shards=4, rows=3000)
    name = fullname("oneshot")
    sets = {"objectStore.endpoint": s3.endpoint, "job.input": data.uri, "job.output": f"s3://{ns}/output-ephemeral",
            "job.keyColumns": [ROW_KEY], "rayJob.ttlSecondsAfterFinished": TTL}
    helm("install", "oneshot", str(CHART), "-n", ns,
         *values_args([CI_VALUES / "ephemeral-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
    log(f"helm install oneshot: RayJob {name} with its own cluster")
    assert kube.get("raycluster", name, ns) is None, "ephemeral values rendered a standalone RayCluster"

    cluster = wait_for(lambda: (kube.get("rayjob", name, ns).get("status") or {}).get("rayClusterName"), bool, 120,
                       f"RayJob {name} to make its RayCluster")
    rc = wait_for(lambda: kube.get("raycluster", cluster, ns), raycluster_ready, 300, f"RayCluster {cluster} ready")
    assert rc["metadata"]["labels"]["ray.io/originated-from-cr-name"] == name, rc["metadata"]["labels"]
    assert [o["kind"] for o in rc["metadata"]["ownerReferences"]] == ["RayJob"], rc["metadata"]["ownerReferences"]
    assert "upgradeStrategy" not in rc["spec"]  # KubeRay refuses it on a RayJob's cluster; the chart leaves it out

    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"RayJob {name} to finish")
    assert rayjob_succeeded(final), final["status"]
    assert_exact(s3, data, "output-ephemeral")
    ended = parse(final["status"]["endTime"])

    def cluster_state():
        obj = kube.get("raycluster", cluster, ns)
        return None if obj is None else (obj["metadata"].get("deletionTimestamp") or "alive")

    wait_for(cluster_state, lambda s: s != "alive", TTL + 180, f"KubeRay to delete RayCluster {cluster} after the TTL")
    # KubeRay deletes it TTL seconds after the job's end (the API server's clock; the same host here).
    deleted = datetime.now().timestamp() if cluster_state() is None else parse(cluster_state())
    log(f"RayCluster {cluster} deleted {deleted - ended:.0f} s after the job ended (TTL {TTL} s)")
    assert deleted - ended >= TTL - 2, (deleted, ended)
    wait_for(lambda: kube.items("pods", ns, f"ray.io/cluster={cluster}"), lambda p: not p, 180,
             f"the pods of {cluster} to be gone")
    assert rayjob_succeeded(kube.get("rayjob", name, ns)), "the RayJob itself must stay (shutdownAfterJobFinishes)"
