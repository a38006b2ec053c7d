"""Scenario 6 of the cluster e2e (issue 11 §3.6) and issue 12 §1 on the real API server and KubeRay operator.

1. Every RayCluster, RayJob and RayCronJob the chart renders (each values file in helm/shardscore/ci/, the defaults
   with the required values, both schedule modes, long release names, every combination of tests/chartlib.py
   ADVERTISED, and the CronJob tick's RayJob as `shardscore tick` builds it) is created on the API server (CRD
   schema and CEL rules), stored as sent (a field the CRD does not know is pruned silently, so the test compares
   what it sent with what the server stored), and reconciled by the operator without ValidationFailed or a
   Warning event. Their pods need more CPU than the test cluster's nodes have (the chart's default sizes), so they
   stay Pending: the operator's reconcile is what is tested, not a run.
2. Both halves of every refusal: for each hand-written object of tests/kuberay_rejects.py the real operator or API
   server rejects it where the entry says (its other half, the chart's refusal, is in
   tests/test_chart_kuberay_rules.py).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

from .clusterlib import CI_VALUES, Namespace, leaf_diff, log, namespace_name, values_args, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chartlib  # noqa: E402
import kuberay_rejects  # noqa: E402

OPERATOR_KINDS = ("RayCluster", "RayJob", "RayCronJob")

# Renders beyond ADVERTISED: every ci values file as it is, and a RayCronJob with a time zone (values.yaml
# advertises timeZone for both schedule modes).
RENDERS = ([(f"ci/{f.name}", [f], (), (), chartlib.RELEASE) for f in sorted(CI_VALUES.glob("*-values.yaml"))]
           + [(f"advertised: {id_}", [], (*chartlib.REQUIRED, *sets), set_json, release)
              for id_, sets, set_json, release in chartlib.ADVERTISED]
           + [("raycronjob with a time zone", [], (*chartlib.REQUIRED, "schedule=@daily", "scheduleMode=rayCronJob",
                                                   "timeZone=Europe/Berlin"), (), chartlib.RELEASE)])

# Fields of the KubeRay v1.7.0 CRDs that v1.6.2's lack, so a v1.6.2 API server prunes them (docs/local-cluster.md,
# "What v1.6.2 instead of v1.7.0 means"). The local cluster installs v1.6.2's CRDs, the ones its operator is built
# against: a v1.6.2 operator writes back its own types, so v1.7.0 CRDs under it would not make these fields work.
KNOWN_PRUNED_BEFORE_1_7 = {
    ("RayCronJob", "spec.timeZone"): "RayCronJob.spec.timeZone is new in KubeRay 1.7.0 (formatSchedule in "
                                     "raycronjob_controller.go); v1.6.2's CRD and operator do not have it, so the "
                                     "schedule runs in the operator's time zone (UTC)",
}

# Rules of kuberay_rejects.py that KubeRay v1.7.0 has and v1.6.2 does not: (the v1.6.2 function that would hold
# it, a fragment of the v1.7.0 rule that must be absent from v1.6.2's source, the reason).
V17_ONLY = {
    "RayCronJob name longer than 36": (
        "ValidateRayCronJobSpec", "MaxRayCronJobNameLength",
        "v1.6.2's ValidateRayCronJobSpec (utils/validation.go) checks only the schedule and the job template: there "
        "is no MaxRayCronJobNameLength; its children are named <name>-<5 random characters> (constructRayJob in "
        "raycronjob_controller.go), which a 37-character name fits"),
    "TZ in a RayCronJob schedule": (
        "ValidateRayCronJobSpec", "CRON_TZ",
        "v1.6.2's ValidateRayCronJobSpec (utils/validation.go) only parses the schedule with cron.ParseStandard "
        "(robfig/cron v3.0.1, whose parser accepts a TZ= or CRON_TZ= prefix); the rule against it came with "
        "spec.timeZone in v1.7.0"),
}


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in ((doc.get("metadata") or {}).get("annotations") or {})


@pytest.fixture(scope="module")
def served(kube) -> set[str]:
    return set(kube("api-versions").stdout.split())


@pytest.fixture(scope="module")
def pending_deletion(kube):
    """Namespaces of this module are deleted without waiting (nothing in them runs); the module waits once."""
    names: list[Namespace] = []
    yield names
    for ns in names:
        ns.delete(wait=False)
    for ns in names:
        ns.wait_gone()


@pytest.fixture
def fresh_namespace(kube, request, pending_deletion):
    def make(labels: dict | None = None) -> Namespace:
        ns = Namespace(namespace_name(request.node.callspec.id if hasattr(request.node, "callspec") else "rules"),
                       kube, labels or {}).create()
        pending_deletion.append(ns)
        return ns

    return make


def operator_warnings(kube, ns: str) -> list[str]:
    """The operator's Warning events on the namespace's KubeRay objects, less one that is about the operator, not
    the object: FailedToCreateRayCluster "already exists", which getOrCreateRayClusterInstance (rayjob_controller.go)
    emits when its informer cache has not yet seen the RayCluster it created a moment before; the next reconcile
    finds that cluster (the caller checks that the RayJob names it in status.rayClusterName)."""
    out = []
    for e in kube.events(ns):
        if e.get("type") != "Warning" or e["involvedObject"]["kind"] not in OPERATOR_KINDS:
            continue
        text = f"{e['involvedObject']['kind']} {e['involvedObject']['name']}: {e['reason']}: {e.get('message')}"
        if e["reason"] == "FailedToCreateRayCluster" and "already exists" in (e.get("message") or ""):
            job = kube.get("rayjob", e["involvedObject"]["name"], ns) or {}
            if (job.get("status") or {}).get("rayClusterName", "~") in e["message"]:
                log(f"tolerated (the operator's cache lag, not the object): {text}")
                continue
        out.append(text)
    return out


def tick_rayjob(docs: list[dict], kube, ns: str) -> dict | None:
    """The CronJob tick's RayJob, built by `shardscore tick`'s own code from the chart's tick.json, owned by a real
    (suspended) Job named as the CronJob controller names them."""
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and "tick.json" in d.get("data", {})]
    if not cms:
        return None
    from shardscore.k8s import tick, tickconfig

    cfg = tickconfig.TickConfig.from_dict(json.loads(cms[0]["data"]["tick.json"]))
    cron = next(d for d in docs if d.get("kind") == "CronJob")
    minutes = 29395530
    job_name = f"{cron['metadata']['name']}-{minutes}"
    owner = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name, "namespace": ns},
             "spec": {"suspend": True, "template": cron["spec"]["jobTemplate"]["spec"]["template"]}}
    uid = json.loads(kube("create", "-f", "-", "-o", "json", input=json.dumps(owner)).stdout)["metadata"]["uid"]
    return tick.build_rayjob(cfg, ns, job_name, uid, minutes)


def existing_objects(docs: list[dict], helm, kube, ns: str) -> None:
    """What an advertised combination says exists already: the RayCluster of rayJob.clusterName (the chart's, made
    by another release: fullnameOverride, rayJob.enabled=false) and the ServiceAccount of serviceAccount.name."""
    def accounts(node) -> set[str]:
        if isinstance(node, dict):
            own = {node["serviceAccountName"]} if isinstance(node.get("serviceAccountName"), str) else set()
            return own | {a for v in node.values() for a in accounts(v)}
        return {a for v in node for a in accounts(v)} if isinstance(node, list) else set()

    made = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for name in sorted(accounts(docs) - made - {"default"}):
        kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
        log(f"created the existing ServiceAccount {name}")
    for job in (d for d in docs if d["kind"] == "RayJob" and "clusterSelector" in d["spec"]):
        name = job["spec"]["clusterSelector"]["ray.io/cluster"]
        if not any(d["kind"] == "RayCluster" and d["metadata"]["name"] == name for d in docs):
            other = helm.template("other", ns, [*values_args(set_json=[]), "--set", f"fullnameOverride={name}",
                                                "--set", "rayJob.enabled=false",
                                                *[a for s in chartlib.REQUIRED for a in ("--set", s)]])
            kube.apply([d for d in other if d["kind"] in ("RayCluster", "ServiceAccount")])
            log(f"created the existing RayCluster {name} the RayJob runs on")


@pytest.mark.parametrize("case", RENDERS, ids=[r[0] for r in RENDERS])
def test_the_operator_accepts_what_the_chart_renders(case, kube, helm, served, fresh_namespace, target):
    """ValidateRayClusterSpec/ValidateRayClusterMetadata (RayCluster), ValidateRayJobSpec/ValidateRayJobMetadata
    (RayJob, and the RayCluster it creates), ValidateRayCronJobSpec (RayCronJob), in utils/validation.go, after the
    API server's CRD validation (schemas and x-kubernetes-validations)."""
    name, files, sets, set_json, release = case
    ns = fresh_namespace().name
    # As tests/chartlib.py renders them: --set for the sets, --set-json for the others.
    args = values_args(files, set_json=set_json) + [a for s in sets for a in ("--set", s)]
    docs = helm.template(release, ns, args)
    skipped = [f"{d['kind']} {d['metadata']['name']}" for d in docs
               if d["apiVersion"].rsplit("/", 1)[0] not in {v.rsplit("/", 1)[0] for v in served}
               and "/" in d["apiVersion"]]
    plain = [d for d in docs if not is_hook(d) and d["kind"] not in OPERATOR_KINDS
             and f"{d['kind']} {d['metadata']['name']}" not in skipped]
    if skipped:
        log(f"not created (API not served by this cluster): {skipped}")
    if plain:
        kube("create", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in plain))
    existing_objects(docs, helm, kube, ns)
    crs = [d for d in docs if d["kind"] in OPERATOR_KINDS]
    tick = tick_rayjob(docs, kube, ns)
    if tick:
        crs.append(tick)
    assert crs, f"{name} renders no KubeRay object"

    pruned, known = [], []
    for sent in crs:
        what = f"{sent['kind']} {sent['metadata']['name']}"
        # --validate=false: the server prunes unknown fields silently (as it does for any client that does not ask
        # for strict validation); the comparison below is what finds them.
        stored = json.loads(kube("create", "--validate=false", "-f", "-", "-o", "json",
                                 input=json.dumps(sent)).stdout)
        log(f"created {what}")
        for path in leaf_diff({k: sent[k] for k in sent if k != "metadata"}, stored) + [
                f"metadata.{p}" for p in leaf_diff({k: sent["metadata"].get(k) for k in ("labels", "annotations")
                                                    if sent["metadata"].get(k)}, stored["metadata"])]:
            reason = KNOWN_PRUNED_BEFORE_1_7.get((sent["kind"], path))
            (known if reason and target.kuberay < (1, 7, 0) else pruned).append(f"{what}: {path}")
    assert not pruned, f"the API server did not store what was sent (pruned or changed): {pruned}"

    for obj in crs:
        wait_reconciled(kube, ns, obj)
    warnings = operator_warnings(kube, ns)
    assert not warnings, warnings
    for job in kube.items("rayjobs", ns):
        assert (job.get("status") or {}).get("jobDeploymentStatus") != "ValidationFailed", job["status"]
    if known:
        pytest.xfail(f"known pruned by KubeRay {target.kuberay_version}'s CRDs: {known}: "
                     + "; ".join(sorted(set(KNOWN_PRUNED_BEFORE_1_7.values()))))


def wait_reconciled(kube, ns: str, obj: dict) -> None:
    """Waits for the operator's first reconcile of obj to get past validation, a sign it can only give then."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind == "RayCluster":
        # reconcilePods runs after ValidateRayClusterSpec/UpgradeOptions: the head pod (Pending here) exists.
        wait_for(lambda: kube.items("pods", ns, f"ray.io/cluster={name},ray.io/node-type=head"), bool, 120,
                 f"the operator to create RayCluster {name}'s head pod")
    elif kind == "RayJob":
        # jobDeploymentStatus Initializing is set after ValidateRayJobMetadata/ValidateRayJobSpec; an ephemeral
        # RayJob then creates its RayCluster, whose head pod proves that cluster spec passed too.
        job = wait_for(lambda: kube.get("rayjob", name, ns),
                       lambda j: (j.get("status") or {}).get("jobDeploymentStatus") not in (None, "", "New"), 120,
                       f"the operator to take RayJob {name} up", fail=lambda j: (j.get("status") or {}).get(
                           "jobDeploymentStatus") == "ValidationFailed")
        if "rayClusterSpec" in obj["spec"]:
            cluster = wait_for(lambda: (kube.get("rayjob", name, ns).get("status") or {}).get("rayClusterName"),
                               bool, 120, f"RayJob {name} to create its RayCluster")
            wait_reconciled(kube, ns, {"kind": "RayCluster", "metadata": {"name": cluster}})
        log(f"RayJob {name}: {job['status'].get('jobDeploymentStatus')}")
    elif kind == "RayCronJob":
        # ValidateRayCronJobSpec runs before the suspend check, so the operator's SuspendedRayCronJob event says
        # the spec passed; suspending also keeps the schedule from creating children.
        kube("-n", ns, "patch", "raycronjob", name, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        wait_for(lambda: [e for e in kube.events(ns) if e["involvedObject"]["name"] == name
                          and e["reason"] in ("SuspendedRayCronJob", "InvalidRayCronJobSpec")], bool, 120,
                 f"the operator to reconcile RayCronJob {name}")


# --------------------------------------------------------------------------------------------- both halves

def in_namespace(manifest: dict, ns: str) -> dict:
    obj = copy.deepcopy(manifest)
    obj["metadata"]["namespace"] = ns
    return obj


@pytest.mark.parametrize("rejection", kuberay_rejects.REJECTIONS, ids=[r.id for r in kuberay_rejects.REJECTIONS])
def test_the_operator_rejects_what_the_chart_refuses(rejection, kube, fresh_namespace, target):
    """The operator's half of each refusal of tests/kuberay_rejects.py; the chart's half is
    tests/test_chart_kuberay_rules.py::test_the_chart_refuses_what_kuberay_rejects."""
    r = rejection
    if r.id in V17_ONLY and target.kuberay < (1, 7, 0):
        function, fragment, reason = V17_ONLY[r.id]
        source = target.kuberay_source
        assert source is not None, (f"{r.id}: cannot check that KubeRay {target.kuberay_version} lacks the rule: its "
                                    "source is not on this machine (SHARDSCORE_E2E_KUBERAY_SOURCE)")
        validation = (source / "controllers" / "ray" / "utils" / "validation.go").read_text()
        assert f"func {function}(" in validation, f"{function} is not in {source}"
        assert fragment not in "".join(p.read_text() for p in (source / "controllers").rglob("*.go")), (
            f"{fragment} is in KubeRay {target.kuberay_version}'s source: the rule is there, do not skip")
        # And the operator's behaviour agrees with its source: it reconciles the object past validation.
        ns = fresh_namespace().name
        kube("create", "-f", "-", input=json.dumps(in_namespace(r.manifest, ns)))
        wait_reconciled(kube, ns, r.manifest)
        assert not operator_warnings(kube, ns), operator_warnings(kube, ns)
        pytest.skip(f"{r.id}: v1.7-only rule, absent from KubeRay {target.kuberay_version} (which accepted the "
                    f"object): {reason}")
    ns = fresh_namespace(dict(r.namespace_labels)).name
    obj = in_namespace(r.manifest, ns)
    kind, name = obj["kind"], obj["metadata"]["name"]
    where = f"{r.kuberay} ({r.rejected_by})"

    if r.rejected_by == "apiserver":
        proc = kube("create", "-f", "-", input=json.dumps(obj), check=False)
        assert proc.returncode != 0, f"the API server accepted {kind} {name}, which {where} rejects"
        assert r.message in proc.stderr, proc.stderr
        log(f"API server refused {kind} {name}: {proc.stderr.strip()[:300]}")
        return

    kube("create", "-f", "-", input=json.dumps(obj))
    log(f"created {kind} {name}; expecting {where}: {r.message!r}")
    if r.rejected_by == "operator" and kind == "RayJob" and not r.event_on:
        job = wait_for(lambda: kube.get("rayjob", name, ns),
                       lambda j: (j.get("status") or {}).get("jobDeploymentStatus") == "ValidationFailed", 120,
                       f"RayJob {name} to be ValidationFailed",
                       fail=lambda j: (j.get("status") or {}).get("jobDeploymentStatus") in ("Running", "Complete"))
        assert r.message in job["status"].get("message", ""), job["status"]

    def rejected_on() -> list[str]:
        if r.event_on == "RayCluster":
            clusters = kube.items("rayclusters", ns, f"ray.io/originated-from-cr-name={name}")
            names = {c["metadata"]["name"] for c in clusters}
            on_kind = "RayCluster"
        else:
            names, on_kind = {name}, kind
        return [e["message"] for e in kube.events(ns)
                if e["involvedObject"]["kind"] == on_kind and e["involvedObject"]["name"] in names
                and e.get("type") == "Warning" and (not r.event_reason or e["reason"] == r.event_reason)
                and r.message in (e.get("message") or "")]

    events = wait_for(rejected_on, bool, 180, f"a Warning event{' ' + r.event_reason if r.event_reason else ''} "
                      f"on {r.event_on or kind} with {r.message!r}")
    log(f"rejected: {events[0][:300]}")
    if r.rejected_by == "pod-security":
        assert not kube.items("pods", ns, "ray.io/node-type=head"), "a head pod was created"
