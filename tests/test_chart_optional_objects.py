from __future__ import annotations

import chartlib as c
from chartlib import selects


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
