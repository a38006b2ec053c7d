from __future__ import annotations

import json

import pytest
import yaml

import chartlib as c
from chartlib import CI_FILES, CI_IDS, all_renders


ADVERTISED_IDS = [a[0] for a in c.ADVERTISED]


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
