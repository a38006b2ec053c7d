from __future__ import annotations

import pytest

import chartlib as c
from chartlib import CI_FILES, CI_IDS, CPU, EPHEMERAL, FULLNAME, all_pod_specs, clusters


def ray_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    return [(g, t["spec"]["containers"][0]) for spec in clusters(docs) for g, t in c.pod_templates(spec)]


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


REPORT = f"{FULLNAME}-report"
REPORT_MOUNT = "/var/run/secrets/shardscore.io/rayjob-report"


def report_mounts(docs: list[dict]) -> dict[str, list[str]]:
    """Each Ray pod template's mount paths of the reporter's token, by group."""
    return {g: [m["mountPath"] for m in t["spec"]["containers"][0].get("volumeMounts", [])
                if m["name"] == "rayjob-report-token"] for spec in clusters(docs) for g, t in c.pod_templates(spec)}


@pytest.mark.parametrize(("values", "names"), [(CPU, [FULLNAME]), (EPHEMERAL, [FULLNAME]), (c.CRONJOB, None),
                                               (c.RAYCRONJOB, None)], ids=["cpu", "ephemeral", "cronjob", "raycronjob"])
def test_the_driver_reports_on_its_rayjob_with_least_privilege(values, names):
    """Issue 22 §1: the head's Ray container alone mounts the reporter's token, whose Role may get and patch this
    release's RayJob (any RayJob of the namespace with a schedule: their names carry the tick's time) and create
    Events, nothing else."""
    docs = c.render([values])
    role = next(r for r in c.of_kind(docs, "Role") if r["metadata"]["name"] == REPORT)
    rayjobs = {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["get", "patch"]}
    assert role["rules"] == [rayjobs | ({"resourceNames": names} if names else {}),
                             {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    binding = next(b for b in c.of_kind(docs, "RoleBinding") if b["metadata"]["name"] == REPORT)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": REPORT, "namespace": c.NAMESPACE}]
    secret = next(s for s in c.of_kind(docs, "Secret") if s["metadata"]["name"] == f"{REPORT}-token")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == REPORT
    mounts = report_mounts(docs)
    assert mounts.pop("head") == [REPORT_MOUNT] and mounts and not any(mounts.values()), report_mounts(docs)


def test_without_report_progress_there_is_no_account_no_role_and_no_token():
    docs = c.render([CPU], ["rayJob.reportProgress=false"])
    assert not [d for d in docs if d["metadata"]["name"].startswith(REPORT)]
    assert not any(report_mounts(docs).values())
