"""Scenario 2 of the cluster e2e (issue 11 §3.2): the plain manifests of manifests/, applied with `kubectl apply`.

The files are applied as committed, in their own namespace `shardscore`, with two things the test cluster needs:

- the object store they name, http://minio.shardscore.svc:9000: a Service `minio` without selector whose
  EndpointSlice points at the S3 server on the host (kube-proxy routes it), and the Secret `shardscore-s3` they
  read the credentials from;
- the sizes of tests/e2e_cluster/values/local-cluster.yaml in place of the chart's defaults (a head of 2 CPUs and an
  autoscaler of 500m do not fit a node of 2 CPUs);
- that file's operator address (networkPolicy.operator.ipBlocks) added to the head NetworkPolicy's operator rule, as
  a user whose KubeRay operator runs out of cluster adds the API servers' addresses: this cluster enforces the
  policies, and its operator reaches the dashboard through the API server's proxy, from the host.
Only those change: the test asserts that every other field is applied exactly as manifests/ has it.

The same result as the chart's: the long-lived RayCluster becomes ready and its RayJob succeeds, the ephemeral
RayJob brings its own cluster and succeeds, and a tick of the scheduled manifest's CronJob runs its RayJob; each
output exact.
"""

from __future__ import annotations

import copy
import json
import re
import time

import pytest
import yaml

from .clusterlib import (E2E_VALUES, ROOT, Namespace, assert_exact, job_condition, job_logs, leaf_diff, log,
                         raycluster_ready, rayjob_finished, rayjob_succeeded, s3_secret, utc_stamp, wait_for,
                         write_input)

MANIFESTS = ROOT / "manifests"
NS, NAME, BUCKET = "shardscore", "shardscore", "shardscore"


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def sized(resources: dict) -> dict:
    """The chart's rule (shardscore.resources in _helpers.tpl): requests default to the limits."""
    return {"limits": dict(resources["limits"]), "requests": {**resources["limits"], **resources.get("requests", {})}}


# What fit changes: sizes, and the peers of one rule of the head's NetworkPolicy (leaf_diff names a list whose length
# changed by the list's path).
FITTED = re.compile(r"\.resources\.|^NetworkPolicy: spec\.ingress\[\d+\]\.from ")


def fit(docs: list[dict]) -> list[dict]:
    """The manifests with local-cluster.yaml's sizes and operator address; nothing else changed (the caller checks)."""
    overlay = yaml.safe_load((E2E_VALUES / "local-cluster.yaml").read_text())
    c, r = overlay["cluster"], overlay["rayJob"]
    operator_peers = [{"ipBlock": {"cidr": cidr}} for cidr in overlay["networkPolicy"]["operator"]["ipBlocks"]]

    def cluster_spec(spec: dict) -> None:
        spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"] = sized(c["head"]["resources"])
        if "autoscalerOptions" in spec:
            spec["autoscalerOptions"]["resources"] = sized(c["autoscaling"]["resources"])
        for group in spec.get("workerGroupSpecs", []):
            assert group["groupName"] == "cpu", group["groupName"]  # manifests/ has no GPU group
            group["template"]["spec"]["containers"][0]["resources"] = sized(c["cpuWorkers"]["resources"])

    def rayjob_spec(spec: dict) -> None:
        if "rayClusterSpec" in spec:
            cluster_spec(spec["rayClusterSpec"])
        if "submitterPodTemplate" in spec:
            spec["submitterPodTemplate"]["spec"]["containers"][0]["resources"] = copy.deepcopy(r["submitter"]["resources"])

    out = copy.deepcopy(docs)
    for d in out:
        if d["kind"] == "RayCluster":
            cluster_spec(d["spec"])
        elif d["kind"] == "RayJob":
            rayjob_spec(d["spec"])
        elif d["kind"] == "ConfigMap" and "tick.json" in d.get("data", {}):
            tick = json.loads(d["data"]["tick.json"])
            rayjob_spec(tick["rayJob"]["spec"])
            d["data"]["tick.json"] = json.dumps(tick, indent=2)
        elif d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-ray-head"):
            # The operator's rule: the one whose peer is the operator's namespace.
            rule = next(rule for rule in d["spec"]["ingress"] if any("namespaceSelector" in p for p in rule["from"]))
            rule["from"] += operator_peers
    return out


def changed_paths(original: list[dict], fitted: list[dict]) -> list[str]:
    paths = []
    for a, b in zip(original, fitted, strict=True):
        if a.get("kind") == "ConfigMap" and "tick.json" in a.get("data", {}):
            a, b = json.loads(a["data"]["tick.json"]), json.loads(b["data"]["tick.json"])
        paths += [f"{a.get('kind', 'tick.json')}: {p}" for p in leaf_diff(a, b)]
    return paths


def object_store(host: str, port: int) -> list[dict]:
    """minio.shardscore.svc:9000, the endpoint manifests/values/common.yaml names, served by the host's S3."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio", "namespace": NS},
         "spec": {"ports": [{"name": "s3", "port": 9000, "targetPort": port, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "minio-host", "namespace": NS, "labels": {"kubernetes.io/service-name": "minio"}},
         "addressType": "IPv4", "ports": [{"name": "s3", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [host]}]},
    ]


@pytest.fixture
def shardscore_namespace(kube, s3):
    """The namespace the manifests name. It must be this test's own: a leftover is deleted first."""
    ns = Namespace(NS, kube)
    if kube("get", "namespace", NS, check=False).returncode == 0:
        log(f"deleting a leftover namespace {NS}")
        ns.delete()
    ns.create()
    s3.bucket(BUCKET)
    kube.apply([s3_secret(NS), *object_store(s3.host, s3.port)])
    yield ns
    ns.delete()


def apply(kube, name: str) -> list[dict]:
    original = load(name)
    fitted = fit(original)
    changed = changed_paths(original, fitted)
    assert changed and all(FITTED.search(p) for p in changed), changed
    kube.apply(fitted)
    policies = [p for p in changed if p.startswith("NetworkPolicy:")]
    log(f"kubectl apply -f manifests/{name} ({len(fitted)} objects; fitted: {len(changed) - len(policies)} sizes, "
        f"{len(policies)} NetworkPolicy peer list)")
    return fitted


def test_the_plain_manifests_give_the_same_result(kube, s3, shardscore_namespace):
    data = write_input(s3, BUCKET, "input", shards=4, rows=3000)

    # The long-lived RayCluster and the RayJob on it.
    apply(kube, "raycluster.yaml")
    wait_for(lambda: kube.get("raycluster", NAME, NS), raycluster_ready, 300, f"RayCluster {NS}/{NAME} to be ready")
    apply(kube, "rayjob.yaml")
    final = wait_for(lambda: kube.get("rayjob", NAME, NS), rayjob_finished, 600, f"RayJob {NS}/{NAME} to finish")
    assert rayjob_succeeded(final), final["status"]
    assert "clusterSelector" in final["spec"]
    assert_exact(s3, data, "output")
    # --ignore-not-found: the report account's token Secret may be gone before kubectl reaches it, deleted with its
    # ServiceAccount by Kubernetes' TokensController (syncServiceAccount -> deleteTokens).
    kube("-n", NS, "delete", "-f", "-", "--wait=true", "--ignore-not-found", timeout=300,
         input=(MANIFESTS / "rayjob.yaml").read_text() + "\n---\n" + (MANIFESTS / "raycluster.yaml").read_text())
    wait_for(lambda: kube.items("pods", NS, "ray.io/cluster=shardscore"), lambda p: not p, 180,
             "the long-lived cluster's pods to be gone")

    # One run on its own cluster.
    apply(kube, "rayjob-ephemeral.yaml")
    final = wait_for(lambda: kube.get("rayjob", NAME, NS), rayjob_finished, 600, f"ephemeral RayJob {NAME} to finish")
    assert rayjob_succeeded(final), final["status"]
    assert "rayClusterSpec" in final["spec"]
    assert_exact(s3, data, "output-ephemeral")
    kube("-n", NS, "delete", "rayjob", NAME, "--wait=true", timeout=300)

    # A tick of the scheduled manifest's CronJob (its schedule is nightly: the tick is made from it, at this minute).
    apply(kube, "scheduled.yaml")
    minutes = int(time.time() // 60)
    job, rayjob = f"{NAME}-tick-{minutes}", f"{NAME}-{minutes}"
    kube("-n", NS, "create", "job", f"--from=cronjob/{NAME}-tick", job)
    log(f"created tick Job {job} from CronJob {NAME}-tick")
    final = wait_for(lambda: kube.get("rayjob", rayjob, NS), rayjob_finished, 600, f"the tick's RayJob {rayjob}")
    assert rayjob_succeeded(final), final["status"]
    done = wait_for(lambda: kube.get("job", job, NS), job_condition, 180, f"tick Job {job} to finish")
    assert job_condition(done).startswith("Complete"), (done["status"], job_logs(kube, NS, job))
    assert_exact(s3, data, f"scheduled/run={utc_stamp(minutes)}")

