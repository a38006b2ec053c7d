from __future__ import annotations

import json

import pytest

import chartlib as c
from chartlib import CI_FILES, CI_IDS


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
