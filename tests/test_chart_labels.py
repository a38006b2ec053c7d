from __future__ import annotations

import pytest

import chartlib as c
from chartlib import CI_FILES, CI_IDS, CPU, GPU, all_pod_specs, clusters


REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
                   "helm.sh/chart")


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
    # Beside the run report's own account (test_chart_security.py).
    assert [a["metadata"]["name"] for a in c.of_kind(docs, "ServiceAccount")] == ["scoring-shardscore-report", "scorer"]
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
