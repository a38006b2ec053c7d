from __future__ import annotations

import chartlib as c
from chartlib import CPU, FULLNAME, selects


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
    # Another release's submitter reaches the dashboard (a release with cluster.create=false runs on this one's
    # cluster: rayJob.clusterName); its Ray pods and any other pod of the namespace get nothing.
    assert admitted_ports(policies, head, {**submitter, "app.kubernetes.io/instance": "other"}) == {8265}
    assert admitted_ports(policies, worker, {**submitter, "app.kubernetes.io/instance": "other"}) == set()
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
