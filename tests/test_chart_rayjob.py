from __future__ import annotations

import yaml

import chartlib as c
from chartlib import CPU, EPHEMERAL, FULLNAME, all_renders


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
