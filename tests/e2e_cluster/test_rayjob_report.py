"""Issue 22 §5: a run seen from Kubernetes while it goes, and its failure read after its cluster is gone.

An ephemeral RayJob (ci/ephemeral-values.yaml) scores 9 shards with the slow model, one of which holds a row the
model refuses. While it runs, its progress annotation (shardscore.io/progress, job/shardscore/k8s/rayjob_report.py)
changes; the driver's token cannot reach anything but its own RayJob and Events. Once it failed, its Events say
so in order; KubeRay deletes its cluster (rayJob.ttlSecondsAfterFinished); then `shardscore status` on the host,
against the host's S3 server, names the failed shard, the reason and the traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from .clusterlib import (CHART, CI_VALUES, E2E_VALUES, ROOT, ROW_KEY, S3_CREDENTIALS, fullname, log, rayjob_finished,
                        rayjob_succeeded, slow_model_values, values_args, wait_for, write_input)

PREFIX = "shardscore.io/"
BAD_SHARD = "part-00008.parquet"

# Run in the head's Ray container with the reporter's token: what its Role allows and refuses (HTTP statuses).
PROBE = """
import json, sys
from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader
d = "/var/run/secrets/shardscore.io/rayjob-report"
conf = client.Configuration()
InClusterConfigLoader(d + "/token", d + "/ca.crt").load_and_set(conf)
api = client.ApiClient(conf)
objects, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
where = {"group": "ray.io", "version": "v1", "namespace": sys.argv[1], "plural": "rayjobs"}
def status(call):
    try:
        call()
        return 200
    except client.ApiException as exc:
        return exc.status
print(json.dumps({
    "get own": status(lambda: objects.get_namespaced_custom_object(name=sys.argv[2], **where)),
    "patch another": status(lambda: objects.patch_namespaced_custom_object(
        name="another", body={"metadata": {"annotations": {"x": "y"}}}, **where)),
    "delete own": status(lambda: objects.delete_namespaced_custom_object(name=sys.argv[2], **where)),
    "list pods": status(lambda: core.list_namespaced_pod(sys.argv[1])),
    "read secrets": status(lambda: core.list_namespaced_secret(sys.argv[1])),
}))
"""


def write_bad_shard(s3, bucket: str, prefix: str) -> None:
    """A shard with one passenger_count the slow model refuses (fail_from=40): its second batch raises."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = pa.array([1] * 999 + [42] + [2] * 1000, pa.int8())
    table = pa.table({ROW_KEY: pa.array(range(10**6, 10**6 + 2000), pa.int64()), "passenger_count": counts,
                      "fare_amount": pa.array([1.0] * 2000, pa.float32())})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3.client().put_object(Bucket=bucket, Key=f"{prefix}/{BAD_SHARD}", Body=buf.getvalue())


def annotations(kube, ns: str, name: str) -> dict[str, str]:
    return ((kube.get("rayjob", name, ns) or {}).get("metadata") or {}).get("annotations") or {}


def test_a_run_is_seen_on_its_rayjob_and_its_failure_is_read_after_its_cluster_is_gone(kube, helm, s3, s3_namespace):
    ns = s3_namespace.name
    write_input(s3, ns, "input", shards=8, rows=2000)
    write_bad_shard(s3, ns, "input")
    name = fullname("seen")
    model = slow_model_values(delay=1.0)
    model["job.modelArgs"]["fail_from"] = 40
    sets = {"objectStore.endpoint": s3.endpoint, "job.input": f"s3://{ns}/input", "job.output": f"s3://{ns}/output",
            "job.keyColumns": [ROW_KEY], "job.batchSize": 500, "rayJob.ttlSecondsAfterFinished": 5,
            "rayJob.backoffLimit": 0, **model}  # no retry: one run, one cluster
    helm("install", "seen", str(CHART), "-n", ns,
         *values_args([CI_VALUES / "ephemeral-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets))
    log(f"helm install seen: RayJob {name}, 9 shards of 4 s, one of which fails")

    # The progress annotation, as it changes while the run goes (patched every 10 s at most).
    seen: list[str] = []

    def progress() -> list[str]:
        now = annotations(kube, ns, name).get(f"{PREFIX}progress")
        if now and (not seen or seen[-1] != now):
            seen.append(now)
            log(f"{PREFIX}progress: {now}")
        return seen

    def mid_run(values: list[str]) -> bool:
        return any(0 < int(v.split("/", 1)[0]) < 9 for v in values)

    wait_for(progress, mid_run, 300, f"RayJob {name}'s progress annotation to show the run part done")
    cluster = kube.get("rayjob", name, ns)["status"]["rayClusterName"]
    head = kube.items("pods", ns, f"ray.io/cluster={cluster},ray.io/node-type=head")[0]["metadata"]["name"]
    rights = json.loads(kube("-n", ns, "exec", head, "-c", "ray-head", "--", "python", "-c", PROBE, ns,
                             name).stdout)
    assert rights == {"get own": 200, "patch another": 403, "delete own": 403, "list pods": 403,
                      "read secrets": 403}, rights
    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"RayJob {name} to finish")
    assert not rayjob_succeeded(final), final["status"]

    ended = annotations(kube, ns, name)
    assert ended[f"{PREFIX}state"] == "failed", ended
    assert ended[f"{PREFIX}progress"].startswith("9/9 shards (100.0%)") and ended[f"{PREFIX}progress"].endswith(
        "1 failed"), ended
    assert json.loads(ended[f"{PREFIX}progress-json"])["shards_failed"] == 1
    assert ended[f"{PREFIX}output"] == f"s3://{ns}/output"
    events = sorted((e for e in kube.events(ns) if e["involvedObject"].get("name") == name
                     and (e.get("source") or {}).get("component") == "shardscore"),
                    key=lambda e: int(e["metadata"]["resourceVersion"]))
    assert [e["reason"] for e in events] == ["ScoringStarted", "ShardFailed", "ScoringFailed"], \
        [(e["reason"], e["message"]) for e in events]
    assert "9 shards, 18,000 rows to score" in events[0]["message"], events[0]["message"]
    assert BAD_SHARD in events[1]["message"] and "passenger_count 42" in events[1]["message"], events[1]
    assert events[1]["type"] == events[2]["type"] == "Warning"
    assert "run failed: 8/9 shards committed, 1 failed" in events[2]["message"], events[2]["message"]
    log("events: " + "; ".join(f"{e['reason']}: {e['message'][:80]}" for e in events))

    # The RayCluster is gone (its pods may still be ending): status reads the output alone, over S3.
    wait_for(lambda: kube.get("raycluster", cluster, ns), lambda c: c is None, 240,
             f"KubeRay to delete RayCluster {cluster}")
    env = {**os.environ, **S3_CREDENTIALS, "PYTHONPATH": str(ROOT / "job")}
    status = subprocess.run([sys.executable, "-m", "shardscore.cli", "status", f"s3://{ns}/output", "--s3-endpoint",
                             s3.endpoint, "--logs"], env=env, capture_output=True, text=True, timeout=120)
    log(f"shardscore status (exit {status.returncode}):\n{status.stdout}")
    assert status.returncode == 1, status.stdout + status.stderr
    assert "failed" in status.stdout.splitlines()[0], status.stdout
    assert "FAILED shard" in status.stdout and BAD_SHARD in status.stdout, status.stdout
    assert "passenger_count 42 is past what this model was trained on" in status.stdout, status.stdout
    assert "Traceback (most recent call last)" in status.stdout and "slow_model.py" in status.stdout, status.stdout
