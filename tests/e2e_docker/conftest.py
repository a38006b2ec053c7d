"""Fixtures of the Docker e2e: a Ray cluster of shardscore containers, shaped by the Helm chart, plus an S3 server.

Everything is real: the Docker engine, the image built by image/build.sh, `ray start` in containers on a
user-defined network, moto's S3 server, the Ray Jobs API. The containers are built from `helm template` output
the way the KubeRay operator would build the pods (see kuberay.py). All containers and the network carry the
label io.shardscore.e2e and are removed at the end, also when something failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import kuberay

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LABEL = "io.shardscore.e2e"
PREFIX = "shardscore-e2e"
NETWORK = f"{PREFIX}-net"
HEAD_ALIAS = "head"  # stands for the head Service (<cluster>-head-svc) that workers and the submitter dial
S3_ALIAS = "s3"
# The Secret the values file names (objectStore.credentialsSecret); moto accepts any credentials.
SECRETS = {"shardscore-s3": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}}
BUCKET = "bucket"
LOG_DIR = Path(os.environ.get("SHARDSCORE_E2E_LOGS", "/tmp/shardscore-e2e-docker-logs"))


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def remove_leftovers() -> None:
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False, timeout=120)
    nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    for net in nets:
        docker("network", "rm", net, check=False)


def wait_for(what: str, probe, timeout: float, interval: float = 1.0, on_timeout=None):
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last = exc
        time.sleep(interval)
    details = on_timeout() if on_timeout else ""
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s (last: {last!r}){details}")


def published_port(container: str, port: int) -> int:
    out = docker("port", container, f"{port}/tcp").stdout.strip().splitlines()
    return int(out[0].rsplit(":", 1)[1])


def http_get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read()


@dataclass
class Cluster:
    image: str
    rendered: list[dict[str, Any]]
    rayjob: dict[str, Any]
    groups: list[kuberay.RayGroup]
    containers: dict[str, str] = field(default_factory=dict)  # role -> container name
    group_of: dict[str, str] = field(default_factory=dict)  # container name -> group name
    ulimit_env: dict[str, str] = field(default_factory=dict)
    s3_port: int = 0
    dashboard_port: int = 0
    submissions: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)

    @property
    def head(self) -> str:
        return self.containers["head"]

    def workers(self, group: str | None = None) -> list[str]:
        return [c for c, g in self.group_of.items() if g != "head" and (group is None or g == group)]

    def ray_containers(self) -> list[str]:
        return list(self.group_of)

    def exec(self, container: str, *cmd: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return docker("exec", container, *cmd, timeout=timeout, check=check)

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_port}", region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"max_attempts": 3}))

    def job_info(self, job_id: str) -> dict[str, Any]:
        return json.loads(http_get(f"http://127.0.0.1:{self.dashboard_port}/api/jobs/{job_id}"))

    def submit(self, job_id: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run the K8sJobMode submitter: a separate container, the chart's submitter template, KubeRay's command."""
        container = kuberay.submitter_container(self.rayjob)
        env = kuberay.container_env(container, SECRETS)
        # What the operator adds to the submitter container.
        env.update(RAY_DASHBOARD_ADDRESS=f"{HEAD_ALIAS}:{kuberay.DASHBOARD_PORT}", RAY_JOB_SUBMISSION_ID=job_id)
        command = kuberay.submit_command(self.rayjob, f"{HEAD_ALIAS}:{kuberay.DASHBOARD_PORT}", job_id)
        name = f"{PREFIX}-submitter-{job_id.rsplit('-', 1)[-1]}"
        args = ["run", "--name", name, "--hostname", name, "--network", NETWORK, "--label", LABEL,
                *security_args(container), *memory_args(container)]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        args += [container.get("image") or self.image, "/bin/bash", "-ce", "--", command]
        try:
            proc = docker(*args, timeout=timeout, check=False)
            save_log(name, f"$ {command}\n{proc.stdout}{proc.stderr}")
        finally:
            docker("rm", "-f", name, check=False)
        proc.args = command  # what ran, for failure messages
        self.submissions[job_id] = proc
        return proc


def security_args(container: dict[str, Any]) -> list[str]:
    """The chart's container securityContext, as far as Docker has it (the user is the image's own: not passed)."""
    sc = container.get("securityContext") or {}
    args = []
    for cap in (sc.get("capabilities") or {}).get("drop") or []:
        args += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    return args


def memory_args(container: dict[str, Any]) -> list[str]:
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return ["--memory", str(kuberay.quantity_value(limit))] if limit is not None else []


def save_log(name: str, text: str) -> None:
    try:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        (LOG_DIR / f"{name}.log").write_text(text)
    except OSError:
        pass


def render_chart() -> list[dict[str, Any]]:
    helm = shutil.which("helm")
    if not helm:
        pytest.fail("helm is not on PATH (make e2e-docker installs it at .tools/bin/helm)")
    chart = ROOT / "helm" / "shardscore"
    if not (chart / "Chart.yaml").exists():
        pytest.fail(f"no chart at {chart}")
    cmd = [helm, "template", "e2e", str(chart), "-f", str(HERE / "values.yaml")]
    image = os.environ.get("SHARDSCORE_IMAGE")
    if image:  # test another image: the chart renders it into every pod
        repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        cmd += ["--set", f"image.repository={repo}", "--set-string", f"image.tag={tag}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"helm template failed:\n{proc.stderr}")
    return kuberay.load_documents(proc.stdout)


def container_hard_nofile(image: str) -> int:
    out = docker("run", "--rm", image, "bash", "-c", "ulimit -Hn").stdout.strip()
    return 1 << 40 if out == "unlimited" else int(out)


def run_ray_container(cluster: Cluster, group: kuberay.RayGroup, name: str, ulimit_env: dict[str, str],
                      publish: list[int]) -> None:
    env = kuberay.container_env(group.container, SECRETS)
    # What the operator adds to Ray containers (RAY_CLUSTER_NAME, RAY_IP, ...; usage stats flag), and a test-only
    # switch: no usage-stats reporting attempts from a machine without internet.
    env.setdefault("RAY_USAGE_STATS_KUBERAY_IN_USE", "1")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_CLUSTER_NAME", "e2e")
    if group.node_type == "worker":
        env.setdefault("RAY_IP", HEAD_ALIAS)
        env.setdefault("FQ_RAY_IP", HEAD_ALIAS)
        env.setdefault("RAY_PORT", str(kuberay.GCS_PORT))
    env.update(ulimit_env)
    args = ["run", "-d", "--name", name, "--hostname", name, "--network", NETWORK, "--label", LABEL,
            *security_args(group.container), *memory_args(group.container)]
    shm = group.shm_size_bytes()
    if shm:
        args += ["--shm-size", str(shm)]
    if group.node_type == "head":
        args += ["--network-alias", HEAD_ALIAS]
    for port in publish:
        args += ["-p", f"127.0.0.1::{port}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args += [group.container.get("image") or cluster.image, *group.container_args(HEAD_ALIAS)]
    docker(*args)
    cluster.group_of[name] = group.name


def ray_nodes(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.exec(cluster.head, "ray", "list", "nodes", "--format", "json", "--detail", timeout=60).stdout
    return json.loads(out[out.index("["):])


def dump_logs(cluster: Cluster) -> str:
    """Save every container's log (and the head's Ray logs) to LOG_DIR; return a short tail for messages."""
    tails = []
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for name in cluster.containers.values():
        proc = docker("logs", name, check=False)
        text = proc.stdout + proc.stderr
        save_log(name, text)
        tails.append(f"--- {name} (last lines) ---\n" + "\n".join(text.splitlines()[-15:]))
    head = cluster.containers.get("head")
    if head:
        with open(LOG_DIR / "head-ray-logs.tar", "wb") as f:
            subprocess.run(["docker", "cp", f"{head}:/tmp/ray/session_latest/logs", "-"], stdout=f,
                           stderr=subprocess.DEVNULL, timeout=60)
    return "\n" + "\n".join(tails) + f"\n(full logs in {LOG_DIR})"


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest):
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers (run `bash scripts/docker-engine.sh` or `make e2e-docker`)")
    rendered = render_chart()
    rayjobs = [d for d in rendered if d.get("kind") == "RayJob"]
    assert len(rayjobs) == 1, f"expected one RayJob in the rendered chart, got {len(rayjobs)}"
    rayjob = rayjobs[0]
    cluster_spec = rayjob["spec"].get("rayClusterSpec")
    if cluster_spec is None:
        clusters = [d for d in rendered if d.get("kind") == "RayCluster"]
        assert clusters, "the RayJob has no rayClusterSpec and the chart rendered no RayCluster"
        cluster_spec = clusters[0]["spec"]
    groups = kuberay.cluster_groups(cluster_spec)
    image = groups[0].container["image"]
    docker("image", "inspect", image)  # built by image/build.sh; fails clearly when missing

    remove_leftovers()
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    _STARTED.append(True)
    c = Cluster(image=image, rendered=rendered, rayjob=rayjob, groups=groups)

    def teardown() -> None:
        if request.session.testsfailed:
            try:
                dump_logs(c)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        if os.environ.get("SHARDSCORE_E2E_KEEP") == "1":
            print(f"\nSHARDSCORE_E2E_KEEP=1: containers kept; remove them with: docker rm -f $(docker ps -aq "
                  f"--filter label={LABEL}); docker network rm {NETWORK}")
            return
        remove_leftovers()

    request.addfinalizer(teardown)

    # Docker gives containers the daemon's RLIMIT_NOFILE (20000:20000 on the project's machines) and, without
    # CAP_SYS_RESOURCE, neither the container nor `docker run --ulimit` may raise the hard limit: KubeRay's
    # `ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}` would fail (with a warning; Ray then starts anyway).
    # KubeRay reads that variable for exactly this: set it to the hard limit when that is below 65536.
    hard = container_hard_nofile(image)
    ulimit_env = {"RAY_START_ULIMIT_OPEN_FILES": str(hard)} if hard < 65536 else {}
    c.ulimit_env = ulimit_env

    docker("network", "create", "--label", LABEL, NETWORK)
    s3_image = os.environ.get("SHARDSCORE_S3_IMAGE", "shardscore-s3:test")
    c.containers["s3"] = f"{PREFIX}-s3"
    docker("run", "-d", "--name", c.containers["s3"], "--hostname", c.containers["s3"], "--network", NETWORK,
           "--network-alias", S3_ALIAS, "--label", LABEL, "-p", "127.0.0.1::5000", s3_image)

    c.containers["head"] = f"{PREFIX}-head"
    run_ray_container(c, groups[0], c.head, ulimit_env, publish=[kuberay.DASHBOARD_PORT])
    for group in groups[1:]:
        for i in range(group.replicas):
            name = f"{PREFIX}-{group.name}-worker-{i}"
            c.containers[f"{group.name}-{i}"] = name
            run_ray_container(c, group, name, ulimit_env, publish=[])

    c.s3_port = published_port(c.containers["s3"], 5000)
    c.dashboard_port = published_port(c.head, kuberay.DASHBOARD_PORT)
    wait_for("S3 server", lambda: c.s3().list_buckets() is not None, 60, on_timeout=lambda: dump_logs(c))
    c.s3().create_bucket(Bucket=BUCKET)

    expected = sum(g.replicas for g in groups)
    wait_for("Ray dashboard (api/gcs_healthz)",
             lambda: b"success" in http_get(f"http://127.0.0.1:{c.dashboard_port}/api/gcs_healthz"), 180,
             interval=2, on_timeout=lambda: dump_logs(c))
    wait_for(f"{expected} alive Ray nodes",
             lambda: len([n for n in ray_nodes(c) if n.get("state") == "ALIVE"]) >= expected, 240, interval=3,
             on_timeout=lambda: dump_logs(c))
    return c


@pytest.fixture(scope="session")
def sample_data(cluster: Cluster) -> dict[str, Any]:
    """6 shards x 2000 rows written into S3 by `shardscore sample-data` in a container on the network."""
    spec = {"shards": 6, "rows_per_shard": 2000}
    container = cluster.groups[0].container
    env = kuberay.container_env(container, SECRETS)
    args = ["run", "--rm", "--network", NETWORK, "--label", LABEL]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    proc = docker(*args, cluster.image, "shardscore", "sample-data", "--output", f"s3://{BUCKET}/input",
                  "--shards", str(spec["shards"]), "--rows-per-shard", str(spec["rows_per_shard"]),
                  "--s3-endpoint", f"http://{S3_ALIAS}:5000", timeout=300, check=False)
    assert proc.returncode == 0, f"sample-data failed:\n{proc.stdout}\n{proc.stderr}"
    return spec


@pytest.fixture(scope="session")
def first_run(cluster: Cluster, sample_data: dict[str, Any]) -> dict[str, Any]:
    job_id = f"shardscore-e2e-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    proc = cluster.submit(job_id)
    return {"job_id": job_id, "proc": proc, "seconds": time.monotonic() - started}


_STARTED: list[bool] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if _STARTED and exitstatus != 0 and LOG_DIR.exists():
        terminalreporter.write_line(f"e2e-docker: container and Ray logs in {LOG_DIR}")
