from __future__ import annotations

import json

import pytest

import chartlib as c
from chartlib import CI_FILES, CI_IDS


E2E_OVERLAY = c.ROOT / "tests" / "e2e_cluster" / "values" / "local-cluster.yaml"


E2E_OVERLAY_CHANGES = {"resources", "maxReplicas", "idleTimeoutSeconds"}
E2E_OPERATOR_PEER = {"ipBlock": {"cidr": "10.99.0.1/32"}}  # the host, where the local cluster's operator runs


def _without_overlay(obj):
    """obj without what the cluster e2e's overlay may change: pod sizes, a group's most pods, the autoscaler's idle
    timeout (also inside the tick's JSON, which holds the RayJob it creates) and the operator's address among the
    NetworkPolicy peers."""
    if isinstance(obj, str) and obj.startswith("{"):
        return _without_overlay(json.loads(obj))
    if isinstance(obj, dict):
        return {k: _without_overlay(v) for k, v in obj.items() if k not in E2E_OVERLAY_CHANGES}
    if isinstance(obj, list):
        return [_without_overlay(v) for v in obj if v != E2E_OPERATOR_PEER]
    return obj


@pytest.mark.parametrize("values", CI_FILES, ids=CI_IDS)
def test_cluster_e2e_overlay_changes_only_sizes_and_the_operators_address(values, rendered):
    """tests/e2e_cluster installs every ci values file with local-cluster.yaml on top: what it proves about the ci
    files holds only if the overlay changes nothing but sizes (pods, a group's most pods), the idle timeout and the
    operator's address, and what it renders is still valid."""
    docs = c.render([values, E2E_OVERLAY])
    errors = [e for cr in c.custom_resources(docs) for e in c.crd_errors(cr)]
    assert not errors, errors
    assert _without_overlay(docs) == _without_overlay(rendered[values.stem])
    assert _without_overlay(docs) != docs, "the overlay changed nothing"
    head_policies = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-ray-head")]
    assert head_policies and E2E_OPERATOR_PEER in head_policies[0]["spec"]["ingress"][-1]["from"], head_policies
