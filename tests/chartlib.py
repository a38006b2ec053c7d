"""Helpers for the chart tests: the real helm binary, the KubeRay CRD schemas, Kubernetes name rules.

No mocks: charts are rendered by `helm`, custom resources are validated against the openAPIV3Schema of the
KubeRay v1.7.0 CRDs (SHARDSCORE_CRD_DIR, default ../shared/kuberay-crds beside the project).
"""

from __future__ import annotations

import copy
import functools
import os
import re
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
# KubeRay v1.7.0 (ray-operator/controllers/ray/utils): MaxRayClusterNameLength 53, MaxRayJobNameLength 47.
# RayCronJob children are <name>-<unix minutes> (8 digits), so a RayCronJob name must leave room for 9 characters.
NAME_LIMITS = {"RayCluster": 53, "RayJob": 47, "RayCronJob": 38}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Placeholders of the CronJob tick template (filled in by tick.sh) and plausible values for them.
TICK_MINUTES = "29395530"  # 2025-11-22T01:30Z
TICK_PLACEHOLDERS = {
    "__SHARDSCORE_TICK_RAYJOB__": f"{RELEASE}-shardscore-{TICK_MINUTES}",
    "__SHARDSCORE_TICK_JOB_UID__": "3f1c6a52-6a5e-4d4c-9f7e-0d1f2a3b4c5d",
    "__SHARDSCORE_TICK_JOB__": f"{RELEASE}-shardscore-tick-{TICK_MINUTES}",
    "__SHARDSCORE_TICK__": f'"{TICK_MINUTES}"',  # a label value: tick.sh writes it quoted
}


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


# ---------------------------------------------------------------- CRD schemas

def crd_dir() -> Path:
    env = os.environ.get("SHARDSCORE_CRD_DIR")
    path = Path(env) if env else (ROOT.parent / "shared" / "kuberay-crds")
    missing = [f for f in CRD_FILES.values() if not (path / f).is_file()]
    if missing:
        pytest.fail(f"KubeRay CRDs not found: {path} lacks {missing}. Set SHARDSCORE_CRD_DIR to a directory with the "
                    "KubeRay v1.7.0 CRDs (ray-operator/config/crd/bases of the KubeRay release).", pytrace=False)
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


def crd_errors(obj: dict) -> list[str]:
    errors = []
    if obj.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion {obj.get('apiVersion')!r} is not ray.io/v1")
    for err in sorted(crd_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in err.absolute_path)
        errors.append(f"{obj['kind']} {obj.get('metadata', {}).get('name')}: {path}: {err.message[:300]}")
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


def tick_rayjob(docs: list[dict], placeholders: dict | None = None) -> dict:
    """The RayJob template of the CronJob tick pod (ConfigMap data rayjob.yaml), placeholders filled in."""
    text = tick_files(docs)["rayjob.yaml"]
    for k, v in (placeholders or TICK_PLACEHOLDERS).items():
        text = text.replace(k, v)
    return yaml.safe_load(text)


def tick_files(docs: list[dict]) -> dict:
    cms = [d for d in of_kind(docs, "ConfigMap") if "rayjob.yaml" in d.get("data", {})]
    assert len(cms) == 1, "expected one ConfigMap with the tick RayJob template"
    return cms[0]["data"]


def custom_resources(docs: list[dict]) -> list[dict]:
    """Every RayCluster/RayJob/RayCronJob among docs, including the CronJob tick template."""
    found = [d for d in docs if d.get("kind") in CRD_FILES]
    if any("rayjob.yaml" in d.get("data", {}) for d in of_kind(docs, "ConfigMap")):
        found.append(tick_rayjob(docs))
    return found


def pod_templates(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod template) of the head and every worker group of a RayCluster spec."""
    out = [("head", cluster_spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in cluster_spec.get("workerGroupSpecs", [])]
    return out


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}
