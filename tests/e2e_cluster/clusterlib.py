"""Support for the cluster e2e (tests/e2e_cluster): the cluster under test, kubectl and helm, one `wait_for`,
diagnostics, the S3 server on the host, input data with a row key and the exact-output check.

The same suite runs on the local cluster of `make cluster` (`make e2e-cluster`) and on a kind cluster
(`make e2e-kind`, tests/e2e_kind/run.sh). What differs between them is read from the environment by
`Target.from_env`; nothing else in the suite knows which cluster it is on:

    SHARDSCORE_E2E_KUBECONFIG          kubeconfig (default: the local cluster's, from `cluster/cluster.sh env`)
    SHARDSCORE_E2E_CONTEXT             its context (default: the current one)
    SHARDSCORE_E2E_KUBECTL             kubectl (default: the local cluster's own, else kubectl on PATH)
    SHARDSCORE_E2E_HOST_ADDRESS        the host's address as pods see it; the S3 server listens there (10.99.0.1)
    SHARDSCORE_E2E_KUBERAY_VERSION     the operator's version (default: SHARDSCORE_CLUSTER_KUBERAY_VERSION, else
                                       KUBERAY_VERSION of cluster/versions.env)
    SHARDSCORE_E2E_KUBERAY_SOURCE      that operator's source (ray-operator module), for the rules a skip names
                                       (default: the local build's copy in its cache)
    SHARDSCORE_E2E_OPERATOR_LOG        the operator's log file (default: the local cluster's)
    SHARDSCORE_E2E_OPERATOR_NAMESPACE  or the namespace of an in-cluster operator (kubectl logs deploy/kuberay-operator)
    SHARDSCORE_E2E_KUBERNETES_VERSION  what the API server's /version must say (default: the local cluster's
                                       KUBERNETES_VERSION of cluster/versions.env; any on another cluster)

Nodes are found by their labels (shardscore.io/pool=cpu, nvidia.com/gpu.present=true), never by name.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import yaml
from support import BIN, S3Server, start_s3, stop_process

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "shardscore"
CI_VALUES = CHART / "ci"
E2E_VALUES = Path(__file__).resolve().parent / "values"
MODELS = ROOT / "tests" / "models"
CLUSTER_SH = ROOT / "cluster" / "cluster.sh"
CPU_POOL = {"shardscore.io/pool": "cpu"}
GPU_POOL = {"nvidia.com/gpu.present": "true"}
# Any credentials do for moto; the pods get them from the Secret the chart's values name.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "e2e-access-key", "AWS_SECRET_ACCESS_KEY": "e2e-secret-key",
                  "AWS_REGION": "us-east-1"}
S3_SECRET_NAME = "shardscore-s3"
ROW_KEY = "row_id"


class Unavailable(Exception):
    """No cluster to test: the suite skips, saying why."""


def log(message: str) -> None:
    """One timestamped line per step, so that a CI log tells the story. To stderr, with the pytest-xdist worker's
    name when the suite runs in parallel (tests/e2e_cluster/run.sh): a worker's stdout never reaches the terminal
    (xdist's workers talk to the controller over it), its stderr does."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    print(f"{time.strftime('%H:%M:%S')} {f'[{worker}] ' if worker else ''}{message}", file=sys.stderr, flush=True)


def appversion() -> str:
    return re.search(r'^appVersion:\s*"?([^"\s]+)"?', (CHART / "Chart.yaml").read_text(), re.M).group(1)


def image() -> str:
    """The chart's default image, shardscore:<appVersion>, which `make cluster` loads into every node."""
    return f"shardscore:{appversion()}"


# --------------------------------------------------------------------------------------------- the cluster

@dataclass(frozen=True)
class Target:
    kubeconfig: str
    context: str
    kubectl: str
    host_address: str
    kuberay_version: str
    kuberay_source: Path | None
    operator_log: Path | None
    operator_namespace: str
    kubernetes_version: str  # what /version must say; "" = any (kind's node image decides)

    @classmethod
    def from_env(cls) -> "Target":
        env = os.environ
        kubeconfig, kubectl = env.get("SHARDSCORE_E2E_KUBECONFIG", ""), env.get("SHARDSCORE_E2E_KUBECTL", "")
        local = not kubeconfig
        if local:
            if os.geteuid() != 0:
                raise Unavailable("the local cluster's kubeconfig and PKI are root-only; run as root")
            proc = subprocess.run(["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise Unavailable("no local cluster is up (`make e2e-cluster` starts one; or `make cluster`)")
            found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
            kubeconfig, kubectl = found["KUBECONFIG"], kubectl or found["KUBECTL"]
        kubectl = kubectl or shutil.which("kubectl") or ""
        if not kubectl:
            raise Unavailable("no kubectl (set SHARDSCORE_E2E_KUBECTL)")
        version = env.get("SHARDSCORE_E2E_KUBERAY_VERSION", "") or env.get("SHARDSCORE_CLUSTER_KUBERAY_VERSION", "")
        if not version:
            match = re.search(r"^KUBERAY_VERSION=(\S+)", (ROOT / "cluster" / "versions.env").read_text(), re.M)
            version = match.group(1)
        version = "v" + version.lstrip("v")
        source = env.get("SHARDSCORE_E2E_KUBERAY_SOURCE", "")
        if not source:
            cache = Path(env.get("SHARDSCORE_CLUSTER_CACHE", Path.home() / ".cache" / "shardscore-cluster"))
            # Where cluster/lib/common.sh's kuberay_source_dir put it: the unpacked release archive, or the module.
            unpacked = cache / "src" / f"kuberay-{version}" / "ray-operator"
            source = str(unpacked if unpacked.is_dir() else
                         cache / "gomod" / "github.com" / "ray-project" / "kuberay" / f"ray-operator@{version}")
        state = Path(env.get("SHARDSCORE_CLUSTER_DIR", "/var/lib/shardscore-cluster"))
        operator_log = env.get("SHARDSCORE_E2E_OPERATOR_LOG") or (str(state / "logs" / "kuberay-operator.log")
                                                                    if local else "")
        k8s = env.get("SHARDSCORE_E2E_KUBERNETES_VERSION", "")
        if not k8s and local:
            k8s = re.search(r"^KUBERNETES_VERSION=(\S+)", (ROOT / "cluster" / "versions.env").read_text(), re.M).group(1)
        return cls(kubeconfig=kubeconfig, context=env.get("SHARDSCORE_E2E_CONTEXT", ""), kubectl=kubectl,
                   host_address=env.get("SHARDSCORE_E2E_HOST_ADDRESS", "10.99.0.1"), kuberay_version=version,
                   kuberay_source=Path(source) if Path(source).is_dir() else None,
                   operator_log=Path(operator_log) if operator_log else None,
                   operator_namespace=env.get("SHARDSCORE_E2E_OPERATOR_NAMESPACE", ""), kubernetes_version=k8s)

    @property
    def kuberay(self) -> tuple[int, int, int]:
        return tuple(int(x) for x in re.findall(r"\d+", self.kuberay_version)[:3])  # type: ignore[return-value]

    def env(self) -> dict[str, str]:
        """Environment for kubectl and helm."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig}


# The kinds the suite polls, as kubectl names them: (API path, resource, namespaced). Kube reads them through one
# kept client instead of a kubectl process a poll: each kubectl loads its kubeconfig and makes a new TLS connection
# to the API server, and two tests polling every 1-3 s made thousands over a run (docs/local-cluster.md: the test
# clients' share of the e2e's CPU).
READ_IN_PROCESS: dict[str, tuple[str, str, bool]] = {
    **dict.fromkeys(("pod", "pods"), ("api/v1", "pods", True)),
    **dict.fromkeys(("namespace", "namespaces"), ("api/v1", "namespaces", False)),
    **dict.fromkeys(("job", "jobs"), ("apis/batch/v1", "jobs", True)),
    **dict.fromkeys(("rayjob", "rayjobs"), ("apis/ray.io/v1", "rayjobs", True)),
    **dict.fromkeys(("raycluster", "rayclusters"), ("apis/ray.io/v1", "rayclusters", True)),
}


def _api_path(kind: str, namespace: str, name: str = "") -> str:
    prefix, resource, namespaced = READ_IN_PROCESS[kind]
    scope = f"/namespaces/{namespace}" if namespaced else ""
    return f"/{prefix}{scope}/{resource}" + (f"/{name}" if name else "")


class Kube:
    """kubectl against the cluster under test; the kinds of READ_IN_PROCESS read through one kept client."""

    def __init__(self, target: Target):
        self.target = target
        self._base = [target.kubectl] + (["--context", target.context] if target.context else [])

    def __call__(self, *args: str, check: bool = True, input: str | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self._base, *args], input=input, capture_output=True, text=True, timeout=timeout,
                              env=self.target.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def get(self, kind: str, name: str, namespace: str = "") -> dict | None:
        """The object, or None when there is none."""
        if kind in READ_IN_PROCESS:
            return self._read(_api_path(kind, namespace, name))
        proc = self("-n", namespace, "get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name} failed: {proc.stderr}")
        return json.loads(proc.stdout)

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict]:
        """The objects as the API server lists them (without kubectl's `kind` and `apiVersion` on each)."""
        if kind in READ_IN_PROCESS:
            listed = self._read(_api_path(kind, namespace), {"labelSelector": selector} if selector else {})
            if listed is None:
                raise AssertionError(f"no {kind} in namespace {namespace}: the API server answered 404")
            return listed["items"]
        args = ["-n", namespace, kind] + (["-l", selector] if selector else [])
        return self.json(*args)["items"]

    @functools.cached_property
    def _api(self) -> Any:
        from kubernetes import config  # the job's own dependency (requirements.lock)

        return config.new_client_from_config(config_file=self.target.kubeconfig, context=self.target.context or None)

    def _read(self, path: str, query: dict[str, str] | None = None) -> dict | None:
        """GET of an API path through the kept client: the object, or None on 404. A connection that fails is an
        OSError, which wait_for retries, as it retries a kubectl that timed out."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        method, url, headers, _, _ = self._api.param_serialize(
            "GET", path, query_params=list((query or {}).items()), header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        try:
            response = self._api.call_api(method, url, header_params=headers, _request_timeout=60)
            response.read()
        except (ApiException, HTTPError) as exc:
            raise OSError(f"GET {path}: {exc}") from exc
        if response.status == 404:
            return None
        if response.status != 200:
            raise AssertionError(f"GET {path}: HTTP {response.status}: {response.data[:2000]!r}")
        return json.loads(response.data)

    def apply(self, objs: Iterable[dict] | dict, namespace: str | None = None, *extra: str) -> str:
        docs = [objs] if isinstance(objs, dict) else list(objs)
        ns = ["-n", namespace] if namespace else []
        return self(*ns, "apply", *extra, "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs)).stdout

    def events(self, namespace: str) -> list[dict]:
        return self.json("-n", namespace, "events")["items"]

    def pod_logs(self, namespace: str, pod: str, container: str = "", tail: int = 200) -> str:
        args = ["-n", namespace, "logs", pod, f"--tail={tail}"] + (["-c", container] if container else
                                                                     ["--all-containers"])
        return self(*args, check=False).stdout

    def nodes(self, labels: dict[str, str]) -> list[str]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return [n["metadata"]["name"] for n in self.json("nodes", "-l", selector)["items"]]


def wait_for(get: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float, what: str, *,
             fail: Callable[[Any], bool] | None = None, interval: float = 2.0) -> Any:
    """Polls get() until predicate(value) holds, and returns that value. Fails with the last value (or error) it
    saw when the timeout passes, or at once when fail(value) holds (a state the object cannot leave)."""
    deadline, last = time.monotonic() + timeout, None
    log(f"waiting for {what} (up to {timeout:.0f}s)")
    while True:
        try:
            last = get()
            if predicate(last):
                log(f"done: {what}")
                return last
            if fail is not None and fail(last):
                raise AssertionError(f"gave up waiting for {what}: it reached a state it cannot leave; last seen:\n"
                                     f"{_show(last)}")
        except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen:\n{_show(last)}")
        time.sleep(interval)


def _show(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, dict) and "metadata" in value:
        value = {k: v for k, v in value.items() if k != "metadata"} | {
            "metadata": {k: value["metadata"].get(k) for k in ("name", "namespace", "uid", "deletionTimestamp",
                                                                "labels", "annotations")}}
    return json.dumps(value, indent=1, default=str)[-8000:]


# --------------------------------------------------------------------------------------------- namespaces

@dataclass
class Namespace:
    """A fresh namespace of one test (or one module's shared install), deleted afterwards."""

    name: str
    kube: Kube
    labels: dict[str, str] = field(default_factory=dict)

    def create(self) -> "Namespace":
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": self.name, "labels": {"shardscore.io/e2e": "true", **self.labels}}})
        log(f"created namespace {self.name}")
        return self

    def delete(self, wait: bool = True, timeout: float = 300) -> None:
        """Deletes it and (wait) waits until it is gone, so that the next test finds the nodes' CPUs free. Its pods
        get a grace period of 1 s instead of 30: the test is over, and Ray's containers would use all 30."""
        self.kube("delete", "namespace", self.name, "--wait=false", "--ignore-not-found", check=False)
        self.shorten_grace()
        if wait:
            self.wait_gone(timeout)

    def shorten_grace(self) -> None:
        self.kube("-n", self.name, "delete", "pods", "--all", "--grace-period=1", "--wait=false",
                  "--ignore-not-found", check=False)

    def wait_gone(self, timeout: float = 300) -> None:
        def gone() -> bool:
            if self.kube.get("namespace", self.name) is None:
                return True
            if self.kube.items("pods", self.name):
                self.shorten_grace()  # pods KubeRay made before its objects were deleted
            return False

        wait_for(gone, bool, timeout, f"namespace {self.name} and its pods to be gone", interval=3)

    def __str__(self) -> str:
        return self.name


def namespace_name(hint: str) -> str:
    hint = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].rstrip("-")
    return f"e2e-{hint}-{uuid.uuid4().hex[:5]}"


def diagnostics(kube: Kube, namespace: str) -> str:
    """What a failed test leaves for its reader: the operator's log, describe and logs of the namespace's pods,
    and its events."""
    out = io.StringIO()
    put = lambda *a: print(*a, file=out)  # noqa: E731
    put(f"===== diagnostics for namespace {namespace} ({time.strftime('%H:%M:%S')})")
    target = kube.target
    if target.operator_log and target.operator_log.exists():
        lines = target.operator_log.read_text(errors="replace").splitlines()
        mine = [line for line in lines if f'"{namespace}' in line or f"{namespace}/" in line]
        put(f"----- KubeRay operator log: the last 60 of its {len(mine)} lines about {namespace} (cut to 600 "
            "characters each)")
        put("\n".join(line[:600] for line in mine[-60:]))
        put(f"----- KubeRay operator log: its last 10 lines ({target.operator_log})")
        put("\n".join(line[:600] for line in lines[-10:]))
    elif target.operator_namespace:
        put(f"----- KubeRay operator log (kubectl -n {target.operator_namespace} logs deploy/kuberay-operator)")
        put(kube("-n", target.operator_namespace, "logs", "deploy/kuberay-operator", "--tail=150",
                 check=False).stdout)
    for args in (("get", "raycluster,rayjob,raycronjob,cronjob,job,pods,services", "-o", "wide"),
                 ("describe", "rayjob,raycluster,raycronjob"), ("describe", "pods"),
                 ("get", "events", "--sort-by=.lastTimestamp")):
        put(f"----- kubectl -n {namespace} {' '.join(args)}")
        proc = kube("-n", namespace, *args, check=False, timeout=60)
        put(proc.stdout[-20000:], proc.stderr[-2000:])
    for pod in kube("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split():
        put(f"----- logs of {pod}")
        put(kube("-n", namespace, "logs", pod, "--all-containers", "--prefix", "--tail=80", check=False).stdout)
    # Last, because a long CI log is read from its end: a cut in its middle must not hide why a pod waits.
    put(f"----- summary of namespace {namespace}: pods, nodes' CPU requests, the latest warning events")
    put(pod_summary(kube, namespace))
    return out.getvalue()


def pod_summary(kube: Kube, namespace: str) -> str:
    """One line per pod (phase, node, CPU request, a condition that is not True), the CPU every node has left to
    requests, and the namespace's last warning events: the facts that tell a pod that cannot be scheduled (a full
    node) from one that cannot start."""
    lines = []
    try:
        pods = kube.json("pods", "--all-namespaces")["items"]  # a node's requests come from every namespace
        for p in pods:
            if p["metadata"]["namespace"] != namespace:
                continue
            spec, status = p["spec"], p.get("status") or {}
            waiting = [f"{c['type']}={c['status']} {c.get('reason', '')} {c.get('message', '')[:300]}".strip()
                       for c in status.get("conditions") or [] if c["status"] != "True"]
            lines.append(f"pod {p['metadata']['name']}: {status.get('phase')} on {spec.get('nodeName', '-')}, "
                         f"{_requested_cpu(p)}m CPU requested, priority {spec.get('priority', 0)}; {'; '.join(waiting) or 'ok'}")
        for node in kube.json("nodes")["items"]:
            name = node["metadata"]["name"]
            held = sum(_requested_cpu(p) for p in pods if p["spec"].get("nodeName") == name
                       and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
            lines.append(f"node {name}: {held}m of {_millicores(node['status']['allocatable']['cpu'])}m CPU "
                         "requested by its pods")
        warnings = [e for e in kube.events(namespace) if e.get("type") == "Warning"]
        warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        lines += [f"event {e.get('lastTimestamp') or e.get('eventTime')} {e['involvedObject'].get('name')}: "
                  f"{e.get('reason')}: {e.get('message', '')[:300]}" for e in warnings[-15:]]
    except Exception as exc:  # noqa: BLE001 - a summary must never hide the failure
        lines.append(f"could not summarise: {exc!r}")
    return "\n".join(lines)


def _requested_cpu(pod: dict) -> int:
    """Millicores the pod's containers request."""
    return sum(_millicores(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
               for c in pod["spec"].get("containers", []))


def _millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


# --------------------------------------------------------------------------------------------- helm

class Helm:
    def __init__(self, target: Target):
        self.target = target
        found = ROOT / ".tools" / "bin" / "helm"
        self.bin = str(found) if found.exists() else (shutil.which("helm") or "")
        if not self.bin:
            raise Unavailable("helm is missing (make helm)")

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        ctx = ["--kube-context", self.target.context] if self.target.context else []
        proc = subprocess.run([self.bin, *args, *ctx], capture_output=True, text=True, timeout=timeout,
                              env=self.target.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    @property
    def major(self) -> int:
        """Helm's major version: Helm 4 applies server-side, so an upgrade of a RayCluster whose worker groups the
        autoscaler patched needs --force-conflicts (test_gpu_release's upgrade test shows the conflict)."""
        return int(re.search(r'Version:"v(\d+)', self("version").stdout).group(1))

    def template(self, release: str, namespace: str, args: list[str]) -> list[dict]:
        proc = subprocess.run([self.bin, "template", release, str(CHART), "--namespace", namespace, *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
        return [d for d in yaml.safe_load_all(proc.stdout) if d]


def values_args(files: Iterable[Path | str] = (), sets: dict[str, Any] | None = None,
                set_json: Iterable[str] = ()) -> list[str]:
    """helm arguments: -f per file, --set-json per value (so that "1" stays a string and 1 a number)."""
    args: list[str] = []
    for f in files:
        args += ["-f", str(f)]
    for key, value in (sets or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    for item in set_json:
        args += ["--set-json", item]
    return args


def fullname(release: str) -> str:
    """The chart's full name (shardscore.fullname): <release>-shardscore, or the release when it contains it."""
    name = release if "shardscore" in release else f"{release}-shardscore"
    return name[:36].rstrip("-")


# --------------------------------------------------------------------------------------------- S3 and data

class HostS3(S3Server):
    """The suite's S3 server (support.start_s3) on the address pods reach the host at, with the object reads the
    e2e checks need."""

    @classmethod
    def start(cls, host: str) -> "HostS3":
        if not (BIN / "moto_server").exists():
            raise Unavailable(f"moto_server is missing from {BIN} (make venv)")
        # Path-style requests only: moto would otherwise take the first label of a host name (minio.shardscore.svc,
        # the endpoint manifests/ names) for a bucket.
        return start_s3(Path(tempfile.mkdtemp(prefix="shardscore-e2e-s3-")), host, S3_CREDENTIALS, cls,
                        S3_IGNORE_SUBDOMAIN_BUCKETNAME="true")

    def bucket(self, name: str) -> str:
        with contextlib.suppress(self.client().exceptions.BucketAlreadyOwnedByYou):
            self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str) -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"} | ({"ContinuationToken": token} if token else {})
            page = self.client().list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        stop_process(self.process)


def s3_secret(namespace: str) -> dict:
    """The Secret the chart's values name (objectStore.credentialsSecret), with the server's credentials."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": S3_SECRET_NAME, "namespace": namespace},
            "stringData": {k: S3_CREDENTIALS[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}


@dataclass
class Dataset:
    """Input written to S3: every row has a unique row_id, so that the output can be traced row by row."""

    bucket: str
    prefix: str
    passengers: dict[int, int]  # row_id -> passenger_count

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __len__(self) -> int:
        return len(self.passengers)


def write_input(s3: HostS3, bucket: str, prefix: str, shards: int = 6, rows: int = 5000, seed: int = 11) -> Dataset:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    passengers: dict[int, int] = {}
    for shard in range(shards):
        ids = np.arange(shard * rows, (shard + 1) * rows, dtype=np.int64)
        counts = rng.integers(-1, 7, rows).astype(np.int8)
        passengers.update(zip(ids.tolist(), counts.tolist(), strict=False))
        buf = io.BytesIO()
        pq.write_table(pa.table({ROW_KEY: ids, "passenger_count": counts,
                                 "fare_amount": rng.random(rows).astype(np.float32)}), buf)
        s3.client().put_object(Bucket=bucket, Key=f"{prefix}/part-{shard:05d}.parquet", Body=buf.getvalue())
    log(f"wrote {len(passengers)} rows in {shards} shards to s3://{bucket}/{prefix}")
    return Dataset(bucket, prefix, passengers)


def manifest_of(s3: HostS3, bucket: str, prefix: str) -> dict | None:
    with contextlib.suppress(Exception):
        return json.loads(s3.read(bucket, f"{prefix}/_manifest.json"))
    return None


def committed_shards(s3: HostS3, bucket: str, prefix: str) -> int:
    """Shards committed so far (their commit records), read while a run is going on."""
    return len([k for k in s3.keys(bucket, f"{prefix}/_shardscore/commits") if k.endswith(".json")])


def mid_run(kube: Kube, s3: HostS3, ns: str, rayjob: str, output: str, most: int = 8) -> int:
    """Waits until the run into s3://<ns>/<output> has committed at least 2 shards and at most `most`; returns how
    many. Fails at once when the RayJob finished first (-1)."""
    def committed() -> int:
        job = kube.get("rayjob", rayjob, ns)
        if rayjob_finished(job):
            return -1
        return committed_shards(s3, ns, output) if rayjob_status(job) == "Running/RUNNING" else 0

    return wait_for(committed, lambda n: 2 <= n <= most, 300, f"RayJob {rayjob} to be in the middle of its run",
                    fail=lambda n: n > most or n < 0, interval=1)


def workers_deleted_mid_run(kube: Kube, s3: HostS3, ns: str, name: str, output: str) -> list[str]:
    """The release `name`'s CPU worker pods deleted (1 s of grace) in the middle of its run into s3://<ns>/<output>;
    waits for the RayJob to succeed all the same, and returns the deleted pods' names."""
    wait_for(lambda: kube.get("raycluster", name, ns), raycluster_ready, 300, f"RayCluster {name} to be ready")
    done = mid_run(kube, s3, ns, name, output)
    workers = [p["metadata"]["name"] for p in kube.items("pods", ns, f"ray.io/cluster={name},ray.io/group=cpu")]
    assert workers, "no CPU worker pod"
    kube("-n", ns, "delete", "pod", *workers, "--grace-period=1", "--wait=false")
    log(f"deleted worker pods {workers} with {done} shards committed")
    final = wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"RayJob {name} to finish")
    assert rayjob_succeeded(final), final["status"]
    return workers


def assert_exact(s3: HostS3, data: Dataset, output_prefix: str) -> dict:
    """Every input row scored exactly once, traced by its row_id (--key-columns row_id); `_SUCCESS` and the manifest
    present; the files of the output are exactly the manifest's; every score is the dummy model's (passenger_count
    is even). An output without the key column (a run without --key-columns, as manifests/ has it) is traced by
    position instead: each output file holds its input file's rows, in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bucket, prefix = data.bucket, output_prefix.strip("/")
    keys = s3.keys(bucket, prefix)
    assert f"{prefix}/_SUCCESS" in keys, f"no _SUCCESS in s3://{bucket}/{prefix}: {sorted(keys)[:40]}"
    manifest = manifest_of(s3, bucket, prefix)
    assert manifest is not None, f"no _manifest.json in s3://{bucket}/{prefix}"
    assert manifest["status"] == "succeeded", manifest["status"]
    totals = manifest["totals"]
    assert totals["failed"] == 0 and totals["rows_in"] == totals["rows_out"] == len(data), totals
    # Readers skip `_`-prefixed entries; keys ending in "/" are the folder markers pyarrow's S3 filesystem writes.
    visible = sorted(k for k in keys if not k.endswith("/")
                     and not any(part.startswith("_") for part in k[len(prefix) + 1:].split("/")))
    named = sorted(f"{prefix}/{s['output']}" for s in manifest["shards"] if s.get("output"))
    assert visible == named, f"output files {visible} are not the manifest's {named}"
    tables = {k: pq.read_table(io.BytesIO(s3.read(bucket, k))) for k in visible}
    if ROW_KEY in next(iter(tables.values())).column_names:
        table = pa.concat_tables(tables.values())
        ids = table.column(ROW_KEY).to_pylist()
        how = f"by {ROW_KEY}"
    else:
        ids, scored = [], []
        for key, table in tables.items():
            source = pq.read_table(io.BytesIO(s3.read(bucket, f"{data.prefix}/{key[len(prefix) + 1:]}")))
            assert table.num_rows == source.num_rows, (key, table.num_rows, source.num_rows)
            ids += source.column(ROW_KEY).to_pylist()
            scored.append(table.column("score"))
        table = pa.table({ROW_KEY: ids, "score": pa.concat_arrays([c.combine_chunks() for c in scored])})
        how = "by position (no key column in the output)"
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows were written more than once"
    missing, extra = set(data.passengers) - set(ids), set(ids) - set(data.passengers)
    assert not missing and not extra, f"{len(missing)} input rows missing, {len(extra)} rows not in the input"
    scores = dict(zip(ids, table.column("score").to_pylist(), strict=True))
    wrong = [i for i, count in data.passengers.items() if scores[i] != (count % 2 == 0)]
    assert not wrong, f"{len(wrong)} rows have another score than the model's, e.g. row_id {wrong[:5]}"
    log(f"exact: {len(ids)} rows in {len(visible)} files under s3://{bucket}/{prefix}, each input row once (traced "
        f"{how}), _SUCCESS and the manifest present")
    return manifest


def rayjob_status(obj: dict | None) -> str:
    status = (obj or {}).get("status") or {}
    return f"{status.get('jobDeploymentStatus') or '-'}/{status.get('jobStatus') or '-'}"


def rayjob_finished(obj: dict | None) -> bool:
    return ((obj or {}).get("status") or {}).get("jobDeploymentStatus") in ("Complete", "Failed", "ValidationFailed")


def rayjob_succeeded(obj: dict | None) -> bool:
    status = (obj or {}).get("status") or {}
    return status.get("jobDeploymentStatus") == "Complete" and status.get("jobStatus") == "SUCCEEDED"


def raycluster_ready(obj: dict | None) -> bool:
    return ((obj or {}).get("status") or {}).get("state") == "ready"


def model_configmap(namespace: str, name: str = "e2e-models") -> dict:
    """tests/models/*.py as a ConfigMap: mounted into every Ray pod (the chart's volumes/volumeMounts) with
    PYTHONPATH (extraEnv), so that a run can use the slow model the fault tests need."""
    files = {p.name: p.read_text() for p in sorted(MODELS.glob("*.py"))}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": files}


MODELS_MOUNT = "/opt/e2e-models"


def models_mount_values(configmap: str = "e2e-models") -> dict[str, Any]:
    """Values (for --set-json) that put tests/models/ into every Ray pod of the cluster the release renders: the
    ConfigMap as a volume (the chart's volumes/volumeMounts) and PYTHONPATH (extraEnv)."""
    return {
        "volumes": [{"name": "e2e-models", "configMap": {"name": configmap}}],
        "volumeMounts": [{"name": "e2e-models", "mountPath": MODELS_MOUNT, "readOnly": True}],
        "extraEnv": [{"name": "PYTHONPATH", "value": MODELS_MOUNT}],
    }


def slow_model_values(delay: float) -> dict[str, Any]:
    """Values that make the run use tests/models/slow_model.py, `delay` seconds per batch (on a cluster whose pods
    have models_mount_values)."""
    return {"job.model": "slow_model:load_model", "job.modelArgs": {"delay": delay, "payload_mb": 1},
            **models_mount_values()}


def utc_stamp(minutes: int) -> str:
    return datetime.fromtimestamp(minutes * 60, tz=timezone.utc).strftime("%Y%m%dT%H%MZ")



def job_pods(kube, ns: str, job: str) -> list[dict]:
    pods = kube.items("pods", ns, f"batch.kubernetes.io/job-name={job}")
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


def job_logs(kube, ns: str, job: str) -> list[str]:
    """The log of each pod of a Job, oldest first."""
    return [kube.pod_logs(ns, p["metadata"]["name"], tail=400) for p in job_pods(kube, ns, job)]


def job_condition(job: dict | None) -> str:
    for c in ((job or {}).get("status") or {}).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return f"{c['type']}:{c.get('reason', '')}"
    return ""


def leaf_diff(sent, stored, path: str = "") -> list[str]:
    """Paths of `sent` that `stored` lacks or holds with another value (defaults the server adds are fine)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path} (stored as {stored!r})"]
        out = []
        for key, value in sent.items():
            sub = f"{path}.{key}" if path else key
            out += leaf_diff(value, stored[key], sub) if key in stored else [sub]
        return out
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path} (stored as {json.dumps(stored)[:200]})"]
        return [p for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for p in leaf_diff(a, b, f"{path}[{i}]")]
    return [] if sent == stored else [f"{path} (sent {sent!r}, stored {stored!r})"]


def rerun(kube, ns: str, name: str) -> dict:
    """Runs a RayJob again, as values.yaml says to on an existing cluster: delete it, create it anew."""
    old = kube.get("rayjob", name, ns)
    meta = {k: old["metadata"][k] for k in ("name", "namespace", "labels", "annotations") if k in old["metadata"]}
    kube("-n", ns, "delete", "rayjob", name, "--wait=true", timeout=300)
    kube("create", "-f", "-", input=json.dumps({"apiVersion": old["apiVersion"], "kind": "RayJob", "metadata": meta,
                                                "spec": old["spec"]}))
    log(f"RayJob {name} created again")
    return old


def run_chart_once(kube, helm, s3, ns: str, release: str, sets: dict, on: str | None = None) -> dict:
    """One RayJob of the chart (`job.model` and the rest in `sets`), to its end; the finished RayJob. By default
    ephemeral: a cluster of its own, which KubeRay then deletes. With `on`, on a long-lived RayCluster of
    cpu-values.yaml: the release's own (`on=fullname(release)`), left running for the next runs, or another
    release's (a RayJob alone: no cluster to start)."""
    if on is None:
        values, mode = "ephemeral-values.yaml", {"rayJob.ttlSecondsAfterFinished": 5}
    else:
        values, mode = "cpu-values.yaml", {} if on == fullname(release) else {"cluster.create": False,
                                                                              "rayJob.clusterName": on}
    helm("install", release, str(CHART), "-n", ns,
         *values_args([CI_VALUES / values, E2E_VALUES / "local-cluster.yaml"],
                      {"objectStore.endpoint": s3.endpoint, "job.keyColumns": [ROW_KEY], "job.modelArgs": None,
                       **mode, **sets}))
    name = fullname(release)
    log(f"helm install {release}: RayJob {name}" + (f" on RayCluster {on}" if on else ""))
    return wait_for(lambda: kube.get("rayjob", name, ns), rayjob_finished, 600, f"RayJob {name} to finish")


def skip_without_base_image() -> None:
    if not shutil.which("docker") or subprocess.run(["docker", "image", "inspect", image()],
                                                    capture_output=True).returncode != 0:
        pytest.skip(f"no Docker engine with {image()} here: a derived image is built from it")


def build_derived_image(ref: str, *packages: str) -> None:
    """image/derived/build.sh: shardscore's image with `packages` (folders, wheels, requirements) installed."""
    built = subprocess.run(["bash", str(ROOT / "image" / "derived" / "build.sh"), ref, *packages],
                           capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHON": "python3"})
    assert built.returncode == 0 and built.stdout.strip().splitlines()[-1] == ref, built.stderr[-3000:]


def load_into_nodes(ref: str) -> None:
    """A locally built image into the cluster's nodes (no registry here)."""
    if os.environ.get("SHARDSCORE_E2E_KUBECONFIG"):
        kind = os.environ.get("KIND_CLUSTER", "shardscore-e2e")
        subprocess.run(["kind", "load", "docker-image", ref, "--name", kind], check=True, timeout=600)
    else:
        subprocess.run(["bash", str(CLUSTER_SH), "load-image", ref], check=True, timeout=600)
