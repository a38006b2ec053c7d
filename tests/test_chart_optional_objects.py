from __future__ import annotations

import json

import chartlib as c
from chartlib import selects


def test_optional_objects_are_off_by_default(rendered):
    kinds = {d["kind"] for d in rendered["defaults"]}
    assert not {"PodMonitor", "PodDisruptionBudget", "PrometheusRule"} & kinds
    assert not [d for d in rendered["defaults"] if d["metadata"]["name"].endswith("-dashboard")]
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


def test_the_dashboard_and_the_alerts(advertised):
    """Issue 22 §4: the dashboard's ConfigMap carries the Grafana sidecar's label and the file as it is; the alerts
    select the series of the release's PodMonitor (the Prometheus operator's job label: <namespace>/<name>). That
    every metric they name is exported: tests/test_cluster_runs.py."""
    docs = advertised["optional extras"]
    dashboard = next(d for d in c.of_kind(docs, "ConfigMap") if d["metadata"]["name"] == f"{c.FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["shardscore.json"]) == json.loads((c.CHART / "dashboards" / "shardscore.json")
                                                                          .read_text())
    rule = c.one(docs, "PrometheusRule")
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert sorted(rules) == ["ShardscoreShardsFailed", "ShardscoreStalled"]  # ShardscoreNoRowsScored: with noRowsFor
    job = f'job="{c.NAMESPACE}/{c.one(docs, "PodMonitor")["metadata"]["name"]}"'
    assert all(job in r["expr"] for r in rules.values()), [r["expr"] for r in rules.values()]
    assert rules["ShardscoreStalled"]["for"] == "15m" and "[15m]" in rules["ShardscoreStalled"]["expr"]
    later = c.render([c.CPU], ["metrics.podMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
                               "metrics.prometheusRule.noRowsFor=26h"])
    missed = c.one(later, "PrometheusRule")["spec"]["groups"][0]["rules"][-1]
    assert missed["alert"] == "ShardscoreNoRowsScored" and missed["expr"].count("[26h]") == 2, missed
    assert "needs metrics.podMonitor.enabled" in c.render_error([c.CPU], ["metrics.prometheusRule.enabled=true"])
