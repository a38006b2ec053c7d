"""Helpers for the chart tests: the real helm binary, the KubeRay CRD schemas, Kubernetes name rules.

No mocks: charts are rendered by `helm`, custom resources are validated against the openAPIV3Schema of the
CRDs of the KubeRay release the chart targets (SHARDSCORE_CRD_DIR, default .tools/kuberay-crds, which `make test`
fills: scripts/kuberay-crds.py).
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 56k lines

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "shardscore"
CI_DIR = CHART / "ci"
MANIFESTS = ROOT / "manifests"
RENDER_SCRIPT = ROOT / "scripts" / "render-manifests.sh"
RELEASE = "scoring"
NAMESPACE = "shardscore"

CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
# KubeRay v1.7.0 (ray-operator/controllers/ray/utils/constant.go): MaxRayClusterNameLength 53, MaxRayJobNameLength
# 47, MaxRayCronJobNameLength 36 (= 47 - 11, room for "-<up to 10-digit unix minutes>" of its children).
NAME_LIMITS = {"RayCluster": 53, "RayJob": 47, "RayCronJob": 36}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# A plausible CronJob tick: the Job the CronJob controller creates, and its uid.
TICK_MINUTES = 29395530  # 2025-11-21T13:30Z
TICK_JOB = f"{RELEASE}-shardscore-tick-{TICK_MINUTES}"
TICK_JOB_UID = "3f1c6a52-6a5e-4d4c-9f7e-0d1f2a3b4c5d"


# ---------------------------------------------------------------- helm

def helm_bin() -> str:
    path = shutil.which("helm")
    if not path:
        pytest.fail("helm is not on PATH: run `make helm` (installs .tools/bin/helm) and put .tools/bin on PATH, "
                    "or run the suite with `make test`", pytrace=False)
    return path


def helm3_bin() -> str | None:
    """Helm 3 (installed as .tools/bin/helm3 by scripts/install-helm.sh), or None."""
    return shutil.which("helm3") or (str(ROOT / ".tools/bin/helm3") if (ROOT / ".tools/bin/helm3").exists() else None)


def run_helm(args: list[str], helm: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([helm or helm_bin(), *args], capture_output=True, text=True, timeout=120)


def template_args(values: list[Path | str] = (), sets: list[str] = (), release: str = RELEASE,
                  namespace: str = NAMESPACE, extra: list[str] = ()) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    return args + list(extra)


def render(values: list[Path | str] = (), sets: list[str] = (), helm: str | None = None, **kw) -> list[dict]:
    proc = run_helm(template_args(values, sets, **kw), helm)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [d for d in yaml.load_all(proc.stdout, Loader=Loader) if d]


def render_error(values: list[Path | str] = (), sets: list[str] = (), helm: str | None = None, **kw) -> str:
    proc = run_helm(template_args(values, sets, **kw), helm)
    assert proc.returncode != 0, f"helm template should have failed for {values} {sets}"
    return proc.stderr


def ci_values_files() -> list[Path]:
    return sorted(CI_DIR.glob("*-values.yaml"))


CI_FILES = ci_values_files()
CI_IDS = [p.stem for p in CI_FILES]
CPU = CI_DIR / "cpu-values.yaml"
GPU = CI_DIR / "gpu-values.yaml"
EPHEMERAL = CI_DIR / "ephemeral-values.yaml"
CRONJOB = CI_DIR / "cronjob-values.yaml"
RAYCRONJOB = CI_DIR / "raycronjob-values.yaml"
FULLNAME = f"{RELEASE}-shardscore"
IMAGE = "shardscore:0.1.0"


# ---------------------------------------------------------------- CRD schemas

def crd_dir() -> Path:
    env = os.environ.get("SHARDSCORE_CRD_DIR")
    path = Path(env) if env else (ROOT / ".tools" / "kuberay-crds")
    missing = [f for f in CRD_FILES.values() if not (path / f).is_file()]
    if missing:
        pytest.fail(f"KubeRay CRDs not found: {path} lacks {missing}. Run the tests with `make test`, which fetches "
                    "them (scripts/kuberay-crds.py), or set SHARDSCORE_CRD_DIR to a directory with the CRDs of the "
                    "KubeRay release in cluster/versions.env (ray-operator/config/crd/bases).", pytrace=False)
    return path


def openapi_to_jsonschema(node):
    """The structural OpenAPI v3 schema of a CRD as JSON Schema (draft 7), as strict as the API server with
    `kubectl apply --validate=strict`: unknown fields are errors, int-or-string takes either, int32/int64 ranges
    hold. CEL rules (x-kubernetes-validations) are not evaluated."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, val in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: openapi_to_jsonschema(v) for k, v in val.items()}
        else:
            out[key] = openapi_to_jsonschema(val)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    fmt = node.get("format")
    if fmt == "int32":
        out.update(minimum=max(out.get("minimum", -2**31), -2**31), maximum=min(out.get("maximum", 2**31 - 1), 2**31 - 1))
    if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    doc = yaml.load((crd_dir() / CRD_FILES[kind]).read_text(), Loader=Loader)
    assert doc["spec"]["names"]["kind"] == kind
    versions = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
    assert versions, f"{kind} CRD has no v1 version"
    schema = openapi_to_jsonschema(copy.deepcopy(versions[0]["schema"]["openAPIV3Schema"]))
    # apiVersion/kind/metadata are checked here and by check_metadata; status is the operator's.
    schema["properties"].pop("status", None)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str) -> dict:
    """The v1 openAPIV3Schema of a KubeRay CRD, as the API server has it."""
    doc = yaml.load((crd_dir() / CRD_FILES[kind]).read_text(), Loader=Loader)
    return next(v for v in doc["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def pruned_fields(obj, schema: dict | None = None, path: str = "") -> list[str]:
    """The paths of obj that a real API server drops silently when it stores the object: structural pruning of
    fields its CRD schema does not know (apiextensions pruning: an object with `properties` keeps only those,
    unless x-kubernetes-preserve-unknown-fields; additionalProperties schemas apply to every key). The root
    metadata is ObjectMeta, never pruned by the CRD schema; status is the operator's."""
    if schema is None:
        schema = crd_schema(obj["kind"])
        return [p for k, v in obj.items() if k not in ("metadata", "status")
                for p in (pruned_fields(v, schema["properties"][k], k) if k in schema["properties"] else [k])]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        out = []
        for k, v in obj.items():
            sub = f"{path}.{k}"
            if props is not None and k in props:
                out += pruned_fields(v, props[k], sub)
            elif isinstance(extra, dict):
                out += pruned_fields(v, extra, sub)
            elif props is not None or extra is False:
                out.append(sub)
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(obj) for p in pruned_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def crd_errors(obj: dict, metadata: bool = True) -> list[str]:
    errors = []
    if obj.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion {obj.get('apiVersion')!r} is not ray.io/v1")
    for err in sorted(crd_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in err.absolute_path)
        errors.append(f"{obj['kind']} {obj.get('metadata', {}).get('name')}: {path}: {err.message[:300]}")
    if metadata:
        errors += metadata_errors(obj)
    return errors


def metadata_errors(obj: dict) -> list[str]:
    errors = []
    meta = obj.get("metadata") or {}
    kind, name = obj.get("kind"), meta.get("name", "")
    if kind in NAME_LIMITS:
        if not DNS1035.match(name):
            errors.append(f"{kind} name {name!r} is not a DNS-1035 label")
        if len(name) > NAME_LIMITS[kind]:
            errors.append(f"{kind} name {name!r} is longer than {NAME_LIMITS[kind]}")
    elif not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(f"{kind} name {name!r} is not a DNS-1123 subdomain")
    errors += label_errors(meta.get("labels"), f"{kind} {name}")
    for k, v in (meta.get("annotations") or {}).items():
        if not isinstance(v, str):
            errors.append(f"{kind} {name}: annotation {k} is not a string")
    return errors


def label_errors(labels, where: str) -> list[str]:
    errors = []
    for k, v in (labels or {}).items():
        prefix, _, key = k.rpartition("/")
        if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or not LABEL_NAME.match(key) or len(key) > 63:
            errors.append(f"{where}: bad label key {k!r}")
        if not isinstance(v, str) or not LABEL_VALUE.match(v) or len(v) > 63:
            errors.append(f"{where}: bad label value {k}={v!r}")
    return errors


# ---------------------------------------------------------------- rendered objects

def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def tick_config(docs: list[dict]) -> dict:
    """tick.json of the CronJob tick's ConfigMap (what `shardscore tick` reads)."""
    cms = [d for d in of_kind(docs, "ConfigMap") if "tick.json" in d.get("data", {})]
    assert len(cms) == 1, "expected one ConfigMap with the tick's tick.json"
    return json.loads(cms[0]["data"]["tick.json"])


def tick_rayjob(docs: list[dict], job_name: str = TICK_JOB, uid: str = TICK_JOB_UID) -> dict:
    """The RayJob the CronJob tick creates, built by the tick's own code (shardscore.k8s.tick) from the chart's tick.json."""
    tick = pytest.importorskip("shardscore.k8s.tick", reason="the shardscore job package is not installed (make venv)")
    from shardscore.k8s.tickconfig import TickConfig

    cfg = TickConfig.from_dict(tick_config(docs))
    return tick.build_rayjob(cfg, NAMESPACE, job_name, uid, tick.scheduled_minutes(job_name))


def custom_resources(docs: list[dict]) -> list[dict]:
    """Every RayCluster/RayJob/RayCronJob among docs, including the CronJob tick template."""
    found = [d for d in docs if d.get("kind") in CRD_FILES]
    if any("tick.json" in d.get("data", {}) for d in of_kind(docs, "ConfigMap")):
        found.append(tick_rayjob(docs))
    return found


def pod_templates(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod template) of the head and every worker group of a RayCluster spec."""
    out = [("head", cluster_spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in cluster_spec.get("workerGroupSpecs", [])]
    return out


def clusters(docs: list[dict]) -> list[dict]:
    """Every RayCluster spec: standalone, inside RayJobs, RayCronJob templates and the tick template."""
    specs = []
    for cr in custom_resources(docs):
        if cr["kind"] == "RayCluster":
            specs.append(cr["spec"])
        job = cr["spec"]["jobTemplate"] if cr["kind"] == "RayCronJob" else cr["spec"]
        if cr["kind"] != "RayCluster" and "rayClusterSpec" in job:
            specs.append(job["rayClusterSpec"])
    return specs


def all_pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for spec in clusters(docs):
        out += [(f"ray {g}", t["spec"]) for g, t in pod_templates(spec)]
    for cr in custom_resources(docs):
        job = cr["spec"].get("jobTemplate", cr["spec"])
        if "submitterPodTemplate" in job:
            out.append(("submitter", job["submitterPodTemplate"]["spec"]))
    for d in docs:
        if d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["spec"]))
        if d["kind"] == "CronJob":
            out.append(("cronjob", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, val = e["key"] in labels, labels.get(e["key"])
        ok = {"In": has and val in e.get("values", []), "NotIn": not has or val not in e.get("values", []),
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def images(node) -> list[str]:
    """Every container image named anywhere in a rendered object (pod templates, RayCluster specs, tick.json)."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "image" and isinstance(v, str):
                found.append(v)
            elif k == "tick.json" and isinstance(v, str):
                found += images(json.loads(v))
            else:
                found += images(v)
    elif isinstance(node, list):
        for v in node:
            found += images(v)
    return found


def image_is_pinned(ref: str) -> bool:
    """A tag other than `latest`, or a digest."""
    if "@sha256:" in ref:
        return True
    name = ref.rsplit("/", 1)[-1]
    return ":" in name and name.rsplit(":", 1)[1] not in ("", "latest")


# ---------------------------------------------------------------- renders the chart advertises

REQUIRED = ("job.input=s3://shardscore/input", "job.output=s3://shardscore/output",
            "job.model=shardscore.models.dummy:load_model")
EXAMPLE_RULES = ('rayJob.deletionStrategy={"deletionRules": ['
                 '{"condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 300}, "policy": "DeleteCluster"}, '
                 '{"condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 86400}, "policy": "DeleteSelf"}]}')
# Every combination that values.yaml or docs/kubernetes.md advertise, on top of the defaults and the required
# values: each must render objects that the CRDs accept (tests/test_chart_crds.py) and that the real operator reconciles
# without ValidationFailed or a Warning event (the cluster e2e). (id, --set, --set-json, release)
ADVERTISED = [
    ("defaults", (), (), RELEASE),
    ("cronjob", ("schedule=@daily",), (), RELEASE),
    ("cronjob with a deadline", ("schedule=@daily", "cronJob.deadlineSeconds=3600"), (), RELEASE),
    ("raycronjob", ("schedule=@daily", "scheduleMode=rayCronJob"), (), RELEASE),
    ("raycronjob on the long-lived cluster", ("schedule=@daily", "scheduleMode=rayCronJob",
                                              "rayJob.ephemeralCluster=false"), (), RELEASE),
    ("cronjob warm pool on the long-lived cluster", ("schedule=@hourly", "job.strategy=actors", "job.pool=nightly",
                                                     "job.poolIdleTimeout=4000"), (), RELEASE),
    ("ephemeral", ("rayJob.ephemeralCluster=true",), (), RELEASE),
    ("ephemeral with retries", ("rayJob.ephemeralCluster=true", "rayJob.backoffLimit=2",
                                "rayJob.activeDeadlineSeconds=7200"), (), RELEASE),
    ("ephemeral cluster kept", ("rayJob.ephemeralCluster=true", "rayJob.shutdownAfterJobFinishes=false",
                                "rayJob.ttlSecondsAfterFinished=0"), (), RELEASE),
    ("ephemeral with deletionRules", ("rayJob.ephemeralCluster=true", "rayJob.shutdownAfterJobFinishes=false",
                                      "rayJob.ttlSecondsAfterFinished=0"), (EXAMPLE_RULES,), RELEASE),
    ("DeleteSelf on the long-lived cluster", ("rayJob.deletionStrategy.onSuccess.policy=DeleteSelf",
                                              "rayJob.deletionStrategy.onFailure.policy=DeleteNone"), (), RELEASE),
    ("gpu", ("cluster.gpuWorkers.enabled=true", "job.numGpusPerWorker=1", "job.device=cuda",
             "cluster.gpuWorkers.image.tag=0.1.0-cu128"), (), RELEASE),
    ("gpu without autoscaling", ("cluster.gpuWorkers.enabled=true", "cluster.gpuWorkers.replicas=1",
                                 "cluster.autoscaling.enabled=false", "job.numGpusPerWorker=1"), (), RELEASE),
    ("HTTPMode", ("rayJob.submissionMode=HTTPMode",), (), RELEASE),
    ("SidecarMode at baseline", ("rayJob.ephemeralCluster=true", "rayJob.submissionMode=SidecarMode",
                                 "podSecurityStandard=baseline"), (), RELEASE),
    ("auth disabled", ("rayAuth.mode=disabled",), (), RELEASE),
    ("optional extras", ("metrics.podMonitor.enabled=true", "cluster.head.preventEviction.podDisruptionBudget=true",
                         "cluster.head.preventEviction.safeToEvictAnnotation=true", "metrics.prometheusRule.enabled=true",
                         "metrics.grafanaDashboard.enabled=true"),
     ('cluster.cpuWorkers.topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", '
      '"whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"ray.io/group": "cpu"}}}]',), RELEASE),
    ("operator out of cluster", ("networkPolicy.operator.namespace=", "networkPolicy.operator.ipBlocks[0]=10.0.0.10/32"),
     (), RELEASE),
    ("no NetworkPolicy", ("networkPolicy.enabled=false",), (), RELEASE),
    ("an existing RayCluster", ("cluster.create=false", "rayJob.clusterName=shared-ray"), (), RELEASE),
    ("the RayCluster only", ("rayJob.enabled=false",), (), RELEASE),
    ("upgradeStrategy None", ("cluster.upgradeStrategy=None",), (), RELEASE),
    ("an existing ServiceAccount", ("serviceAccount.create=false", "serviceAccount.name=scorer"), (), RELEASE),
    ("long release name", (), (), "a-very-long-release-name-for-nightly-scoring-jobs"),
    ("long release name, cronjob", ("schedule=@daily",), (), "a-very-long-release-name-for-nightly-scoring-jobs"),
    ("long release name, raycronjob", ("schedule=@daily", "scheduleMode=rayCronJob"), (),
     "a-very-long-release-name-for-nightly-scoring-jobs"),
]


def render_advertised(sets=(), set_json=(), release: str = RELEASE, helm: str | None = None) -> list[dict]:
    extra = [a for j in set_json for a in ("--set-json", j)]
    return render(sets=[*REQUIRED, *sets], release=release, extra=extra, helm=helm)


def all_renders(rendered, advertised) -> dict[str, list[dict]]:
    """The `rendered` and `advertised` fixtures (tests/conftest.py) as one mapping, each render named by its origin."""
    return {**{f"ci:{k}": v for k, v in rendered.items()}, **{f"advertised:{k}": v for k, v in advertised.items()}}


# ---------------------------------------------------------------- the entrypoint

def entrypoint_argv(job: dict) -> list[str]:
    return shlex.split(job["spec"]["entrypoint"])


def submitter_then_head_argv(entrypoint: str, env: dict | None = None) -> list[str]:
    """The argv the head runs: the submitter's bash expands the entrypoint (KubeRay puts it after `ray job submit
    ... --`), `ray job submit` joins the words with shlex.join (Ray 2.60 on Linux), the head runs it with sh -c."""
    words = subprocess.run(["bash", "-c", f'printf "%s\\0" {entrypoint}'], capture_output=True, text=True, check=True,
                           env={"PATH": os.environ["PATH"], **(env or {})}).stdout.split("\0")[:-1]
    joined = shlex.join(words)
    return subprocess.run(["sh", "-c", f'printf "%s\\0" {joined}'], capture_output=True, text=True,
                          check=True).stdout.split("\0")[:-1]


def chart_test_names() -> set[str]:
    """The test functions of every tests/test_chart*.py: the tests a KubeRay rejection's chart_note may name."""
    return {node.name for path in (ROOT / "tests").glob("test_chart*.py")
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
