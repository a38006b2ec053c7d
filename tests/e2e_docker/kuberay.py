"""What the KubeRay operator (v1.7.0) would run, rebuilt from the chart's rendered objects.

No Kubernetes here: the e2e runs the containers with Docker, but their commands, flags and environment come from
`helm template` output, turned into commands the way KubeRay does it (ray-operator/controllers/ray/common/pod.go
generateRayStartCommand/setMissingRayStartParams, common/job.go BuildJobSubmitCommand, utils GetContainerCommand).
Nothing here retypes the entrypoint or the ray start flags.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

DASHBOARD_PORT = 8265
GCS_PORT = 6379
METRICS_PORT = 8080
DASHBOARD_AGENT_LISTEN_PORT = 52365
GCS_HEALTH_TIMEOUT_S = 10  # utils.RayDashboardGCSHealthCheckTimeoutSeconds
BASE_PYTHON_HEALTH_COMMAND = (  # utils.BasePythonHealthCommand
    "python -c \"import urllib.request; r=urllib.request.urlopen('%s', timeout=%d); "
    "exit(0 if b'success' in r.read() else 1)\""
)
GPU_RESOURCE_KEYS = ("nvidia.com/gpu", "amd.com/gpu")

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 1e-3}


def quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("500m", "4Gi", "2", 3) as a number."""
    text = str(value).strip()
    match = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", text)
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.groups()
    return float(number) * (_SUFFIXES[suffix] if suffix else 1)


def quantity_value(value: Any) -> int:
    """resource.Quantity.Value(): the integer value, rounded up (so a 500m CPU limit gives --num-cpus=1)."""
    return int(math.ceil(quantity(value)))


def load_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


@dataclass
class RayGroup:
    """One head or worker group of a RayCluster spec, as KubeRay would start its pods."""

    name: str
    node_type: str  # "head" | "worker"
    replicas: int
    ray_start_params: dict[str, str]
    container: dict[str, Any]
    pod_spec: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def limits(self) -> dict[str, Any]:
        return (self.container.get("resources") or {}).get("limits") or {}

    @property
    def requests(self) -> dict[str, Any]:
        return (self.container.get("resources") or {}).get("requests") or {}

    def gpus(self) -> int:
        if "num-gpus" in self.ray_start_params:
            return int(float(self.ray_start_params["num-gpus"]))
        return sum(quantity_value(self.limits[k]) for k in GPU_RESOURCE_KEYS if k in self.limits)

    def memory_limit_bytes(self) -> int | None:
        value = self.limits.get("memory")
        return quantity_value(value) if value is not None else None

    def shm_size_bytes(self) -> int | None:
        """sizeLimit of a memory-backed emptyDir mounted at /dev/shm, as the chart renders it."""
        volumes = {v.get("name"): v for v in self.pod_spec.get("volumes") or []}
        for mount in self.container.get("volumeMounts") or []:
            if mount.get("mountPath") == "/dev/shm":
                empty_dir = (volumes.get(mount.get("name")) or {}).get("emptyDir") or {}
                if empty_dir.get("medium") == "Memory" and empty_dir.get("sizeLimit"):
                    return quantity_value(empty_dir["sizeLimit"])
        return None

    def ray_start_command(self, head_address: str) -> str:
        """generateRayStartCommand after setMissingRayStartParams, flags sorted like convertParamMap."""
        params = {k: str(v) for k, v in self.ray_start_params.items()}
        if self.node_type == "worker":
            params.setdefault("address", f"{head_address}:{GCS_PORT}")
        else:
            params.setdefault("dashboard-host", "0.0.0.0")
        params.setdefault("metrics-export-port", str(METRICS_PORT))
        params["block"] = "true"
        params.setdefault("dashboard-agent-listen-port", str(DASHBOARD_AGENT_LISTEN_PORT))
        if "num-cpus" not in params:
            cpu = self.limits.get("cpu") or self.requests.get("cpu")
            if cpu is not None and quantity(cpu) > 0:
                params["num-cpus"] = str(quantity_value(cpu))
        if "memory" not in params and self.limits.get("memory") is not None:
            params["memory"] = str(quantity_value(self.limits["memory"]))
        if "num-gpus" not in params:
            for key in sorted(self.limits):
                if key in GPU_RESOURCE_KEYS and quantity(self.limits[key]) > 0:
                    params["num-gpus"] = str(quantity_value(self.limits[key]))
        flags = ""
        special = ("log-color", "include-dashboard", "include-log-monitor")
        for option in sorted(params):
            argument = params[option]
            if argument.lower() in ("true", "false") and option not in special:
                if argument.lower() == "true":
                    flags += f" --{option} "
            else:
                flags += f" --{option}={argument} "
        prefix = "ray start --head" if self.node_type == "head" else "ray start"
        return f"{prefix} {flags}"

    def container_args(self, head_address: str) -> list[str]:
        """Command and args of the Ray container: `/bin/bash -c -- "ulimit -n ...; ray start ..."`."""
        own = " ".join([*(self.container.get("command") or []), *(self.container.get("args") or [])])
        generated = f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {self.ray_start_command(head_address)}"
        if "ray start" in own:
            return [*(self.container.get("command") or []), *(self.container.get("args") or [])]
        args = f"{own} && {generated}" if own else generated
        return ["/bin/bash", "-c", "--", args]


def cluster_groups(cluster_spec: dict[str, Any]) -> list[RayGroup]:
    """The head group and every worker group of a RayCluster spec (or a RayJob's rayClusterSpec)."""
    head = cluster_spec["headGroupSpec"]
    head_pod = head["template"]["spec"]
    groups = [RayGroup("head", "head", 1, dict(head.get("rayStartParams") or {}), head_pod["containers"][0], head_pod)]
    for worker in cluster_spec.get("workerGroupSpecs") or []:
        pod = worker["template"]["spec"]
        groups.append(RayGroup(worker["groupName"], "worker", int(worker.get("replicas", 1)),
                               dict(worker.get("rayStartParams") or {}), pod["containers"][0], pod,
                               extra={"suspend": worker.get("suspend", False)}))
    return groups


def container_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """env of a container, with secretKeyRef values looked up in `secrets` (the test's stand-in Secrets)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = secrets.get(ref["name"])
            if secret is None or ref["key"] not in secret:
                if ref.get("optional"):
                    continue
                raise KeyError(f"env {item['name']}: the test has no Secret {ref['name']}/{ref['key']}")
            env[item["name"]] = secret[ref["key"]]
        # fieldRef / resourceFieldRef: Kubernetes-only (pod IP, ...); not emulated.
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref and ref.get("name") in secrets:
            env.update({(source.get("prefix") or "") + k: v for k, v in secrets[ref["name"]].items()})
    return env


def submit_command(rayjob: dict[str, Any], address: str, job_id: str) -> str:
    """The K8sJobMode submitter's shell command (BuildJobSubmitCommand), joined like the operator joins it."""
    spec = rayjob["spec"]
    if not address.startswith("http://"):
        address = "http://" + address
    health = BASE_PYTHON_HEALTH_COMMAND % (f"{address}/api/gcs_healthz", GCS_HEALTH_TIMEOUT_S)
    cmd = ["until", health, ">/dev/null", "2>&1", ";",
           "do", "echo", json.dumps(f"Waiting for Ray Dashboard GCS to become healthy at {address} ..."), ";",
           "sleep", "2", ";", "done", ";"]
    cmd += ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then"]
    cmd += ["ray", "job", "submit", "--address", address, "--no-wait"]
    runtime_env_yaml = spec.get("runtimeEnvYAML") or ""
    if runtime_env_yaml:
        cmd += ["--runtime-env-json", json.dumps(json.dumps(yaml.safe_load(runtime_env_yaml), separators=(",", ":")))]
    if spec.get("metadata"):
        cmd += ["--metadata-json", json.dumps(json.dumps(spec["metadata"], separators=(",", ":"), sort_keys=True))]
    cmd += ["--submission-id", job_id]
    if float(spec.get("entrypointNumCpus") or 0) > 0:
        cmd += ["--entrypoint-num-cpus", f"{float(spec['entrypointNumCpus']):f}"]
    if float(spec.get("entrypointNumGpus") or 0) > 0:
        cmd += ["--entrypoint-num-gpus", f"{float(spec['entrypointNumGpus']):f}"]
    if spec.get("entrypointResources"):
        cmd += ["--entrypoint-resources", json.dumps(spec["entrypointResources"])]
    cmd += ["--", spec["entrypoint"].strip(), ";", "fi", ";"]
    cmd += ["ray", "job", "logs", "--address", address, "--follow", job_id]
    return " ".join(cmd)


def submitter_container(rayjob: dict[str, Any]) -> dict[str, Any]:
    """The submitter container the chart supplies (spec.submitterPodTemplate), or an empty one."""
    template = rayjob["spec"].get("submitterPodTemplate") or {}
    containers = (template.get("spec") or {}).get("containers") or [{}]
    return containers[0]


BASE_WGET_HEALTH_COMMAND = "wget --tries 1 -T %d -q -O- http://localhost:%d/%s | grep success"  # utils.BaseWgetHealthCommand


def exec_probe_command(group: RayGroup) -> list[str]:
    """The exec liveness/readiness probe KubeRay gives Ray containers (initLivenessAndReadinessProbe) for Ray
    versions without the unified HTTP health check: raylet health on every node, GCS health on the head."""
    agent_port = int(group.ray_start_params.get("dashboard-agent-listen-port", DASHBOARD_AGENT_LISTEN_PORT))
    dashboard_port = int(group.ray_start_params.get("dashboard-port", DASHBOARD_PORT))
    commands = [BASE_WGET_HEALTH_COMMAND % (1, agent_port, "api/local_raylet_healthz")]
    if group.node_type == "head":
        commands.append(BASE_WGET_HEALTH_COMMAND % (10, dashboard_port, "api/gcs_healthz"))
    return ["bash", "-c", " && ".join(commands)]
