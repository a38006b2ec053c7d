"""The Helm chart (helm/shardscore) and the plain manifests (manifests/), with the real helm binary.

Custom resources are validated against the KubeRay v1.7.0 CRD schemas (see tests/chartlib.py); the rules of the
KubeRay operator itself are refused at render time (templates/_validate.tpl), each paired with a hand-written object
the real operator rejects (tests/kuberay_rejects.py, for the cluster e2e).
"""

from __future__ import annotations

import filecmp
import json
import os
import shlex
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

import chartlib as c
import kuberay_rejects as kr

CI_FILES = c.ci_values_files()
CI_IDS = [p.stem for p in CI_FILES]
CPU = c.CI_DIR / "cpu-values.yaml"
GPU = c.CI_DIR / "gpu-values.yaml"
EPHEMERAL = c.CI_DIR / "ephemeral-values.yaml"
CRONJOB = c.CI_DIR / "cronjob-values.yaml"
RAYCRONJOB = c.CI_DIR / "raycronjob-values.yaml"
FULLNAME = f"{c.RELEASE}-shardscore"
IMAGE = "shardscore:0.1.0"
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
                   "helm.sh/chart")
ADVERTISED_IDS = [a[0] for a in c.ADVERTISED]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every ci values file, and the defaults with only the required values."""
    out = {p.stem: c.render([p]) for p in CI_FILES}
    out["defaults"] = c.render_advertised()
    return out


@pytest.fixture(scope="module")
def advertised() -> dict[str, list[dict]]:
    return {name: c.render_advertised(sets, set_json, release) for name, sets, set_json, release in c.ADVERTISED}


def test_ci_values_files_cover_every_mode():
    assert {"cpu-values", "gpu-values", "ephemeral-values", "cronjob-values", "raycronjob-values"} <= set(CI_IDS)


# ------------------------------------------------------------------------------------------- helm lint

@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_helm_lint_strict(values):
    for flags in ([], ["--strict"]):
        proc = c.run_helm(["lint", str(c.CHART), "-f", str(values), *flags])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_helm3_renders_the_same_as_helm4(values):
    helm3 = c.helm3_bin()
    if not helm3:
        pytest.skip("Helm 3 not installed (scripts/install-helm.sh puts it at .tools/bin/helm3)")
    assert c.run_helm(["version", "--short"], helm3).stdout.startswith("v3.")
    lint = c.run_helm(["lint", "--strict", str(c.CHART), "-f", str(values)], helm3)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert c.render([values], helm=helm3) == c.render([values])


def test_helm3_renders_the_advertised_combinations_the_same(advertised):
    helm3 = c.helm3_bin()
    if not helm3:
        pytest.skip("Helm 3 not installed (scripts/install-helm.sh puts it at .tools/bin/helm3)")
    for name, sets, set_json, release in c.ADVERTISED:
        assert c.render_advertised(sets, set_json, release, helm=helm3) == advertised[name], name


def test_chart_metadata():
    chart = yaml.safe_load((c.CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "shardscore"
    assert (c.CHART / "values.schema.json").is_file() and (c.CHART / "templates" / "NOTES.txt").is_file()


def test_every_value_is_commented():
    """values.yaml: a comment right above every key (Helm convention, and what a platform engineer reads), except
    inside a value documented as a whole (a `# --` comment above an object such as podSecurityContext)."""
    lines = (c.CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented as a whole) of the enclosing keys
    uncommented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        stack = [(n, unit) for n, unit in stack if n < indent]
        top = i
        while top and lines[top - 1].strip().startswith("#"):
            top -= 1
        comment = lines[top].strip() if top < i else ""
        if not any(unit for _, unit in stack) and not comment:
            uncommented.append(line)
        stack.append((indent, comment.startswith("# --")))
    assert not uncommented, "values without a comment above them:\n" + "\n".join(uncommented)


# ------------------------------------------------------------------------------------------- CRD schemas

def all_renders(rendered, advertised) -> dict[str, list[dict]]:
    return {**{f"ci:{k}": v for k, v in rendered.items()}, **{f"advertised:{k}": v for k, v in advertised.items()}}


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_custom_resources_match_kuberay_crds(values, rendered):
    docs = rendered[values.stem]
    crs = c.custom_resources(docs)
    assert crs, "nothing to validate"
    errors = [e for cr in crs for e in c.crd_errors(cr)]
    assert not errors, "\n".join(errors)
    for d in docs:
        assert not c.metadata_errors(d), c.metadata_errors(d)


@pytest.mark.parametrize("name", ADVERTISED_IDS)
def test_advertised_combinations_render_objects_the_crds_accept(name, advertised):
    docs = advertised[name]
    crs = c.custom_resources(docs)
    assert crs or name == "the RayCluster only", "nothing to validate"
    errors = [e for cr in crs for e in c.crd_errors(cr)] + [e for d in docs for e in c.metadata_errors(d)]
    assert not errors, "\n".join(errors)


def test_rendered_objects_use_only_fields_the_crds_know(rendered, advertised):
    """A real API server prunes unknown fields silently: what it stores must be what the chart sent."""
    checked = 0
    for where, docs in all_renders(rendered, advertised).items():
        for cr in c.custom_resources(docs):
            assert c.pruned_fields(cr) == [], f"{where}: {cr['kind']} {cr['metadata'].get('name')}"
            checked += 1
    assert checked > 40


def test_the_pruning_check_finds_unknown_fields(rendered):
    job = c.one(rendered["ephemeral-values"], "RayJob")
    bad = json.loads(json.dumps(job))
    bad["spec"]["shutdownAfterJobFinish"] = True  # a typo the API server would drop
    head = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    head["metadata"]["generateName"] = "x-"  # the embedded ObjectMeta keeps labels/annotations/name/namespace only
    head["spec"]["containers"][0]["env"][0]["valueFromm"] = {}
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["any-flag"] = "1"  # a map: kept
    assert sorted(c.pruned_fields(bad)) == [
        "spec.rayClusterSpec.headGroupSpec.template.metadata.generateName",
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].env[0].valueFromm",
        "spec.shutdownAfterJobFinish"]


def test_crd_validation_is_not_vacuous(rendered):
    job = c.one(rendered["ephemeral-values"], "RayJob")
    assert not c.crd_errors(job)
    bad = yaml.safe_load(yaml.safe_dump(job))
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    bad["spec"]["backoffLimit"] = "1"
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = 2**31
    bad["metadata"]["name"] = "x" * 48
    errors = "\n".join(c.crd_errors(bad))
    assert "resourcez" in errors and "backoffLimit" in errors and "replicas" in errors and "longer than 47" in errors
    port = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    port["livenessProbe"] = {"httpGet": {"port": "dashboard", "path": "/"}}  # int-or-string takes a name
    port.pop("resourcez")
    assert not [e for e in c.crd_errors(bad) if "livenessProbe" in e]


def test_crd_dir_is_required(monkeypatch, tmp_path):
    monkeypatch.setenv("SHARDSCORE_CRD_DIR", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="SHARDSCORE_CRD_DIR"):
        c.crd_dir()


# ------------------------------------------------------------------------------------------- KubeRay's rules

REFUSED = [r for r in kr.REJECTIONS if r.chart]


@pytest.mark.parametrize("rejection", REFUSED, ids=[r.id for r in REFUSED])
def test_the_chart_refuses_what_kuberay_rejects(rejection):
    """The chart's half of each rule; tests/kuberay_rejects.py has the operator's (its hand-written object)."""
    ref = rejection.chart
    extra = [a for j in ref.set_json for a in ("--set-json", j)]
    for helm in filter(None, [None, c.helm3_bin()]):
        err = c.render_error(list(ref.values), list(ref.sets), helm=helm, extra=extra)
        missing = [n for n in ref.needles if n not in err]
        assert not missing, f"the refusal does not name {missing}:\n{err}"


def test_every_kuberay_rejection_has_a_chart_half_and_a_well_formed_object():
    ids = [r.id for r in kr.REJECTIONS]
    assert len(ids) == len(set(ids))
    names = [r.manifest["metadata"]["name"] for r in kr.REJECTIONS]
    assert len(names) == len(set(names)), "each hand-written object gets its own name"
    tests_here = {n for n in globals() if n.startswith("test_")}
    for r in kr.REJECTIONS:
        assert r.rejected_by in ("apiserver", "operator", "pod-security"), r.id
        assert r.message and r.kuberay, r.id
        assert r.chart or r.chart_note, f"{r.id}: neither a chart refusal nor a note on how the chart avoids it"
        if r.chart_note:  # the note names the test that shows the chart's half
            named = [w for w in r.chart_note.replace(",", " ").split() if w.startswith("test_")]
            assert named and set(named) <= tests_here, f"{r.id}: {r.chart_note}"
        if r.rejected_by == "operator":
            assert r.event_reason.startswith("Invalid"), r.id
        # The API server must store it (or refuse it for a CEL rule only, not evaluated here): the schema accepts
        # it, so it is the operator's rule (or the CEL rule, or the admission of its pods) that rejects it. Names
        # are the operator's to check (ValidateRayJobMetadata, ValidateRayCronJobSpec).
        errors = c.crd_errors(r.manifest, metadata=False)
        assert not errors and not c.pruned_fields(r.manifest), (r.id, errors)
    kinds = {r.manifest["kind"] for r in kr.REJECTIONS}
    assert kinds == {"RayJob", "RayCluster", "RayCronJob"}


# ------------------------------------------------------------------------------------------- manifests/

def manifest_files() -> list[Path]:
    return sorted(c.MANIFESTS.glob("*.yaml"))


def test_manifests_exist():
    names = {p.name for p in manifest_files()}
    assert {"raycluster.yaml", "rayjob.yaml", "rayjob-ephemeral.yaml", "scheduled.yaml"} <= names


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_generated_and_valid(path):
    text = path.read_text()
    assert text.startswith("# generated by make manifests, do not edit"), path
    docs = [d for d in yaml.safe_load_all(text) if d]
    crs = c.custom_resources(docs)
    assert crs, f"{path.name} has no KubeRay resource"
    errors = [e for cr in crs for e in c.crd_errors(cr)] + [e for d in docs for e in c.metadata_errors(d)]
    errors += [f"{cr['kind']}: {p} unknown" for cr in crs for p in c.pruned_fields(cr)]
    assert not errors, "\n".join(errors)
    assert all(d["metadata"].get("namespace") for d in docs), "kubectl apply manifests carry their namespace"
    assert all(c.image_is_pinned(i) for d in docs for i in c.images(d))


def test_manifests_are_up_to_date(tmp_path):
    proc = subprocess.run(["bash", str(c.RENDER_SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=c.ROOT)
    assert proc.returncode == 0, proc.stderr
    fresh = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert fresh == [p.name for p in manifest_files()]
    stale = [n for n in fresh if not filecmp.cmp(tmp_path / n, c.MANIFESTS / n, shallow=False)]
    assert not stale, f"manifests/ is stale, run `make manifests`: {stale}"


# ------------------------------------------------------------------------------------------- cluster semantics

def clusters(docs: list[dict]) -> list[dict]:
    """Every RayCluster spec: standalone, inside RayJobs, RayCronJob templates and the tick template."""
    specs = []
    for cr in c.custom_resources(docs):
        if cr["kind"] == "RayCluster":
            specs.append(cr["spec"])
        job = cr["spec"]["jobTemplate"] if cr["kind"] == "RayCronJob" else cr["spec"]
        if cr["kind"] != "RayCluster" and "rayClusterSpec" in job:
            specs.append(job["rayClusterSpec"])
    return specs


def all_pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for spec in clusters(docs):
        out += [(f"ray {g}", t["spec"]) for g, t in c.pod_templates(spec)]
    for cr in c.custom_resources(docs):
        job = cr["spec"].get("jobTemplate", cr["spec"])
        if "submitterPodTemplate" in job:
            out.append(("submitter", job["submitterPodTemplate"]["spec"]))
    for d in docs:
        if d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["spec"]))
        if d["kind"] == "CronJob":
            out.append(("cronjob", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def ray_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(g, t["spec"]["containers"][0]) for spec in clusters(docs) for g, t in c.pod_templates(spec)]


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
    sa = c.one(docs, "ServiceAccount")
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


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_restrictive_security_context_everywhere(values, rendered):
    pods = all_pod_specs(rendered[values.stem])
    assert pods
    for where, pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
    for spec in clusters(rendered[values.stem]):
        if spec["enableInTreeAutoscaling"]:
            assert spec["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"] is False


def test_sidecar_mode_and_the_restricted_standard():
    err = c.render_error([EPHEMERAL], ["rayJob.submissionMode=SidecarMode"])
    assert "podSecurityStandard" in err and "securityContext" in err
    job = c.one(c.render([EPHEMERAL], ["rayJob.submissionMode=SidecarMode", "podSecurityStandard=baseline"]), "RayJob")
    assert not c.crd_errors(job)
    assert "submitterPodTemplate" not in job["spec"] and "submitterConfig" not in job["spec"]
    assert "restartPolicy" not in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_credentials_reach_the_ray_containers_only(values, rendered):
    docs = rendered[values.stem]
    containers = ray_containers(docs)
    assert containers
    for where, ctr in containers:
        env = c.env_of(ctr)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[name], where
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "shardscore-s3", "key": name}, where
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.shardscore.svc:9000"
    others = [(w, ctr) for w, pod in all_pod_specs(docs) if not w.startswith("ray ") for ctr in pod["containers"]]
    assert others
    for where, ctr in others:
        assert not [e for e in ctr.get("env", []) if e["name"].startswith("AWS_")], where
        assert "envFrom" not in ctr, where


def test_the_submitter_gets_no_object_store_credentials_nor_extra_env():
    docs = c.render([CPU], ["extraEnv[0].name=AWS_SESSION_TOKEN", "extraEnv[0].valueFrom.secretKeyRef.name=s",
                            "extraEnv[0].valueFrom.secretKeyRef.key=k", "extraEnvFrom[0].secretRef.name=more",
                            "rayJob.submitter.env[0].name=HTTPS_PROXY", "rayJob.submitter.env[0].value=http://p:3128"])
    sub = c.one(docs, "RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert [e["name"] for e in sub["env"]] == ["HTTPS_PROXY"] and "envFrom" not in sub
    head = c.one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "AWS_SESSION_TOKEN" in c.env_of(head) and head["envFrom"] == [{"secretRef": {"name": "more"}}]


def test_no_credentials_without_secret_and_session_token_key():
    docs = c.render([CPU], ["objectStore.credentialsSecret.name="])
    head = c.one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(c.env_of(head))
    docs = c.render([CPU], ["objectStore.credentialsSecret.sessionTokenKey=token"])
    head = c.one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert c.env_of(head)["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "shardscore-s3", "key": "token"}


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_standard_labels(values, rendered):
    docs = rendered[values.stem]
    metas = [(d["kind"], d["metadata"]) for d in docs]
    metas += [(f"pod {w}", {"labels": t["metadata"]["labels"]}) for spec in clusters(docs)
              for w, t in c.pod_templates(spec)]
    for kind, meta in metas:
        labels = meta["labels"]
        missing = [k for k in REQUIRED_LABELS if k not in labels]
        assert not missing, f"{kind} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == c.RELEASE and labels["app.kubernetes.io/part-of"] == "shardscore"


def test_common_and_group_labels_and_annotations():
    docs = c.render([GPU], ["commonLabels.team=ml", "commonAnnotations.owner=ml-team",
                            "cluster.gpuWorkers.labels.pool=gpu", "cluster.head.annotations.note=head",
                            "rayJob.labels.kind=nightly"])
    cluster = c.one(docs, "RayCluster")
    assert cluster["metadata"]["labels"]["team"] == "ml" and cluster["metadata"]["annotations"]["owner"] == "ml-team"
    templates = dict(c.pod_templates(cluster["spec"]))
    assert templates["gpu"]["metadata"]["labels"]["pool"] == "gpu"
    assert "pool" not in templates["cpu"]["metadata"]["labels"]
    assert templates["head"]["metadata"]["annotations"] == {"note": "head", "owner": "ml-team"}
    assert c.one(docs, "RayJob")["metadata"]["labels"]["kind"] == "nightly"
    assert all(d["metadata"]["labels"]["team"] == "ml" for d in docs)


def test_image_pull_secrets_service_account_and_extra_env():
    docs = c.render([CPU], ["image.repository=registry.example.com/ml/shardscore", "image.tag=1.2.3",
                            "imagePullSecrets[0].name=regcred", "serviceAccount.name=scorer",
                            "extraEnv[0].name=LOG_LEVEL", "extraEnv[0].value=debug",
                            "cluster.cpuWorkers.env[0].name=OMP_NUM_THREADS", "cluster.cpuWorkers.env[0].value=2"])
    assert c.one(docs, "ServiceAccount")["metadata"]["name"] == "scorer"
    for where, pod in all_pod_specs(docs):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], where
        assert pod["serviceAccountName"] == "scorer", where
        ctr = pod["containers"][0]
        assert ctr["image"] == "registry.example.com/ml/shardscore:1.2.3", where
        if where.startswith("ray "):
            assert c.env_of(ctr)["LOG_LEVEL"]["value"] == "debug", where
    groups = dict(c.pod_templates(c.one(docs, "RayCluster")["spec"]))
    assert "OMP_NUM_THREADS" in c.env_of(groups["cpu"]["spec"]["containers"][0])
    assert "OMP_NUM_THREADS" not in c.env_of(groups["head"]["spec"]["containers"][0])


def everything_that_runs_ray(docs: list[dict]) -> list[dict]:
    containers = [ctr for w, pod in all_pod_specs(docs) if w.startswith("ray ") or w == "submitter"
                  for ctr in pod["containers"]]
    containers += [{"env": s["autoscalerOptions"].get("env", [])} for s in clusters(docs) if s["enableInTreeAutoscaling"]]
    return containers


def test_token_auth_is_on_by_default(rendered):
    docs = rendered["defaults"]
    assert c.one(docs, "RayCluster")["spec"]["authOptions"] == {"mode": "token"}
    # The operator injects RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (SetContainerTokenAuthEnvVars in common/pod.go)
    # only where RAY_AUTH_MODE is not set already.
    assert len(everything_that_runs_ray(docs)) == 4
    assert all("RAY_AUTH_MODE" not in c.env_of(ctr) for ctr in everything_that_runs_ray(docs))
    for name in CI_IDS:
        for spec in clusters(rendered[name]):
            assert spec["authOptions"] == {"mode": "token"}, name
    # The helm test pod reads the token from the Secret KubeRay creates for the cluster (named after it).
    test = c.one(docs, "Pod")["spec"]["containers"][0]
    assert c.env_of(test)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": "auth_token"}
    script = test["command"][-1]
    assert "x-ray-authorization" in script and "(401, 403)" in script


def test_auth_disabled():
    docs = c.render([CPU], ["rayAuth.mode=disabled"])
    assert c.one(docs, "RayCluster")["spec"]["authOptions"] == {"mode": "disabled"}
    assert len(everything_that_runs_ray(docs)) == 4
    assert all(c.env_of(ctr)["RAY_AUTH_MODE"]["value"] == "disabled" for ctr in everything_that_runs_ray(docs))
    assert "RAY_AUTH_TOKEN" not in c.env_of(c.one(docs, "Pod")["spec"]["containers"][0])


def test_autoscaling(rendered):
    spec = c.one(rendered["ephemeral-values"], "RayJob")["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    opts = spec["autoscalerOptions"]
    assert opts["securityContext"]["allowPrivilegeEscalation"] is False and opts["idleTimeoutSeconds"] == 60
    fixed = c.one(c.render([CPU], ["cluster.autoscaling.enabled=false"]), "RayCluster")["spec"]
    assert fixed["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in fixed


def test_upgrade_strategy_only_on_the_long_lived_cluster(rendered, advertised):
    cluster = c.one(rendered["defaults"], "RayCluster")["spec"]
    assert cluster["upgradeStrategy"] == {"type": "Recreate"}
    none = c.one(advertised["upgradeStrategy None"], "RayCluster")["spec"]
    assert none["upgradeStrategy"] == {"type": "None"}
    # KubeRay rejects upgradeStrategy on a cluster a RayJob creates (ValidateRayClusterUpgradeOptions).
    for where, docs in all_renders(rendered, advertised).items():
        for cr in c.custom_resources(docs):
            if cr["kind"] != "RayCluster":
                job = cr["spec"].get("jobTemplate", cr["spec"])
                assert "upgradeStrategy" not in job.get("rayClusterSpec", {}), where


def test_ephemeral_cluster_reuses_the_cluster_spec(rendered):
    job = c.one(rendered["ephemeral-values"], "RayJob")
    assert not c.of_kind(rendered["ephemeral-values"], "RayCluster")
    assert "clusterSelector" not in job["spec"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["activeDeadlineSeconds"] == 7200 and job["spec"]["backoffLimit"] == 1
    with_cluster = c.one(c.render([EPHEMERAL], ["cluster.create=true"]), "RayCluster")["spec"]
    assert with_cluster.pop("upgradeStrategy") == {"type": "Recreate"}
    assert job["spec"]["rayClusterSpec"] == with_cluster


def test_rayjob_on_the_charts_cluster(rendered):
    docs = rendered["cpu-values"]
    job, cluster = c.one(docs, "RayJob"), c.one(docs, "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]} == {"ray.io/cluster": FULLNAME}
    assert "rayClusterSpec" not in job["spec"] and "shutdownAfterJobFinishes" not in job["spec"]
    assert "backoffLimit" not in job["spec"] and "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["submissionMode"] == "K8sJobMode"
    assert job["spec"]["submitterConfig"] == {"backoffLimit": 2}
    sub = job["spec"]["submitterPodTemplate"]["spec"]
    assert sub["restartPolicy"] == "Never" and sub["containers"][0]["name"] == "ray-job-submitter"
    assert "command" not in sub["containers"][0], "KubeRay must fill in its `ray job submit` command"
    other = c.render([CPU], ["cluster.create=false", "rayJob.clusterName=shared-ray"])
    assert c.one(other, "RayJob")["spec"]["clusterSelector"] == {"ray.io/cluster": "shared-ray"}
    assert not c.of_kind(other, "RayCluster")


def test_cluster_create_and_ephemeral_resolve_from_the_mode(rendered, advertised):
    # null defaults: a long-lived cluster unless every run brings its own; rayCronJob runs bring their own.
    assert c.of_kind(rendered["defaults"], "RayCluster") and "clusterSelector" in c.one(rendered["defaults"],
                                                                                        "RayJob")["spec"]
    cron = advertised["raycronjob"]
    assert not c.of_kind(cron, "RayCluster")
    assert "rayClusterSpec" in c.one(cron, "RayCronJob")["spec"]["jobTemplate"]
    assert c.of_kind(advertised["cronjob"], "RayCluster") and "clusterSelector" in c.tick_rayjob(
        advertised["cronjob"])["spec"]
    assert not c.of_kind(advertised["ephemeral"], "RayCluster")
    assert c.of_kind(advertised["the RayCluster only"], "RayCluster")
    shared = advertised["raycronjob on the long-lived cluster"]
    assert c.one(shared, "RayCronJob")["spec"]["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": FULLNAME}


def test_submitter_settings():
    docs = c.render([CPU], ["rayJob.entrypointNumGpus=0", "rayJob.submitter.backoffLimit=5", "rayJob.metadata.owner=ml"],
                    extra=["--set-json", 'rayJob.entrypointNumCpus=0.5', "--set-json",
                           'rayJob.runtimeEnvYAML="env_vars: {A: b}"'])
    spec = c.one(docs, "RayJob")["spec"]
    assert spec["entrypointNumCpus"] == 0.5 and spec["entrypointNumGpus"] == 0
    assert spec["submitterConfig"] == {"backoffLimit": 5} and spec["metadata"] == {"owner": "ml"}
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"A": "b"}}
    http = c.one(c.render([CPU], ["rayJob.submissionMode=HTTPMode"]), "RayJob")["spec"]
    assert http["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in http


def test_deletion_strategy_passes_through(advertised):
    job = c.one(advertised["ephemeral with deletionRules"], "RayJob")["spec"]
    assert job["shutdownAfterJobFinishes"] is False and "ttlSecondsAfterFinished" not in job
    assert [r["policy"] for r in job["deletionStrategy"]["deletionRules"]] == ["DeleteCluster", "DeleteSelf"]
    legacy = c.one(advertised["DeleteSelf on the long-lived cluster"], "RayJob")["spec"]
    assert legacy["deletionStrategy"] == {"onSuccess": {"policy": "DeleteSelf"}, "onFailure": {"policy": "DeleteNone"}}


def test_helm_test_hook(rendered):
    pods = c.of_kind(rendered["cpu-values"], "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{FULLNAME}-head-svc.{c.NAMESPACE}.svc:8265" in script
    assert "/api/gcs_healthz" in script and "/api/jobs/" in script
    compile(script, "helm-test", "exec")  # the test pod's Python is valid
    assert not c.of_kind(rendered["ephemeral-values"], "Pod"), "no long-lived cluster, nothing to test"


# ------------------------------------------------------------------------------------------- NetworkPolicy

def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, val = e["key"] in labels, labels.get(e["key"])
        ok = {"In": has and val in e.get("values", []), "NotIn": not has or val not in e.get("values", []),
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def admitted_ports(policies: list[dict], pod_labels: dict, source_labels: dict, source_ns: str = c.NAMESPACE,
                   source_ns_labels: dict | None = None) -> set | None:
    """The ports a source pod may reach on a pod under these NetworkPolicies: None = any port, set() = none."""
    ns_labels = source_ns_labels or {"kubernetes.io/metadata.name": source_ns}
    applying = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels)]
    if not applying:
        return None
    ports: set = set()
    for policy in applying:
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "ipBlock" in peer:
                    continue
                in_ns = selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer \
                    else source_ns == c.NAMESPACE
                if in_ns and selects(peer.get("podSelector", {}), source_labels):
                    if "ports" not in rule:
                        return None
                    ports |= {p["port"] for p in rule["ports"]}
    return ports


def test_network_policy_admits_the_release_and_the_operator_only(rendered):
    docs = rendered["defaults"]
    policies = c.of_kind(docs, "NetworkPolicy")
    assert {p["metadata"]["name"] for p in policies} == {f"{FULLNAME}-ray-head", f"{FULLNAME}-ray-worker"}
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies)
    pods = dict(c.pod_templates(c.one(docs, "RayCluster")["spec"]))
    head, worker = pods["head"]["metadata"]["labels"], pods["cpu"]["metadata"]["labels"]
    submitter = c.one(docs, "RayJob")["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    test_pod = c.one(docs, "Pod")["metadata"]["labels"]
    assert admitted_ports(policies, head, worker) is None and admitted_ports(policies, head, head) is None
    assert admitted_ports(policies, worker, head) is None and admitted_ports(policies, worker, worker) is None
    assert admitted_ports(policies, head, submitter) == {8265} and admitted_ports(policies, head, test_pod) == {8265}
    assert admitted_ports(policies, worker, submitter) == set()
    operator = {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator"}
    assert admitted_ports(policies, head, operator, "kuberay-system") == {8265}
    assert admitted_ports(policies, head, operator, "elsewhere") == set()
    # Another release's pods and any other pod of the namespace get nothing.
    stranger = {**worker, "app.kubernetes.io/instance": "other"}
    assert admitted_ports(policies, head, stranger) == set() and admitted_ports(policies, head, {"app": "x"}) == set()
    # The tick only talks to the API server.
    tick = c.one(advertised_cronjob(), "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert admitted_ports(policies, head, tick) == set()


def advertised_cronjob() -> list[dict]:
    return c.render_advertised(["schedule=@daily"])


def test_network_policy_covers_ephemeral_clusters(rendered):
    docs = rendered["ephemeral-values"]
    policies = c.of_kind(docs, "NetworkPolicy")
    job = c.one(docs, "RayJob")["spec"]
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert admitted_ports(policies, head, job["submitterPodTemplate"]["metadata"]["labels"]) == {8265}


def test_network_policy_operator_out_of_cluster_and_metrics(advertised):
    policy = [p for p in c.of_kind(advertised["operator out of cluster"], "NetworkPolicy")
              if p["metadata"]["name"].endswith("-ray-head")][0]
    operator_rule = [r for r in policy["spec"]["ingress"] if any("ipBlock" in p for p in r["from"])]
    assert operator_rule == [{"from": [{"ipBlock": {"cidr": "10.0.0.10/32"}}], "ports": [{"protocol": "TCP", "port": 8265}]}]
    assert not [p for r in policy["spec"]["ingress"] for p in r["from"] if "namespaceSelector" in p]
    err = c.render_error([CPU], ["networkPolicy.operator.namespace="])
    assert "networkPolicy.operator" in err
    extras = c.of_kind(advertised["optional extras"], "NetworkPolicy")
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    head = dict(c.pod_templates(c.one(advertised["optional extras"], "RayCluster")["spec"]))["head"]
    assert admitted_ports(extras, head["metadata"]["labels"], prometheus, "monitoring") == {8080}
    assert admitted_ports(extras, head["metadata"]["labels"], prometheus, "elsewhere") == set()
    assert not c.of_kind(advertised["no NetworkPolicy"], "NetworkPolicy")


# ------------------------------------------------------------------------------------------- optional objects

def test_optional_objects_are_off_by_default(rendered):
    kinds = {d["kind"] for d in rendered["defaults"]}
    assert not {"PodMonitor", "PodDisruptionBudget"} & kinds
    head = c.one(rendered["defaults"], "RayCluster")["spec"]["headGroupSpec"]["template"]
    assert "cluster-autoscaler.kubernetes.io/safe-to-evict" not in (head["metadata"].get("annotations") or {})
    assert all("topologySpreadConstraints" not in t["spec"] for t in
               dict(c.pod_templates(c.one(rendered["defaults"], "RayCluster")["spec"])).values())


def test_optional_objects(advertised):
    docs = advertised["optional extras"]
    monitor = c.one(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    pods = dict(c.pod_templates(c.one(docs, "RayCluster")["spec"]))
    assert selects(monitor["spec"]["selector"], pods["head"]["metadata"]["labels"])
    assert selects(monitor["spec"]["selector"], pods["cpu"]["metadata"]["labels"])
    pdb = c.one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 0
    assert selects(pdb["spec"]["selector"], pods["head"]["metadata"]["labels"])
    assert not selects(pdb["spec"]["selector"], pods["cpu"]["metadata"]["labels"])
    assert pods["head"]["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert pods["cpu"]["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert "topologySpreadConstraints" not in pods["head"]["spec"]


# ------------------------------------------------------------------------------------------- images

def test_no_image_is_unpinned(rendered, advertised):
    seen = set()
    for where, docs in all_renders(rendered, advertised).items():
        for d in docs:
            for image in c.images(d):
                assert c.image_is_pinned(image), f"{where}: {d['kind']} {d['metadata']['name']}: {image}"
                seen.add(image)
    assert seen == {IMAGE, "shardscore:0.1.0-cu128"}
    assert not c.image_is_pinned("shardscore:latest") and not c.image_is_pinned("registry:5000/shardscore")
    assert c.image_is_pinned("registry:5000/shardscore:1.0") and c.image_is_pinned("shardscore@sha256:" + "0" * 64)


@pytest.mark.parametrize("sets", [["image.tag=latest"], ["cluster.gpuWorkers.enabled=true",
                                                         "cluster.gpuWorkers.image.tag=latest"]])
def test_latest_is_refused(sets):
    err = c.render_error([CPU], sets)
    assert "latest" in err and "tag" in err


# ------------------------------------------------------------------------------------------- the entrypoint

def entrypoint_argv(job: dict) -> list[str]:
    return shlex.split(job["spec"]["entrypoint"])


def test_entrypoint_cpu(rendered):
    assert entrypoint_argv(c.one(rendered["cpu-values"], "RayJob")) == [
        "shardscore", "run", "--input", "s3://shardscore/input", "--output", "s3://shardscore/output",
        "--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=8", "--strategy", "tasks",
        "--max-failed-shards", "0", "--grace-period", "20", "--num-cpus-per-worker", "1"]


def test_entrypoint_gpu(rendered):
    assert entrypoint_argv(c.one(rendered["gpu-values"], "RayJob")) == [
        "shardscore", "run", "--input", "s3://shardscore/input", "--output", "s3://shardscore/output-gpu",
        "--model", "shardscore.models.torch_model:load_model", "--model-arg", "path=/models/model.pt",
        "--strategy", "actors", "--device", "cuda", "--batch-size", "4096", "--num-actors", "2",
        "--grace-period", "20", "--num-gpus-per-worker", "1", "--key-columns", "id"]


def test_entrypoint_every_flag():
    sets = ["job.input=/data/in", "job.output=s3://b/out", "job.model=pkg.mod:load", "job.modelArgs.b=2",
            "job.modelArgs.a=x=y", "job.strategy=actors", "job.numActors=3", "job.numCpusPerWorker=0.5",
            # --set keeps 0.5 a string "0.5": the schema takes numeric strings for fractional fields
            "job.numGpusPerWorker=0.25", "job.memoryPerWorker=8589934592", "job.maxInFlight=16", "job.device=cuda",
            "job.batchSize=1024", "job.maxRowsPerShard=500000", "job.keyColumns={id,ts}", "job.maxFailedShards=2",
            "job.maxShardsPerTask=8", "job.maxRetries=0",
            "job.overwrite=true", "job.progressInterval=30", "job.summaryJson=/tmp/summary.json",
            "job.pool=nightly", "job.poolIdleTimeout=4000", "job.gracePeriod=7.5", "job.extraArgs={--foo,bar}"]
    argv = entrypoint_argv(c.one(c.render([CPU], sets), "RayJob"))
    assert argv[:2] == ["shardscore", "run"]
    pairs = {}
    rest = argv[2:]
    flags = [a for a in rest if a.startswith("--")]
    assert flags.count("--model-arg") == 3 and rest[-2:] == ["--foo", "bar"]
    i = 0
    while i < len(rest) - 2:
        if rest[i] in ("--overwrite",):
            pairs[rest[i]] = True
            i += 1
        elif rest[i] == "--model-arg":
            pairs.setdefault("--model-arg", []).append(rest[i + 1])
            i += 2
        else:
            pairs[rest[i]] = rest[i + 1]
            i += 2
    assert pairs == {
        "--input": "/data/in", "--output": "s3://b/out", "--model": "pkg.mod:load", "--model-arg": ["a=x=y", "b=2", "payload_mb=8"],
        "--strategy": "actors", "--num-actors": "3", "--num-cpus-per-worker": "0.5", "--num-gpus-per-worker": "0.25",
        "--memory-per-worker": "8589934592", "--max-in-flight": "16", "--device": "cuda", "--batch-size": "1024",
        "--max-rows-per-shard": "500000", "--key-columns": "id,ts", "--max-failed-shards": "2", "--overwrite": True,
        "--max-shards-per-task": "8", "--max-retries": "0", "--pool": "nightly", "--pool-idle-timeout": "4000",
        "--progress-interval": "30", "--summary-json": "/tmp/summary.json", "--grace-period": "7.5"}


def test_large_integers_from_values_files_keep_their_digits(rendered):
    argv = entrypoint_argv(c.one(rendered["ephemeral-values"], "RayJob"))
    assert argv[argv.index("--memory-per-worker") + 1] == "2147483648"
    docs = c.render([CPU], ["job.memoryPerWorker=2GiB"])
    argv = entrypoint_argv(c.one(docs, "RayJob"))
    assert argv[argv.index("--memory-per-worker") + 1] == "2GiB"
    docs = c.render([CPU], extra=["--set-json", 'job.modelArgs={"rows": 10000000, "scale": 0.5}'])
    argv = entrypoint_argv(c.one(docs, "RayJob"))
    assert "rows=10000000" in argv and "scale=0.5" in argv


def submitter_then_head_argv(entrypoint: str, env: dict | None = None) -> list[str]:
    """The argv the head runs: the submitter's bash expands the entrypoint (KubeRay puts it after `ray job submit
    ... --`), `ray job submit` joins the words with shlex.join (Ray 2.60 on Linux), the head runs it with sh -c."""
    words = subprocess.run(["bash", "-c", f'printf "%s\\0" {entrypoint}'], capture_output=True, text=True, check=True,
                           env={"PATH": os.environ["PATH"], **(env or {})}).stdout.split("\0")[:-1]
    joined = shlex.join(words)
    return subprocess.run(["sh", "-c", f'printf "%s\\0" {joined}'], capture_output=True, text=True,
                          check=True).stdout.split("\0")[:-1]


@pytest.mark.parametrize("values", [CPU, GPU, EPHEMERAL], ids=lambda p: p.stem)
def test_entrypoint_survives_both_shells(values, rendered):
    job = c.one(rendered[values.stem], "RayJob")
    assert submitter_then_head_argv(job["spec"]["entrypoint"]) == entrypoint_argv(job)


# ------------------------------------------------------------------------------------------- schedules

def tick_output(entrypoint: str, rayjob_name: str) -> str:
    argv = submitter_then_head_argv(entrypoint, {"SHARDSCORE_TICK_JOB": rayjob_name})
    return argv[argv.index("--output") + 1]


def utc_stamp(minutes: int) -> str:
    return datetime.fromtimestamp(minutes * 60, tz=timezone.utc).strftime("%Y%m%dT%H%MZ")


def test_cronjob(rendered):
    docs = rendered["cronjob-values"]
    assert not c.of_kind(docs, "RayJob") and not c.of_kind(docs, "RayCronJob")
    cron = c.one(docs, "CronJob")
    assert cron["apiVersion"] == "batch/v1" and cron["metadata"]["name"] == f"{FULLNAME}-tick"
    spec = cron["spec"]
    assert spec["schedule"] == "30 2 * * *" and spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] == 300
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["suspend"] is False
    job = spec["jobTemplate"]["spec"]
    assert "activeDeadlineSeconds" not in job
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == f"{FULLNAME}-tick"
    assert pod["automountServiceAccountToken"] is True
    ctr = pod["containers"][0]
    # The project's own image (the one the Ray pods run), its `shardscore tick`, the chart's tick.json.
    assert ctr["image"] == IMAGE and ctr["command"] == ["shardscore", "tick", "--config", "/etc/shardscore/tick.json"]
    env = c.env_of(ctr)
    assert env["TICK_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert env["TICK_JOB_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/shardscore"]]["configMap"]["name"] == f"{FULLNAME}-tick"
    # RBAC: exactly the tick's three calls, on rayjobs, in the release namespace.
    role = c.one(docs, "Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "delete"]}]
    assert not c.of_kind(docs, "ClusterRole") and not c.of_kind(docs, "ClusterRoleBinding")
    binding = c.one(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{FULLNAME}-tick", "namespace": c.NAMESPACE}]
    tick_sa = [sa for sa in c.of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == f"{FULLNAME}-tick"]
    assert tick_sa and tick_sa[0]["automountServiceAccountToken"] is False, "only the tick pod mounts the token"


def test_the_tick_job_fails_at_once_when_a_retry_cannot_help():
    tick = pytest.importorskip("shardscore.k8s.tick", reason="the shardscore job package is not installed (make venv)")
    job = c.one(c.render([CRONJOB]), "CronJob")["spec"]["jobTemplate"]["spec"]
    rules = job["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"][0]["onExitCodes"]
    assert fail == {"containerName": "tick", "operator": "In", "values": sorted({tick.TickError.exit_code,
                                                                                  tick.EXIT_FINAL})}
    assert tick.EXIT_RETRY not in fail["values"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_the_tick_rayjob(rendered):
    docs = rendered["cronjob-values"]
    cfg = c.tick_config(docs)
    assert cfg["namePrefix"] == FULLNAME and cfg["output"] == "s3://shardscore/scheduled"
    assert cfg["argv"][cfg["argv"].index("--output") + 1] == "s3://shardscore/scheduled"
    assert cfg["wait"] is True and cfg["pollSeconds"] == 15 and cfg["deadlineSeconds"] is None
    assert "entrypoint" not in cfg["rayJob"]["spec"] and "name" not in cfg["rayJob"]["metadata"]
    job = c.tick_rayjob(docs)
    assert not c.crd_errors(job) and not c.pruned_fields(job)
    assert job["metadata"]["name"] == f"{FULLNAME}-{c.TICK_MINUTES}" and len(job["metadata"]["name"]) <= 47
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": c.TICK_JOB,
                                                   "uid": c.TICK_JOB_UID}]
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == c.RELEASE
    assert "rayClusterSpec" in job["spec"]
    # Its output is the tick's, written literally: the head gets it through both shells.
    argv = submitter_then_head_argv(job["spec"]["entrypoint"])
    assert argv[argv.index("--output") + 1] == f"s3://shardscore/scheduled/run={utc_stamp(c.TICK_MINUTES)}" == \
        "s3://shardscore/scheduled/run=20251121T1330Z"
    sub = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert "SHARDSCORE_TICK_JOB" not in c.env_of(sub)
    # A retried tick (same Job) makes the very same RayJob; the next tick another one.
    assert c.tick_rayjob(docs) == job
    assert c.tick_rayjob(docs, f"{FULLNAME}-tick-{c.TICK_MINUTES + 60}")["metadata"]["name"] == \
        f"{FULLNAME}-{c.TICK_MINUTES + 60}"


def test_cronjob_options(advertised):
    docs = c.render([CRONJOB], ["cronJob.concurrencyPolicy=Replace", "cronJob.startingDeadlineSeconds=60",
                                "cronJob.successfulJobsHistoryLimit=1", "cronJob.deadlineSeconds=3600",
                                "cronJob.waitForCompletion=false", "cronJob.pollSeconds=30", "suspend=true"])
    spec = c.one(docs, "CronJob")["spec"]
    assert spec["concurrencyPolicy"] == "Replace" and spec["startingDeadlineSeconds"] == 60
    assert spec["successfulJobsHistoryLimit"] == 1 and spec["suspend"] is True
    # The tick deletes its RayJob at the deadline; the Job's own deadline is a later backstop.
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600 + 30 + 120
    cfg = c.tick_config(docs)
    assert (cfg["deadlineSeconds"], cfg["wait"], cfg["pollSeconds"]) == (3600, False, 30)


def test_raycronjob(rendered):
    docs = rendered["raycronjob-values"]
    assert not c.of_kind(docs, "CronJob") and not c.of_kind(docs, "RayJob") and not c.of_kind(docs, "RayCluster")
    cron = c.one(docs, "RayCronJob")
    assert cron["metadata"]["name"] == FULLNAME and len(FULLNAME) <= 36
    assert cron["spec"]["schedule"] == "@hourly" and cron["spec"]["suspend"] is False
    job = cron["spec"]["jobTemplate"]
    # Its own cluster by default: KubeRay deletes nothing in clusterSelector mode, so children would pile up.
    assert "clusterSelector" not in job and job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] == 300
    assert job["submissionMode"] == "K8sJobMode"
    sub = c.env_of(job["submitterPodTemplate"]["spec"]["containers"][0])
    assert sub["SHARDSCORE_TICK_JOB"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/job-name']"
    # children are <name>-<unix minutes>; their submitter Jobs carry the same name.
    outputs = {m: tick_output(job["entrypoint"], f"{FULLNAME}-{m}") for m in (29395530, 29395590)}
    assert outputs == {29395530: "s3://shardscore/hourly/run=20251121T1330Z",
                       29395590: "s3://shardscore/hourly/run=20251121T1430Z"}
    assert outputs == {m: f"s3://shardscore/hourly/run={utc_stamp(m)}" for m in outputs}
    rest = submitter_then_head_argv(job["entrypoint"], {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-29395530"})
    assert rest[:5] == ["shardscore", "run", "--input", "s3://shardscore/input", "--output"]
    assert rest[6:] == ["--model", "shardscore.models.dummy:load_model", "--grace-period", "20"]


def test_tick_output_is_this_minute_for_a_fresh_tick(rendered):
    minutes = int(time.time() // 60)
    job = c.one(rendered["raycronjob-values"], "RayCronJob")["spec"]["jobTemplate"]
    assert tick_output(job["entrypoint"], f"{FULLNAME}-{minutes}").endswith(f"/run={utc_stamp(minutes)}")


def test_one_shot_output_is_not_per_tick(rendered):
    argv = entrypoint_argv(c.one(rendered["cpu-values"], "RayJob"))
    assert argv[argv.index("--output") + 1] == "s3://shardscore/output"
    sub = c.one(rendered["cpu-values"], "RayJob")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert "SHARDSCORE_TICK_JOB" not in c.env_of(sub)


def test_long_release_names_fit_kuberay_limits(advertised):
    cron = c.one(advertised["long release name, raycronjob"], "RayCronJob")
    # KubeRay allows RayCronJob names of 36 (MaxRayCronJobNameLength), so that <name>-<10-digit minutes> fits 47.
    assert len(cron["metadata"]["name"]) == 36 and not c.crd_errors(cron)
    assert len(cron["metadata"]["name"]) + len(f"-{2**32}") <= 47
    docs = advertised["long release name, cronjob"]
    cronjob = c.one(docs, "CronJob")["metadata"]["name"]
    assert len(cronjob) <= 52
    job = c.tick_rayjob(docs, f"{cronjob}-{c.TICK_MINUTES}")
    assert not c.crd_errors(job), c.crd_errors(job)
    for d in advertised["long release name"]:
        assert not c.metadata_errors(d), c.metadata_errors(d)


# ------------------------------------------------------------------------------------------- rejected values

REJECTED = [
    # (id, values files, --set, text the error must contain): the schema and the chart's own rules
    ("unknown strategy", [CPU], ["job.strategy=batch"], "strategy"),
    ("unknown device", [CPU], ["job.device=tpu"], "device"),
    ("negative replicas", [CPU], ["cluster.cpuWorkers.replicas=-1"], "replicas"),
    ("negative maxReplicas", [CPU], ["cluster.cpuWorkers.maxReplicas=-2"], "maxReplicas"),
    ("replicas above maxReplicas", [GPU], ["cluster.gpuWorkers.replicas=3"], "cluster.gpuWorkers.replicas"),
    ("bad cron", [CRONJOB], ["schedule=every night"], "schedule"),
    ("six-field cron", [CRONJOB], ["schedule=0 30 2 * * *"], "schedule"),
    ("cron with TZ prefix", [CRONJOB], ["schedule=CRON_TZ=UTC 0 2 * * *"], "schedule"),
    ("missing input", [CPU], ["job.input="], "input"),
    ("missing output", [CPU], ["job.output="], "output"),
    ("missing model", [CPU], ["job.model="], "model"),
    ("inline access key", [CPU], ["objectStore.accessKeyId=AKIAEXAMPLE"], "accessKeyId"),
    ("inline secret in credentialsSecret", [CPU], ["objectStore.credentialsSecret.secretAccessKey=abc"],
     "secretAccessKey"),
    ("inline secret env", [CPU], ["extraEnv[0].name=AWS_SECRET_ACCESS_KEY", "extraEnv[0].value=abc"], "extraEnv"),
    ("inline secret in the submitter's env", [CPU], ["rayJob.submitter.env[0].name=AWS_ACCESS_KEY_ID",
                                                     "rayJob.submitter.env[0].value=abc"], "submitter"),
    ("zero GPUs per pod", [GPU], ["cluster.gpuWorkers.gpusPerPod=0"], "gpusPerPod"),
    ("unknown submission mode", [CPU], ["rayJob.submissionMode=Batch"], "submissionMode"),
    ("InteractiveMode", [CPU], ["rayJob.submissionMode=InteractiveMode"], "submissionMode"),
    ("unknown schedule mode", [CRONJOB], ["scheduleMode=kubernetes"], "scheduleMode"),
    ("shell characters in input", [CPU], ["job.input=s3://b/in; rm -rf /"], "input"),
    ("quote in a model arg", [CPU], ["job.modelArgs.path=/models/it's.pt"], "modelArgs"),
    ("unknown top-level value", [CPU], ["workers=3"], "workers"),
    ("unknown auth mode", [CPU], ["rayAuth.mode=none"], "mode"),
    ("negative backoffLimit", [EPHEMERAL], ["rayJob.backoffLimit=-1"], "backoffLimit"),
    ("memory that is not a size", [CPU], ["job.memoryPerWorker=lots"], "memoryPerWorker"),
    ("no worker group", [CPU], ["cluster.cpuWorkers.enabled=false"], "worker group"),
    ("no cluster to run on", [CPU], ["cluster.create=false"], "rayJob.clusterName"),
    ("schedule with HTTPMode", [RAYCRONJOB], ["rayJob.submissionMode=HTTPMode"], "K8sJobMode"),
    ("pool name with capitals", [CPU], ["job.strategy=actors", "job.pool=Nightly"], "pool"),
    ("pool without actors", [CPU], ["job.pool=nightly"], "job.pool"),
    ("removed sharedMemorySize", [CPU], ["cluster.sharedMemorySize=1Gi"], "sharedMemorySize"),
    ("removed kubectl image", [CRONJOB], ["cronJob.kubectlImage.tag=1.33"], "kubectlImage"),
    ("a label value too long", [CPU], ["commonLabels.team=" + "x" * 64], "commonLabels"),
    ("a label key with spaces", [CPU], ["cluster.head.labels.a b=c"], "a b"),
    ("unknown upgrade strategy", [CPU], ["cluster.upgradeStrategy=RollingUpdate"], "upgradeStrategy"),
    ("unknown Pod Security Standard", [CPU], ["podSecurityStandard=strict"], "podSecurityStandard"),
    ("an operator CIDR that is not one", [CPU], ["networkPolicy.operator.ipBlocks[0]=api-server"], "ipBlocks"),
    ("deletion rule with an unknown status", [EPHEMERAL],
     ["rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=DONE",
      "rayJob.deletionStrategy.deletionRules[0].policy=DeleteSelf"], "jobStatus"),
    ("a negative deletion TTL", [EPHEMERAL],
     ["rayJob.deletionStrategy.deletionRules[0].condition.jobStatus=FAILED",
      "rayJob.deletionStrategy.deletionRules[0].condition.ttlSeconds=-1",
      "rayJob.deletionStrategy.deletionRules[0].policy=DeleteSelf"], "ttlSeconds"),
]


@pytest.mark.parametrize("files,sets,needle", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_bad_values_are_rejected(files, sets, needle):
    err = c.render_error(files, sets)
    assert needle in err, err
    helm3 = c.helm3_bin()
    if helm3:  # Helm 3 validates the schema with another library: the same values must fail there too
        err3 = c.render_error(files, sets, helm=helm3)
        assert needle in err3, err3


# ------------------------------------------------------------------------------------------- NOTES, kind e2e values

def notes(values: list[Path], sets: list[str] = ()) -> str:
    args = [c.helm_bin(), "install", c.RELEASE, str(c.CHART), "-n", c.NAMESPACE, "--dry-run=client"]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[proc.stdout.index("NOTES:"):]


@pytest.mark.parametrize("values,needles", [
    (CPU, ["kubectl -n shardscore get rayjob scoring-shardscore", "logs -f job/scoring-shardscore", "ray job logs",
           "Output: s3://shardscore/output", "helm test scoring", "upgradeStrategy Recreate",
           "get secret scoring-shardscore -o jsonpath='{.data.auth_token}'", "NetworkPolicies",
           "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="]),  # the ray CLI sends the token only in token mode
    (CRONJOB, ["CronJob scoring-shardscore-tick", "s3://shardscore/scheduled/run=<UTC YYYYMMDDTHHMMZ>",
               "create job --from=cronjob/scoring-shardscore-tick", "each on its own cluster"]),
    (RAYCRONJOB, ["RayCronJob scoring-shardscore (needs the operator's RayCronJob feature gate)",
                  "get rayjobs -l ray.io/cronjob-name=scoring-shardscore", "each on its own cluster"]),
], ids=["cpu", "cronjob", "raycronjob"])
def test_notes(values, needles):
    text = notes([values])
    for needle in needles:
        assert needle in text, text


def test_notes_list_raycronjob_children_by_kuberays_label():
    """KubeRay labels a RayCronJob's children ray.io/cronjob-name=<name> (constructRayJob in
    raycronjob_controller.go) and copies none of the RayCronJob's own labels: the chart's instance label finds none."""
    text = notes([RAYCRONJOB], ["rayJob.ephemeralCluster=false", "cluster.create=true"])
    assert "-l ray.io/cronjob-name=scoring-shardscore" in text and "rayjobs -l app.kubernetes.io/instance" not in text
    assert "KubeRay deletes no child" in text


E2E_OVERLAY = c.ROOT / "tests" / "e2e_cluster" / "values" / "small-nodes.yaml"


E2E_OVERLAY_CHANGES = {"resources", "idleTimeoutSeconds"}


def _without_resources(obj):
    """obj without the fields the cluster e2e's overlay may change: pod sizes and the autoscaler's idle timeout (also
    inside the tick's JSON, which holds the RayJob it creates)."""
    if isinstance(obj, str) and obj.startswith("{"):
        return _without_resources(json.loads(obj))
    if isinstance(obj, dict):
        return {k: _without_resources(v) for k, v in obj.items() if k not in E2E_OVERLAY_CHANGES}
    if isinstance(obj, list):
        return [_without_resources(v) for v in obj]
    return obj


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_cluster_e2e_overlay_changes_only_sizes(values, rendered):
    """tests/e2e_cluster installs every ci values file with small-nodes.yaml on top: what it proves about the ci
    files holds only if the overlay changes nothing but sizes and the idle timeout, and what it renders is still valid."""
    docs = c.render([values, E2E_OVERLAY])
    errors = [e for cr in c.custom_resources(docs) for e in c.crd_errors(cr)]
    assert not errors, errors
    assert _without_resources(docs) == _without_resources(rendered[values.stem])
    assert docs != rendered[values.stem], "the overlay changed no size"


# ------------------------------------------------------------------------------------------- stopping a run

@pytest.mark.parametrize("grace,stop_wait", [(None, 35), ("7.5", 23), ("0", 15), ("600", 615)])
@pytest.mark.parametrize("values", [CPU, EPHEMERAL, CRONJOB], ids=lambda p: p.stem)
def test_every_ray_pod_outlasts_the_runs_grace_period_by_the_derived_stop_wait(values, grace, stop_wait):
    """One value, job.gracePeriod, sets the run's --grace-period, Ray's job stop wait on the head (JobSupervisor.run
    SIGKILLs the driver after RAY_JOB_STOP_WAIT_TIME_S, default 3 s) and every Ray pod's termination grace, during
    which the preStop hook stops the Ray jobs (head) or waits for them (workers)."""
    docs = c.render([values], [f"job.gracePeriod={grace}"] if grace else [])
    words = entrypoint_argv(c.tick_rayjob(docs) if values == CRONJOB else c.one(docs, "RayJob"))
    assert words[words.index("--grace-period") + 1] == (grace or "20"), words
    specs = clusters(docs)
    assert specs
    for spec in specs:
        for group, tmpl in c.pod_templates(spec):
            head = group == "head"
            container = tmpl["spec"]["containers"][0]
            assert tmpl["spec"]["terminationGracePeriodSeconds"] == stop_wait + 15, group
            hook = container["lifecycle"]["preStop"]["exec"]["command"]
            assert hook == ["python", "-m", "shardscore.k8s.podstop", "--container-log",
                            *(["--stop-jobs", "--timeout", str(stop_wait + 15)] if head else
                              ["--timeout", str(stop_wait)])], (group, hook)
            env = c.env_of(container)
            if head:
                assert env["RAY_JOB_STOP_WAIT_TIME_S"]["value"] == str(stop_wait), group
            else:
                assert "RAY_JOB_STOP_WAIT_TIME_S" not in env, group


@pytest.mark.parametrize("sets", [["extraEnv[0].name=RAY_JOB_STOP_WAIT_TIME_S", "extraEnv[0].value=3"],
                                  ["cluster.head.env[0].name=RAY_JOB_STOP_WAIT_TIME_S", "cluster.head.env[0].value=3"]])
def test_the_job_stop_wait_is_refused_beside_the_grace_period(sets):
    err = c.render_error([CPU], sets)
    assert "RAY_JOB_STOP_WAIT_TIME_S" in err and "job.gracePeriod" in err, err


def test_the_grace_period_takes_seconds_from_0_to_3600():
    for grace in ("0", "2.5", "3600"):
        assert c.render([CPU], [f"job.gracePeriod={grace}"])
    for grace in ("-1", "3601", "soon"):
        assert "gracePeriod" in c.render_error([CPU], [f"job.gracePeriod={grace}"]), grace


# ------------------------------------------------------------------------------------------- the job's own CLI

ALL_ENTRYPOINTS = [("cpu-values", "RayJob"), ("gpu-values", "RayJob"), ("ephemeral-values", "RayJob"),
                   ("raycronjob-values", "RayCronJob"), ("cronjob-values", "tick")]


@pytest.mark.parametrize("name,kind", ALL_ENTRYPOINTS, ids=[e[0] for e in ALL_ENTRYPOINTS])
def test_entrypoints_pass_the_jobs_own_option_checks(name, kind, rendered):
    """The argv the head runs, parsed and validated by shardscore's own CLI parser and RunConfig checks."""
    cli = pytest.importorskip("shardscore.cli", reason="the shardscore job package is not installed (make venv)")
    docs = rendered[name]
    if kind == "RayJob":
        entrypoint = c.one(docs, "RayJob")["spec"]["entrypoint"]
    elif kind == "RayCronJob":
        entrypoint = c.one(docs, "RayCronJob")["spec"]["jobTemplate"]["entrypoint"]
    else:
        entrypoint = c.tick_rayjob(docs)["spec"]["entrypoint"]
    argv = submitter_then_head_argv(entrypoint, {"SHARDSCORE_TICK_JOB": f"{FULLNAME}-29395530"})
    assert argv[:2] == ["shardscore", "run"]
    args = cli._parser().parse_args(argv[1:])
    cfg = cli.config.load(cli._flags(args), env={}).validate()
    assert cfg.input and cfg.output and cfg.model
