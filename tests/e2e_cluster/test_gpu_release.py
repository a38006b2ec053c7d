"""Scenario 1 of the cluster e2e (issue 11 §3.1) and the defaults of issue 12 §3 on the running pods.

`helm install` of helm/shardscore/ci/gpu-values.yaml (with tests/e2e_cluster/values/local-cluster.yaml, the sizes
2-CPU nodes hold) brings up the long-lived RayCluster and its RayJob through the real KubeRay operator. One install
is shared by the tests of this module, each checking one behaviour of it; the last one upgrades it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import yaml

from .clusterlib import (CHART, CI_VALUES, CPU_POOL, E2E_VALUES, GPU_POOL, ROW_KEY, Dataset, Namespace, appversion,
                         assert_exact, fullname, image, log, manifest_of, raycluster_ready, rayjob_finished,
                         rayjob_status, rayjob_succeeded, rerun, values_args, wait_for, write_input)
from .conftest import make_namespace

RELEASE = "gpu"
NAME = fullname(RELEASE)
# The GPU group's own image. The CUDA build that ci/gpu-values.yaml names (<version>-cu128) is not on the nodes and
# cannot be pulled; shardscore:<version>-none is there, under another name than the CPU pods' shardscore:<version>,
# which is all this check needs: the GPU pods run the GPU group's image, the others the chart's.
GPU_IMAGE_TAG = f"{appversion()}-none"


@dataclass
class Install:
    namespace: Namespace
    data: Dataset
    output: str
    rayjob: dict = field(default_factory=dict)
    pods_seen: dict[str, dict] = field(default_factory=dict)  # every Ray pod seen while the run went on

    def watch_pods(self, kube) -> None:
        for pod in kube.items("pods", self.namespace.name, f"ray.io/cluster={NAME}"):
            self.pods_seen.setdefault(pod["metadata"]["name"], {}).update(
                group=pod["metadata"]["labels"].get("ray.io/group"), node=pod["spec"].get("nodeName"),
                phase=pod["status"].get("phase"), images={c["name"]: c["image"] for c in pod["spec"]["containers"]})


def install_values(ns: str, s3, data: Dataset, **extra) -> list[str]:
    sets = {
        "objectStore.endpoint": s3.endpoint,
        "job.input": data.uri,
        "job.output": f"s3://{ns}/output",
        # The GPU values' torch model reads weights from a volume (a PVC) and needs torch with CUDA; the image on
        # the nodes has no torch (TORCH_VARIANT=none). The dummy model runs the same actors, one GPU each.
        "job.model": "shardscore.models.dummy:load_model",
        "job.modelArgs": {"payload_mb": 1},
        "volumes": [],
        "volumeMounts": [],
        "job.keyColumns": [ROW_KEY],
        # The GPUs here are fake (a node status patch: no device, no driver, no CUDA). With the GPU values'
        # device=cuda a run aborts, as it must (test_a_cuda_run_aborts_where_there_is_no_cuda); this run scores on
        # the CPUs of the GPU pods, with device auto, which the dummy model resolves to the CPU.
        "job.device": "auto",
        "cluster.gpuWorkers.image.tag": GPU_IMAGE_TAG,
        # One CPU worker stays after the run (the autoscaler removes idle ones after 30 s), for the NetworkPolicy
        # probes of a worker's port.
        "cluster.cpuWorkers.minReplicas": 1,
        **extra,
    }
    return values_args([CI_VALUES / "gpu-values.yaml", E2E_VALUES / "local-cluster.yaml"], sets)


@pytest.fixture(scope="module")
def gpu(kube, helm, s3):
    ns = make_namespace(kube, "gpu-values", s3)
    try:
        data = write_input(s3, ns.name, "input", shards=6, rows=4000)
        inst = Install(ns, data, "output")
        helm("install", RELEASE, str(CHART), "-n", ns.name, *install_values(ns.name, s3, data))
        log(f"helm install {RELEASE} -n {ns}: RayCluster {NAME}, RayJob {NAME}")

        def cluster():
            inst.watch_pods(kube)
            return kube.get("raycluster", NAME, ns.name)

        wait_for(cluster, raycluster_ready, 300, f"RayCluster {ns}/{NAME} to be ready")

        def job():
            inst.watch_pods(kube)
            return kube.get("rayjob", NAME, ns.name)

        inst.rayjob = wait_for(job, rayjob_finished, 600, f"RayJob {ns}/{NAME} to finish")
        log(f"RayJob {NAME}: {rayjob_status(inst.rayjob)}; Ray pods seen: {json.dumps(inst.pods_seen)}")
        yield inst
    finally:
        ns.delete()


def pods(kube, ns: str, selector=f"ray.io/cluster={NAME}") -> list[dict]:
    return kube.items("pods", ns, selector)


def head_pod(kube, ns: str) -> dict:
    heads = pods(kube, ns, f"ray.io/cluster={NAME},ray.io/node-type=head")
    assert len(heads) == 1, [p["metadata"]["name"] for p in heads]
    return heads[0]


def release_labels(component: str) -> dict[str, str]:
    """The labels the chart gives this release's pods of one component (shardscore.metadata), which its
    NetworkPolicies select by."""
    return {"app.kubernetes.io/name": "shardscore", "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": component}


def container(pod: dict, name: str) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


# --------------------------------------------------------------------------------------------- scenario 1

def test_the_raycluster_has_a_head_cpu_workers_and_a_gpu_pod_on_the_gpu_node(gpu, kube):
    cpu_nodes, gpu_nodes = set(kube.nodes(CPU_POOL)), set(kube.nodes(GPU_POOL))
    by_group: dict[str, set] = {}
    for pod in gpu.pods_seen.values():
        by_group.setdefault(pod["group"], set()).add(pod["node"])
    assert by_group.get("headgroup") and by_group["headgroup"] <= cpu_nodes, by_group
    assert by_group.get("cpu") and by_group["cpu"] <= cpu_nodes, by_group
    # The GPU group starts at zero pods (scale from zero); the autoscaler started them for the run's GPU actors.
    assert by_group.get("gpu") and by_group["gpu"] <= gpu_nodes, by_group
    rc = kube.get("raycluster", NAME, gpu.namespace.name)
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert groups["gpu"]["minReplicas"] == 0
    assert groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_rayjob_succeeds_with_exact_output(gpu, s3):
    assert rayjob_succeeded(gpu.rayjob), gpu.rayjob.get("status")
    assert_exact(s3, gpu.data, gpu.output)


def test_the_gpu_actors_ran_on_the_gpu_groups_pods(gpu, s3):
    manifest = manifest_of(s3, gpu.data.bucket, gpu.output)
    gpu_pods = {name for name, p in gpu.pods_seen.items() if p["group"] == "gpu"}
    assert float(manifest["options"]["num_gpus_per_worker"]) == 1
    assert manifest["options"]["strategy"] == "actors"
    for shard in manifest["shards"]:
        worker = shard["worker"]
        assert worker["hostname"] in gpu_pods, (shard["shard_id"], worker, gpu_pods)
        assert worker["gpu_ids"], worker  # Ray gave the actor one of the pod's (fake) GPUs
        assert worker["device"] == "cpu", worker


def parquet_versions(s3, bucket: str, prefix: str) -> dict[str, str]:
    page = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    return {o["Key"]: str(o["LastModified"]) for o in page.get("Contents", []) if o["Key"].endswith(".parquet")}


PROCESSES = ("import json, os\n"
             "out = []\n"
             "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
             "    try:\n"
             "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode(errors='replace')\n"
             "        uid = [l.split()[1:3] for l in open(f'/proc/{pid}/status') if l.startswith('Uid:')][0]\n"
             "    except (OSError, IndexError):\n"
             "        continue\n"
             "    out.append([uid[0], uid[1], cmd[:160]])\n"
             "print(json.dumps(out))\n")


def test_every_process_of_the_ray_pods_runs_as_uid_1000(gpu, kube):
    ns = gpu.namespace.name
    checked = 0
    for pod in pods(kube, ns):
        if pod["status"].get("phase") != "Running":
            continue
        for c in pod["spec"]["containers"]:
            procs = json.loads(kube("-n", ns, "exec", pod["metadata"]["name"], "-c", c["name"], "--", "python3", "-c",
                                    PROCESSES).stdout)
            if c["name"].startswith("ray-"):
                assert any("raylet" in cmd for _, _, cmd in procs), (c["name"], procs)
            for real, effective, cmd in procs:
                assert real == effective == "1000", f"{pod['metadata']['name']}/{c['name']}: {cmd!r} runs as {real}"
            checked += len(procs)
    log(f"{checked} processes checked, all uid 1000")
    assert checked


def test_helm_test_passes(gpu, helm):
    """The test pod checks the head's GCS health and the Jobs API with the cluster's token, sent as
    `x-ray-authorization: Bearer <token>`, and that a request without the token is refused."""
    proc = helm("test", RELEASE, "-n", gpu.namespace.name, "--logs", "--timeout", "5m")
    log(proc.stdout[-3000:])
    assert "Phase:          Succeeded" in proc.stdout or "Succeeded" in proc.stdout, proc.stdout
    assert "Jobs API without the token: HTTP 401" in proc.stdout or "without the token: HTTP 403" in proc.stdout
    assert "Jobs API with the token: HTTP 200" in proc.stdout


def test_a_cuda_run_aborts_where_there_is_no_cuda(gpu, kube, helm, s3):
    """The GPU values' own device=cuda, as a second release on the same cluster (cluster.create=false): no CUDA
    on these fake GPUs, so the run aborts with the job's "no CUDA" error and exit code 3, scoring nothing on the CPU."""
    ns, release = gpu.namespace.name, "cuda"
    name = fullname(release)
    helm("install", release, str(CHART), "-n", ns, *install_values(
        ns, s3, gpu.data, **{"job.device": "cuda", "job.output": f"s3://{ns}/output-cuda", "cluster.create": False,
                             "rayJob.clusterName": NAME}))
    log(f"helm install {release}: RayJob {name} with --device cuda on RayCluster {NAME}")
    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 420, f"RayJob {ns}/{name} to finish")
    assert final["status"]["jobDeploymentStatus"] == "Failed", final["status"]
    assert final["status"]["jobStatus"] == "FAILED", final["status"]
    assert "exit code 3" in final["status"].get("message", ""), final["status"]
    logs = kube("-n", ns, "logs", f"job/{name}", "--tail=400", check=False).stdout
    assert "--device cuda" in logs and "CUDA" in logs, logs[-4000:]
    manifest = manifest_of(s3, ns, "output-cuda")
    assert manifest is None or (manifest["status"] == "aborted" and manifest["totals"]["rows_scored_this_run"] == 0)
    assert not [k for k in s3.keys(ns, "output-cuda") if k.endswith(".parquet")], "rows were scored without CUDA"


# --------------------------------------------------------------------------------------------- issue 12 §3

def test_the_head_runs_as_the_charts_serviceaccount_with_autoscaling(gpu, kube):
    """KubeRay binds its autoscaler Role to the head's account; the head keeps the chart's account, and the
    autoscaler, which only has the token the chart projects into its container, did scale the GPU group."""
    ns = gpu.namespace.name
    head = head_pod(kube, ns)
    assert head["spec"]["serviceAccountName"] == NAME
    assert head["spec"].get("automountServiceAccountToken") is False
    names = [c["name"] for c in head["spec"]["containers"]]
    assert names == ["ray-head", "autoscaler"], names
    # The Ray container's only token is the run report's (k8s/rayjob_report.py), not the autoscaler's account's.
    tokens = [m["mountPath"] for m in container(head, "ray-head").get("volumeMounts", [])
              if m["mountPath"].startswith("/var/run/secrets/")]
    assert tokens == ["/var/run/secrets/shardscore.io/rayjob-report"], tokens
    binding = kube.get("rolebinding", NAME, ns)
    assert binding and binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}], binding
    gpu_pods = [p for p in gpu.pods_seen.values() if p["group"] == "gpu"]
    assert gpu_pods, "the autoscaler never started a GPU pod"
    logs = kube.pod_logs(ns, head["metadata"]["name"], "autoscaler", tail=2000)
    assert "Forbidden" not in logs and "Unauthorized" not in logs, logs[-3000:]


def test_dev_shm_is_kuberays_memory_backed_volume(gpu, kube):
    ns = gpu.namespace.name
    head = head_pod(kube, ns)
    ray = container(head, "ray-head")
    mount = next(m for m in ray["volumeMounts"] if m["mountPath"] == "/dev/shm")
    volume = next(v for v in head["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory", volume
    assert volume["emptyDir"]["sizeLimit"] == ray["resources"]["limits"]["memory"], (volume, ray["resources"])
    fs = kube("-n", ns, "exec", head["metadata"]["name"], "-c", "ray-head", "--", "stat", "-f", "-c", "%T",
              "/dev/shm").stdout.strip()
    assert fs == "tmpfs", fs


def test_ray_containers_request_their_limits_save_what_the_values_ask(gpu, kube):
    """The chart's rule (shardscore.resources in _helpers.tpl) on the operator's pods: a request the values leave
    out is the limit (memory here, and nvidia.com/gpu, which the chart adds to both); local-cluster.yaml asks only for
    CPU, below the limit. KubeRay copies the containers' resources from the templates (it adds none)."""
    small = yaml.safe_load((E2E_VALUES / "local-cluster.yaml").read_text())["cluster"]
    asked = {("ray-head", "headgroup"): small["head"], ("autoscaler", "headgroup"): small["autoscaling"],
             ("ray-worker", "cpu"): small["cpuWorkers"], ("ray-worker", "gpu"): small["gpuWorkers"]}
    checked = []
    for pod in pods(kube, gpu.namespace.name):
        group = pod["metadata"]["labels"].get("ray.io/group")
        for c in pod["spec"]["containers"]:
            res = c.get("resources", {})
            want = {**res["limits"], **asked[(c["name"], group)]["resources"].get("requests", {})}
            assert res.get("requests") == want, (pod["metadata"]["name"], c["name"], res)
            assert set(res["limits"]) >= {"cpu", "memory"}, (pod["metadata"]["name"], c["name"], res)
            checked.append(f"{pod['metadata']['name']}/{c['name']}")
    log(f"requests = limits save the values' CPU requests in {checked}")
    assert any(p.endswith("/autoscaler") for p in checked) and any(p.endswith("/ray-worker") for p in checked)


def test_the_gpu_group_runs_its_own_image(gpu):
    for name, pod in gpu.pods_seen.items():
        want = f"shardscore:{GPU_IMAGE_TAG}" if pod["group"] == "gpu" else image()
        ray = next(v for k, v in pod["images"].items() if k.startswith("ray-"))
        assert ray == want, (name, pod)


def test_a_pod_without_the_token_cannot_submit_a_job(gpu, kube):
    """Token auth (authOptions.mode token): a pod of the namespace without the token is refused by the Jobs API; the
    same pod with the token KubeRay made (Secret <cluster>, key auth_token) submits. The release's submitter
    submitted with the token KubeRay injected (test_the_rayjob_succeeds_with_exact_output). The pod has the labels
    of the chart's `helm test` pod, which the NetworkPolicy lets reach the dashboard; no other pod gets that far."""
    ns = gpu.namespace.name
    address = f"http://{NAME}-head-svc.{ns}.svc:8265"
    script = (f"ray job submit --address {address} --no-wait -- echo hello; echo EXIT-WITHOUT=$?; "
              f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$CLUSTER_TOKEN ray job submit --address {address} -- echo hello; "
              "echo EXIT-WITH=$?")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "no-token", "namespace": ns, "labels": release_labels("test")},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "submit", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["bash", "-c", script], "env": [{"name": "HOME", "value": "/tmp"}, {
                   "name": "CLUSTER_TOKEN", "valueFrom": {"secretKeyRef": {"name": NAME, "key": "auth_token"}}}],
               "resources": {"limits": {"cpu": "200m", "memory": "512Mi"}}}]}}
    kube.apply(pod)
    wait_for(lambda: kube.get("pod", "no-token", ns), lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
             240, "the pod without the token to try")
    out = kube("-n", ns, "logs", "no-token").stdout
    log(out[-3000:])
    assert "EXIT-WITHOUT=0" not in out and "EXIT-WITHOUT=" in out, out
    assert "EXIT-WITH=0" in out, out


def test_the_submitter_has_no_object_store_credentials(gpu, kube):
    ns = gpu.namespace.name
    submitters = kube.items("pods", ns, f"batch.kubernetes.io/job-name={NAME}")
    assert submitters, "no submitter pod"
    for pod in submitters:
        for c in pod["spec"]["containers"]:
            names = {e["name"] for e in c.get("env", [])}
            assert not {n for n in names if n.startswith("AWS_")}, (c["name"], names)
            assert not c.get("envFrom"), c.get("envFrom")
            assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= names, names  # KubeRay injected the token
    head_env = {e["name"] for e in container(head_pod(kube, ns), "ray-head").get("env", [])}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= head_env, head_env  # the driver (on the head) has them


# ----------------------------------------------------------------------- NetworkPolicies enforced (issue 23 §3)
# The local cluster enforces NetworkPolicies (kube-router's policy controller, cluster/steps/75-network-policy.sh),
# whose REJECT refuses a connection at once. Each probe is a TCP connect from inside a pod (kubectl exec), so
# a refusal could also be a port where nothing listens: the release's own pods reaching the same ports are the
# control that they do listen.
PROBE = """
import json, socket, sys
result = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=4).close()
        result[target] = "open"
    except socket.timeout:
        result[target] = "timeout"
    except OSError as e:
        result[target] = type(e).__name__
print(json.dumps(result))
"""
HEAD_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
SCRAPE_NS = "monitoring"  # the namespace values.yaml's metrics.scrapeFrom admits by default


def probe(kube, ns: str, pod: str, targets: dict[str, tuple[str, int]], container: str = "") -> dict[str, bool]:
    """Whether each named target accepts a TCP connection from the pod."""
    out = kube("-n", ns, "exec", pod, *(["-c", container] if container else []), "--", "python3", "-c", PROBE,
               *[f"{host}:{port}" for host, port in targets.values()]).stdout
    raw = json.loads(out)
    outcome = {name: raw[f"{host}:{port}"] for name, (host, port) in targets.items()}
    log(f"from {ns}/{pod}: {outcome}")
    return {name: result == "open" for name, result in outcome.items()}


def prober(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict:
    """A pod that only waits, for kubectl exec to probe from (any pod; the policies care about its labels)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "probe", "image": image(), "imagePullPolicy": "IfNotPresent", "command": ["sleep", "1800"],
                "resources": {"requests": {"cpu": "10m"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}]}}


@dataclass
class Probers:
    ns: str
    head: str  # the head pod's name
    worker: str  # a running worker's name
    targets: dict[str, tuple[str, int]]  # head:<port name> and worker:metrics


@pytest.fixture(scope="module")
def probers(gpu, kube):
    """Three probers: an unlabelled pod of the release's namespace, one with the labels of the release's submitter,
    and one in the `monitoring` namespace; and what they probe: the head's ports and a worker's metrics port."""
    ns = gpu.namespace.name
    scrape_ns = Namespace(SCRAPE_NS, kube)
    if kube("get", "namespace", SCRAPE_NS, check=False).returncode == 0:
        scrape_ns.delete()  # a leftover
    scrape_ns.create()
    try:
        kube.apply([prober(ns, "outsider"), prober(ns, "as-submitter", release_labels("ray-job-submitter")),
                    prober(SCRAPE_NS, "scraper")])
        for pod_ns, name in ((ns, "outsider"), (ns, "as-submitter"), (SCRAPE_NS, "scraper")):
            wait_for(lambda pod_ns=pod_ns, name=name: kube.get("pod", name, pod_ns),
                     lambda p: p["status"].get("phase") == "Running", 120, f"prober {pod_ns}/{name} to run")
        head = head_pod(kube, ns)
        workers = [p for p in pods(kube, ns, f"ray.io/cluster={NAME},ray.io/group=cpu")
                   if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        assert workers, "no running CPU worker to probe (cluster.cpuWorkers.minReplicas is 1)"
        targets = {f"head:{port_name}": (head["status"]["podIP"], port) for port_name, port in HEAD_PORTS.items()}
        targets["worker:metrics"] = (workers[0]["status"]["podIP"], HEAD_PORTS["metrics"])
        yield Probers(ns, head["metadata"]["name"], workers[0]["metadata"]["name"], targets)
    finally:
        scrape_ns.delete(wait=False)


def test_the_release_reaches_every_port_of_its_ray_pods(gpu, kube, probers):
    """The control: a worker reaches each port of the head, and the head a worker's metrics port."""
    from_worker = probe(kube, probers.ns, probers.worker,
                        {k: v for k, v in probers.targets.items() if k.startswith("head:")})
    assert all(from_worker.values()), from_worker
    assert probe(kube, probers.ns, probers.head, {"worker:metrics": probers.targets["worker:metrics"]},
                 container="ray-head") == {"worker:metrics": True}


def test_a_pod_outside_the_release_reaches_no_port_of_its_ray_pods(gpu, kube, probers):
    reached = probe(kube, probers.ns, "outsider", probers.targets)
    assert not any(reached.values()), reached
    reached = probe(kube, SCRAPE_NS, "scraper", probers.targets)
    assert not any(reached.values()), f"metrics.podMonitor is off, yet the scrape namespace reached {reached}"


def test_the_submitters_labels_reach_the_dashboard_only(gpu, kube, probers):
    reached = probe(kube, probers.ns, "as-submitter", probers.targets)
    assert reached == {name: name == "head:dashboard" for name in probers.targets}, reached


def test_the_operator_reaches_the_dashboard_through_the_api_servers_proxy(gpu, kube, probers):
    """The KubeRay operator of this cluster runs on the host with --use-kubernetes-proxy: its dashboard client goes
    through the API server's service proxy (GetRayDashboardClientFunc in ray-operator/controllers/ray/utils/util.go
    at v1.7.0), whose connections come from 10.99.0.1, which the e2e values admit by networkPolicy.operator.ipBlocks
    (tests/e2e_cluster/values/local-cluster.yaml), on the dashboard's port only: the same proxy to the head's
    metrics port is refused."""
    ns = gpu.namespace.name
    health = kube("get", "--raw", f"/api/v1/namespaces/{ns}/services/{NAME}-head-svc:dashboard/proxy/api/gcs_healthz")
    assert "success" in health.stdout, health.stdout
    metrics = kube("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{probers.head}:8080/proxy/metrics", check=False)
    assert metrics.returncode != 0 and "connection refused" in metrics.stderr, (metrics.returncode, metrics.stderr)


def test_with_the_pod_monitor_the_scrape_namespace_reaches_the_metrics_port_only(gpu, kube, helm, s3, probers):
    """The policies that metrics.podMonitor.enabled renders, applied beside the release's (policies add up, and
    these admit a superset): the `monitoring` namespace reaches port 8080 of the head and the workers, nothing else.
    (The PodMonitor itself needs the Prometheus operator's CRD, which this cluster does not have.)"""
    ns = probers.ns
    rendered = helm.template(RELEASE, ns, install_values(ns, s3, gpu.data, **{"metrics.podMonitor.enabled": True}))
    policies = [p for p in rendered if p["kind"] == "NetworkPolicy"]
    assert len(policies) == 2, [p["metadata"]["name"] for p in policies]
    for p in policies:
        p["metadata"] = {"name": p["metadata"]["name"] + "-scrape-check", "namespace": ns}
    kube.apply(policies)
    try:
        want = {name: name.endswith(":metrics") for name in probers.targets}
        wait_for(lambda: probe(kube, SCRAPE_NS, "scraper", probers.targets), lambda r: r == want, 60,
                 "the scrape namespace to reach the metrics ports only")
    finally:
        kube("-n", ns, "delete", "networkpolicy", *[p["metadata"]["name"] for p in policies], check=False)


def test_helm_upgrade_replaces_the_clusters_pods(gpu, kube, helm, s3):
    """upgradeStrategy Recreate: `helm upgrade` that changes the pods (here the image tag, as a Ray upgrade does)
    makes KubeRay delete every pod of the long-lived cluster and create them anew, so no two Ray versions mix.

    Helm 4 applies server-side. The autoscaler has patched the worker groups' replicas since the install, and
    workerGroupSpecs is an atomic list in the RayCluster CRD, so the autoscaler's field manager owns the whole list:
    a plain `helm upgrade` fails with a conflict, `helm upgrade --force-conflicts` takes the list back (replicas
    return to the chart's values and the autoscaler scales them to the work again). docs/kubernetes.md says so."""
    ns = gpu.namespace.name
    before = {p["metadata"]["uid"]: p["metadata"]["name"] for p in pods(kube, ns)}
    rc = json.loads(kube("-n", ns, "get", "raycluster", NAME, "-o", "json", "--show-managed-fields").stdout)
    managers = {f["manager"] for f in rc["metadata"]["managedFields"] if "f:spec" in json.dumps(f.get("fieldsV1"))}
    log(f"before the upgrade: pods {sorted(before.values())}; replicas "
        f"{[(g['groupName'], g.get('replicas')) for g in rc['spec']['workerGroupSpecs']]}; spec managers {managers}")
    args = ["upgrade", RELEASE, str(CHART), "-n", ns, *install_values(ns, s3, gpu.data, **{"image.tag": GPU_IMAGE_TAG})]
    if helm.major >= 4:
        assert len(managers) > 1, f"the autoscaler never patched the RayCluster: {managers}"
        plain = helm(*args, check=False)
        log(f"plain helm upgrade: exit {plain.returncode}: {plain.stderr.strip()[-600:]}")
        assert plain.returncode != 0 and "conflict" in plain.stderr and ".spec.workerGroupSpecs" in plain.stderr, \
            plain.stderr
        args.append("--force-conflicts")
    proc = helm(*args)
    log(proc.stdout[-800:])

    def replaced():
        now = pods(kube, ns)
        return {"old": [p["metadata"]["name"] for p in now if p["metadata"]["uid"] in before],
                "new": [(p["metadata"]["name"], next(c["image"] for c in p["spec"]["containers"]
                                                     if c["name"].startswith("ray-")), p["status"].get("phase"))
                        for p in now if p["metadata"]["uid"] not in before],
                "cluster": (kube.get("raycluster", NAME, ns).get("status") or {}).get("state")}

    state = wait_for(replaced, lambda s: not s["old"] and s["new"] and s["cluster"] == "ready"
                     and all(img == f"shardscore:{GPU_IMAGE_TAG}" and phase == "Running" for _, img, phase in s["new"]),
                     420, "every pod of the cluster to be replaced by one of the new spec")
    log(f"after the upgrade: {state}")
    events = [e["message"] for e in kube.events(ns) if "Recreate upgradeStrategy" in (e.get("message") or "")]
    assert events, "no event of KubeRay's Recreate upgradeStrategy"
    log(f"KubeRay: {events[0]}")


def test_a_rerun_of_the_finished_rayjob_rewrites_nothing(gpu, kube, s3):
    """The RayJob run again (deleted and created anew, as on a long-lived cluster one reruns; last, after the
    upgrade, because kubectl then owns the RayJob's fields): every shard is skipped as committed, and a rerun with
    nothing to do leaves the output as it was, manifest and `_SUCCESS` included (README, "What a rerun verifies")."""
    ns = gpu.namespace.name
    before = parquet_versions(s3, ns, gpu.output)
    manifest = manifest_of(s3, ns, gpu.output)
    old = rerun(kube, ns, NAME)
    final = wait_for(lambda: kube.get("rayjob", NAME, ns), lambda j: rayjob_finished(j) and
                     j["metadata"]["uid"] != old["metadata"]["uid"], 420, f"the rerun of RayJob {NAME}")
    assert rayjob_succeeded(final), final["status"]
    logs = kube("-n", ns, "logs", f"job/{NAME}", "--tail=200").stdout
    shards = manifest["totals"]["shards"]
    assert f"{shards}/{shards} shards committed, 0 failed, {shards} already committed (skipped)" in logs, logs[-2000:]
    assert parquet_versions(s3, ns, gpu.output) == before, "the rerun rewrote output files"
    assert manifest_of(s3, ns, gpu.output) == manifest, "the rerun rewrote the manifest"
    assert_exact(s3, gpu.data, gpu.output)
