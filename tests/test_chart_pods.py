from __future__ import annotations

import pytest

import chartlib as c
from chartlib import CI_FILES, CI_IDS, CPU, FULLNAME, GPU, IMAGE, all_renders, clusters, entrypoint_argv


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_head_runs_no_work_and_cpu_pods_hide_gpus(values, rendered):
    specs = clusters(rendered[values.stem])
    assert specs
    for spec in specs:
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        assert spec["rayVersion"] == "2.60.0"
        for group, tmpl in c.pod_templates(spec):
            container = tmpl["spec"]["containers"][0]
            gpu = "nvidia.com/gpu" in container["resources"].get("limits", {})
            env = c.env_of(container)
            if gpu:
                assert "NVIDIA_VISIBLE_DEVICES" not in env, group
            else:
                assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "void", group
                assert container["image"] == IMAGE, group


def test_gpu_group(rendered):
    spec = c.one(rendered["gpu-values"], "RayCluster")["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (0, 0, 2)
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    cpu_pod = groups["cpu"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"].get("limits", {})
    assert "tolerations" not in cpu_pod and "nodeSelector" not in cpu_pod
    assert "volumes" in pod and {"name": "models", "mountPath": "/models", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    # CPU only values render no GPU group
    cpu_only = c.one(rendered["cpu-values"], "RayCluster")["spec"]
    assert [g["groupName"] for g in cpu_only["workerGroupSpecs"]] == ["cpu"]


def test_the_gpu_group_has_its_own_image_and_the_cpu_pods_keep_theirs(rendered):
    groups = dict(c.pod_templates(c.one(rendered["gpu-values"], "RayCluster")["spec"]))
    assert groups["gpu"]["spec"]["containers"][0]["image"] == "shardscore:0.1.0-cu128"
    assert groups["cpu"]["spec"]["containers"][0]["image"] == groups["head"]["spec"]["containers"][0]["image"] == IMAGE
    docs = c.render([GPU], ["image.repository=registry.example.com/ml/shardscore", "image.tag=1.2.3",
                            "cluster.gpuWorkers.image.tag=", "cluster.gpuWorkers.image.repository="])
    groups = dict(c.pod_templates(c.one(docs, "RayCluster")["spec"]))
    assert {g["spec"]["containers"][0]["image"] for g in groups.values()} == {"registry.example.com/ml/shardscore:1.2.3"}
    docs = c.render([GPU], ["cluster.gpuWorkers.image.repository=registry.example.com/ml/shardscore-cuda"])
    gpu = dict(c.pod_templates(c.one(docs, "RayCluster")["spec"]))["gpu"]
    assert gpu["spec"]["containers"][0]["image"] == "registry.example.com/ml/shardscore-cuda:0.1.0-cu128"


def test_gpu_runs_ask_for_cuda(rendered):
    argv = entrypoint_argv(c.one(rendered["gpu-values"], "RayJob"))
    assert argv[argv.index("--device") + 1] == "cuda"


def test_gpus_per_pod_and_resources_from_values():
    docs = c.render([GPU], ["cluster.gpuWorkers.gpusPerPod=4", "cluster.gpuWorkers.resources.limits.memory=64Gi"])
    gpu = [g for g in c.one(docs, "RayCluster")["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"][0]
    res = gpu["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 4 and res["limits"]["memory"] == "64Gi"
    assert res["requests"] == res["limits"]


def test_the_gpu_group_of_the_long_lived_cluster_scales_from_zero_by_default():
    docs = c.render_advertised(["cluster.gpuWorkers.enabled=true"])
    spec = c.one(docs, "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"][0]
    assert (gpu["replicas"], gpu["minReplicas"]) == (0, 0) and gpu["maxReplicas"] >= 1


def test_requests_equal_limits_for_ray_containers_in_every_render(rendered, advertised):
    checked = 0
    for where, docs in all_renders(rendered, advertised).items():
        for spec in clusters(docs):
            for group, tmpl in c.pod_templates(spec):
                res = tmpl["spec"]["containers"][0]["resources"]
                assert res["requests"] == res["limits"] and {"cpu", "memory"} <= set(res["limits"]), (where, group)
                checked += 1
            if spec["enableInTreeAutoscaling"]:
                res = spec["autoscalerOptions"]["resources"]
                assert res["requests"] == res["limits"], where
    assert checked > 50
    # Explicit requests still win, key by key.
    docs = c.render([CPU], ["cluster.cpuWorkers.resources.requests.cpu=500m"])
    res = dict(c.pod_templates(c.one(docs, "RayCluster")["spec"]))["cpu"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "500m", "memory": "4Gi"} and res["limits"] == {"cpu": "2", "memory": "4Gi"}


def test_dev_shm_is_left_to_kuberay(rendered, advertised):
    """KubeRay's BuildPod adds a memory-backed /dev/shm sized to the memory limit; a fixed one would replace it."""
    for where, docs in all_renders(rendered, advertised).items():
        for group, ctr in [(g, t["spec"]["containers"][0]) for s in clusters(docs) for g, t in c.pod_templates(s)]:
            assert "/dev/shm" not in [m["mountPath"] for m in ctr.get("volumeMounts", [])], (where, group)
        for spec in clusters(docs):
            for group, tmpl in c.pod_templates(spec):
                assert not [v for v in tmpl["spec"].get("volumes", []) if (v.get("emptyDir") or {}).get("medium")
                            == "Memory"], (where, group)
    err = c.render_error([CPU], ["volumeMounts[0].name=shm", "volumeMounts[0].mountPath=/dev/shm"])
    assert "volumeMounts[0].mountPath" in err and "KubeRay" in err


@pytest.mark.parametrize("autoscaling", [True, False])
def test_the_head_always_runs_as_the_charts_service_account(autoscaling):
    docs = c.render([CPU], [f"cluster.autoscaling.enabled={str(autoscaling).lower()}",
                            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/s"])
    sa = next(a for a in c.of_kind(docs, "ServiceAccount") if a["metadata"]["name"] == FULLNAME)
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/s"}
    spec = c.one(docs, "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is autoscaling
    for group, tmpl in c.pod_templates(spec):
        pod = tmpl["spec"]
        # KubeRay v1.7.0 substitutes its own account only when the head template names none, and binds the
        # autoscaler's Role to whichever account the head uses (GetHeadGroupServiceAccountName, BuildRoleBinding).
        assert pod["serviceAccountName"] == sa["metadata"]["name"], group
        assert pod["automountServiceAccountToken"] is False, group
        ray = pod["containers"][0]
        assert "/var/run/secrets/kubernetes.io/serviceaccount" not in [m["mountPath"] for m in ray.get("volumeMounts", [])]
    head = spec["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head.get("volumes", [])}
    if autoscaling:
        # The API token only in the autoscaler container, at the in-cluster path the Ray autoscaler reads.
        assert spec["autoscalerOptions"]["volumeMounts"] == [{"name": "autoscaler-api-token", "readOnly": True,
                                                             "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
        sources = volumes["autoscaler-api-token"]["projected"]["sources"]
        assert {"serviceAccountToken", "configMap", "downwardAPI"} == {k for s in sources for k in s}
    else:
        assert "autoscaler-api-token" not in volumes and "autoscalerOptions" not in spec


def _probes(docs: list[dict]) -> dict[str, dict | None]:
    """group -> its Ray container's readinessProbe (None where the chart leaves it to KubeRay)."""
    return {group: tmpl["spec"]["containers"][0].get("readinessProbe")
            for spec in clusters(docs) for group, tmpl in c.pod_templates(spec)}


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_ray_pods_are_ready_as_soon_as_the_agent_says_so(values, rendered):
    """A RayJob submits only when every pod of its cluster is Ready (KubeRay's CheckAllPodsRunning): the chart's probe
    asks the dashboard agent's /api/healthz (KubeRay's own check from Ray 2.53) from 2 s on, every 2 s, where
    KubeRay's asks from 10 s on, every 5 s (initLivenessAndReadinessProbe, common/pod.go, v1.7.0)."""
    probes = _probes(rendered[values.stem])
    assert probes
    for group, probe in probes.items():
        assert probe == {"httpGet": {"path": "/api/healthz", "port": 52365}, "initialDelaySeconds": 2,
                         "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 25}, group


def test_the_readiness_probe_follows_the_agent_port_and_yields_to_kuberay_where_asked():
    docs = c.render([CPU], ["cluster.readinessProbe.periodSeconds=3"],
                    extra=["--set-string", "cluster.cpuWorkers.rayStartParams.dashboard-agent-listen-port=52400"])
    probes = _probes(docs)
    assert probes["cpu"]["httpGet"]["port"] == 52400 and probes["head"]["httpGet"]["port"] == 52365
    assert {p["periodSeconds"] for p in probes.values()} == {3}
    # null, or a Ray without /api/healthz (before 2.53): KubeRay's probe (no readinessProbe in the template)
    assert set(_probes(c.render([CPU], ["cluster.readinessProbe=null"])).values()) == {None}
    assert set(_probes(c.render([CPU], ["rayVersion=2.52.0"])).values()) == {None}
    assert "readinessProbe" in c.render_error([CPU], ["cluster.readinessProbe.periodSeconds=0"])
