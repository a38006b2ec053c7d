"""Smoke test of the local cluster of `make cluster` (cluster/, docs/local-cluster.md).

It checks what the cluster e2e relies on, on the real thing: both nodes Ready with the pool labels, the GPU
pool's taint and fake GPU capacity; cluster DNS from a pod; the KubeRay operator bringing a RayCluster of the
project's image to ready (head on the CPU node, a worker on each node, the GPU worker tolerating the taint and
asking for one nvidia.com/gpu); a RayJob on it (the operator's submitter, clusterSelector mode), and `ray job
submit` from inside the head (kubectl exec: API server -> kubelet -> containerd streaming).

Skipped, naming what is missing, when no local cluster is up. Each test uses a fresh namespace and deletes it;
on failure it prints the operator's log, describe and logs of the namespace's pods, and its events.

    make cluster && .venv/bin/python -m pytest tests/e2e_cluster/test_cluster_smoke.py
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "cluster" / "cluster.sh"
STATE_DIR = Path(os.environ.get("SHARDSCORE_CLUSTER_DIR", "/var/lib/shardscore-cluster"))
CPU_NODE, GPU_NODE = "shardscore-cpu", "shardscore-gpu"
FAKE_GPUS = os.environ.get("SHARDSCORE_CLUSTER_FAKE_GPUS", "2")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def cluster_env() -> dict[str, str]:
    """KUBECONFIG and KUBECTL of the running local cluster; skips the module when there is none."""
    if os.geteuid() != 0:
        pytest.skip("the local cluster's smoke test needs root (its kubeconfig and PKI are root-only)")
    proc = subprocess.run(["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip("no local cluster is up (start one with `make cluster`)")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def kube() -> Callable[..., subprocess.CompletedProcess]:
    env = cluster_env()

    def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 120):
        proc = subprocess.run([env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    return run


def get_json(kube, *args: str) -> dict[str, Any]:
    return json.loads(kube("get", *args, "-o", "json").stdout)


def wait_for(get: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float, what: str) -> Any:
    """Polls get() until predicate(value) holds; fails with the last value (or error) it saw."""
    deadline, last = time.monotonic() + timeout, None
    log(f"waiting for {what} (up to {timeout:.0f}s)")
    while True:
        try:
            last = get()
            if predicate(last):
                log(f"done: {what}")
                return last
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen:\n"
                                 f"{json.dumps(last, indent=1, default=str)[-6000:]}")
        time.sleep(2)


@pytest.fixture
def namespace(kube):
    name = f"ssc-smoke-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", name)
    log(f"created namespace {name}")
    try:
        with diagnostics_on_failure(kube, name):
            yield name
    finally:
        kube("delete", "namespace", name, "--wait=false", check=False)
        log(f"deleted namespace {name}")


@contextlib.contextmanager
def diagnostics_on_failure(kube, namespace: str):
    try:
        yield
    except BaseException:
        print("\n===== diagnostics for namespace", namespace)
        operator_log = STATE_DIR / "logs" / "kuberay-operator.log"
        if operator_log.exists():
            print(f"----- KubeRay operator log (last 80 lines of {operator_log})")
            print("\n".join(operator_log.read_text(errors="replace").splitlines()[-80:]))
        for args in (("get", "raycluster,rayjob,pods,services,jobs", "-o", "wide"), ("describe", "pods"),
                     ("get", "events", "--sort-by=.lastTimestamp")):
            print(f"----- kubectl -n {namespace} {' '.join(args)}")
            proc = kube("-n", namespace, *args, check=False)
            print(proc.stdout[-15000:], proc.stderr[-2000:])
        pods = kube("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split()
        for pod in pods:
            print(f"----- logs of {pod}")
            print(kube("-n", namespace, "logs", pod, "--all-containers", "--tail=60", check=False).stdout)
        raise


def image() -> str:
    """The chart's default image (shardscore:<appVersion>), which `make cluster` loads into every node."""
    chart = (ROOT / "helm" / "shardscore" / "Chart.yaml").read_text()
    return "shardscore:" + re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.M).group(1)


# --- tests ------------------------------------------------------------------------------------------------------

def test_nodes_ready_with_pool_labels_taint_and_fake_gpus(kube):
    nodes = {n["metadata"]["name"]: n for n in get_json(kube, "nodes")["items"]}
    assert set(nodes) == {CPU_NODE, GPU_NODE}, sorted(nodes)
    for name, node in nodes.items():
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", (name, node["status"]["conditions"])
        assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.35."), node["status"]["nodeInfo"]
    cpu, gpu = nodes[CPU_NODE], nodes[GPU_NODE]
    assert cpu["metadata"]["labels"]["shardscore.io/pool"] == "cpu"
    assert not cpu["spec"].get("taints"), cpu["spec"].get("taints")
    assert gpu["metadata"]["labels"]["shardscore.io/pool"] == "gpu"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == FAKE_GPUS
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == FAKE_GPUS
    version = json.loads(kube("get", "--raw", "/version").stdout)
    assert version["gitVersion"].startswith("v1.35."), version  # Helm's kubeVersion checks read this


def test_dns_and_service_routing_from_a_pod_on_the_gpu_node(kube, namespace):
    script = ("import socket, ssl, http.client\n"
              "print('kubernetes.default', socket.gethostbyname('kubernetes.default'))\n"
              "print('kube-dns', socket.gethostbyname('kube-dns.kube-system.svc.cluster.local'))\n"
              "c = http.client.HTTPSConnection('kubernetes.default', 443, timeout=10,\n"
              "                                context=ssl._create_unverified_context())\n"
              "c.request('GET', '/livez'); print('livez', c.getresponse().status)\n")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns-check", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"shardscore.io/pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "check", "image": image(), "imagePullPolicy": "IfNotPresent",
                            "command": ["python3", "-c", script]}],
        },
    }
    kube("apply", "-f", "-", input=json.dumps(pod))
    wait_for(lambda: get_json(kube, "-n", namespace, "pod", "dns-check"),
             lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), 180, "the DNS check pod to finish")
    out = kube("-n", namespace, "logs", "dns-check").stdout
    log(out.strip())
    assert get_json(kube, "-n", namespace, "pod", "dns-check")["status"]["phase"] == "Succeeded", out
    assert "kubernetes.default 10.96.0.1" in out, out
    assert "kube-dns 10.96.0.10" in out, out
    assert "livez 200" in out, out


def ray_cluster(namespace: str) -> dict[str, Any]:
    env = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]

    def pod(pool: str, container: str, cpu_limit: str, memory: str, gpus: int = 0) -> dict[str, Any]:
        limits = {"cpu": cpu_limit, "memory": memory}
        if gpus:
            limits["nvidia.com/gpu"] = str(gpus)
        spec: dict[str, Any] = {
            "nodeSelector": {"shardscore.io/pool": pool},
            "containers": [{"name": container, "image": image(), "imagePullPolicy": "IfNotPresent", "env": env,
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": limits}}],
        }
        if pool == "gpu":
            spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        return {"spec": spec}

    def group(name: str, pool: str, gpus: int = 0) -> dict[str, Any]:
        return {"groupName": name, "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "rayStartParams": {},
                "template": pod(pool, "ray-worker", "1", "1536Mi", gpus)}

    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": pod("cpu", "ray-head", "1", "2Gi")},
            "workerGroupSpecs": [group("cpu", "cpu"), group("gpu", "gpu", gpus=1)],
        },
    }


GPU_PROBE = ("import ray, socket; ray.init(); "
             "print('ray nodes', len([n for n in ray.nodes() if n['Alive']])); "
             "print('gpu task ran on', ray.get(ray.remote(num_gpus=1)(lambda: socket.gethostname()).remote()))")


def test_kuberay_operator_runs_a_raycluster_and_a_rayjob(kube, namespace):
    kube("apply", "-f", "-", input=json.dumps(ray_cluster(namespace)))
    log(f"created RayCluster {namespace}/smoke")
    wait_for(lambda: get_json(kube, "-n", namespace, "raycluster", "smoke"),
             lambda rc: rc.get("status", {}).get("state") == "ready", 420, "RayCluster smoke to be ready")

    pods = get_json(kube, "-n", namespace, "pods", "-l", "ray.io/cluster=smoke")["items"]
    placement = {(p["metadata"]["labels"]["ray.io/group"], p["spec"]["nodeName"]) for p in pods}
    assert placement == {("headgroup", CPU_NODE), ("cpu", CPU_NODE), ("gpu", GPU_NODE)}, placement
    head = next(p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "head")
    gpu_worker = next(p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["ray.io/group"] == "gpu")

    # `ray job submit` inside the head: kubectl exec goes API server -> kubelet -> containerd's stream server.
    submit = kube("-n", namespace, "exec", head, "-c", "ray-head", "--", "ray", "job", "submit",
                  "--address", "http://127.0.0.1:8265", "--", "python", "-c", GPU_PROBE, timeout=300)
    log(submit.stdout[-2000:])
    assert "ray nodes 3" in submit.stdout, submit.stdout
    assert f"gpu task ran on {gpu_worker}" in submit.stdout, submit.stdout
    assert "succeeded" in submit.stdout, submit.stdout

    # The operator's own path: a RayJob in clusterSelector mode, its submitter Job, status read by the operator
    # from the dashboard (through the API server's service proxy, --use-kubernetes-proxy).
    rayjob = {
        "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "smoke-job", "namespace": namespace},
        "spec": {
            "clusterSelector": {"ray.io/cluster": "smoke"},
            "entrypoint": f'python -c "{GPU_PROBE}"',
            "submitterPodTemplate": {"spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"shardscore.io/pool": "cpu"},
                "containers": [{"name": "ray-job-submitter", "image": image(), "imagePullPolicy": "IfNotPresent",
                                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                              "limits": {"cpu": "1", "memory": "1Gi"}}}],
            }},
        },
    }
    kube("apply", "-f", "-", input=json.dumps(rayjob))
    log(f"created RayJob {namespace}/smoke-job")
    final = wait_for(lambda: get_json(kube, "-n", namespace, "rayjob", "smoke-job"),
                     lambda rj: rj.get("status", {}).get("jobDeploymentStatus") in ("Complete", "Failed"),
                     300, "RayJob smoke-job to finish")
    assert final["status"]["jobStatus"] == "SUCCEEDED", final["status"]
    logs = kube("-n", namespace, "logs", "job/smoke-job").stdout
    assert f"gpu task ran on {gpu_worker}" in logs, logs[-3000:]
