"""Smoke test of the local cluster of `make cluster` (cluster/, docs/local-cluster.md).

It checks what the cluster e2e relies on, on the real thing: both nodes Ready with the pool labels, the GPU
pool's taint and fake GPU capacity; cluster DNS from a pod; the KubeRay operator bringing a RayCluster of the
project's image to ready (head on the CPU node, a worker on each node, the GPU worker tolerating the taint and
asking for one nvidia.com/gpu); a RayJob on it (the operator's submitter, clusterSelector mode), and `ray job
submit` from inside the head (kubectl exec: API server -> kubelet -> containerd streaming).

Skipped, naming what is missing, when no cluster is up. Each test uses a fresh namespace and deletes it; on failure
its report has the operator's log, describe and logs of the namespace's pods, and its events (conftest.py).

    make cluster && .venv/bin/python -m pytest -m cluster tests/e2e_cluster/test_cluster_smoke.py
"""

from __future__ import annotations

import json
import os
from typing import Any

from .clusterlib import CPU_POOL, GPU_POOL, image, log, wait_for

FAKE_GPUS = os.environ.get("SHARDSCORE_CLUSTER_FAKE_GPUS", "2")

# --- tests ------------------------------------------------------------------------------------------------------

def test_nodes_ready_with_pool_labels_taint_and_fake_gpus(kube, target):
    server = json.loads(kube("get", "--raw", "/version").stdout)["gitVersion"]
    if target.kubernetes_version:
        assert server == target.kubernetes_version, server  # Helm's kubeVersion checks read this
    minor = server.split(".")[:2]
    nodes = {n["metadata"]["name"]: n for n in kube.json("nodes")["items"]}
    cpu_nodes, gpu_nodes = kube.nodes(CPU_POOL), kube.nodes(GPU_POOL)
    assert len(cpu_nodes) == 1 and len(gpu_nodes) == 1, (cpu_nodes, gpu_nodes)
    for name, node in nodes.items():
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", (name, node["status"]["conditions"])
        assert node["status"]["nodeInfo"]["kubeletVersion"].split(".")[:2] == minor, node["status"]["nodeInfo"]
    cpu, gpu = nodes[cpu_nodes[0]], nodes[gpu_nodes[0]]
    assert not [t for t in cpu["spec"].get("taints") or [] if t["effect"] == "NoSchedule"], cpu["spec"].get("taints")
    assert gpu["metadata"]["labels"]["shardscore.io/pool"] == "gpu"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == FAKE_GPUS
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == FAKE_GPUS


def test_dns_and_service_routing_from_a_pod_on_the_gpu_node(kube, namespace):
    namespace = namespace.name
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
    wait_for(lambda: kube.json("-n", namespace, "pod", "dns-check"),
             lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), 180, "the DNS check pod to finish")
    out = kube("-n", namespace, "logs", "dns-check").stdout
    log(out.strip())
    assert kube.json("-n", namespace, "pod", "dns-check")["status"]["phase"] == "Succeeded", out
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
    namespace = namespace.name
    cpu_node, gpu_node = kube.nodes(CPU_POOL)[0], kube.nodes(GPU_POOL)[0]
    kube("apply", "-f", "-", input=json.dumps(ray_cluster(namespace)))
    log(f"created RayCluster {namespace}/smoke")
    wait_for(lambda: kube.json("-n", namespace, "raycluster", "smoke"),
             lambda rc: rc.get("status", {}).get("state") == "ready", 420, "RayCluster smoke to be ready")

    pods = kube.json("-n", namespace, "pods", "-l", "ray.io/cluster=smoke")["items"]
    placement = {(p["metadata"]["labels"]["ray.io/group"], p["spec"]["nodeName"]) for p in pods}
    assert placement == {("headgroup", cpu_node), ("cpu", cpu_node), ("gpu", gpu_node)}, placement
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
    final = wait_for(lambda: kube.json("-n", namespace, "rayjob", "smoke-job"),
                     lambda rj: rj.get("status", {}).get("jobDeploymentStatus") in ("Complete", "Failed"),
                     300, "RayJob smoke-job to finish")
    assert final["status"]["jobStatus"] == "SUCCEEDED", final["status"]
    logs = kube("-n", namespace, "logs", "job/smoke-job").stdout
    assert f"gpu task ran on {gpu_worker}" in logs, logs[-3000:]
