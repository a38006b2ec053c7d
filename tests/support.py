"""Real parts for the tests: a multi-node Ray cluster on loopback (`ray start`), an S3 server (moto), an MLflow
tracking server, a PostgreSQL server and an Iceberg REST catalog server on loopback.

Each part is started as its own processes, the way an operator would start them, and torn down afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS_DIR = Path(__file__).resolve().parent / "models"
_TOKEN = secrets.token_hex(16)
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """Environment for every process the tests start: venv first on PATH, test models importable, S3 creds."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(MODELS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(S3_ENV)
    env.pop("RAY_ADDRESS", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Token authentication, as Ray >= 2.5x enables it: every process of the test cluster shares one token.
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = _TOKEN
    env.update(extra)
    return env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class S3Server:
    """moto's S3 server: on loopback for the suite, on the address pods reach the host at for the cluster e2e."""

    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    credentials: dict[str, str]  # the AWS_* variables its clients use

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint,
                            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
                            region_name=self.credentials["AWS_REGION"])

    def new_bucket(self, prefix: str):
        """A fresh bucket `<prefix>-<8 hex>` (a test's own), and a client: (name, client)."""
        import uuid

        name, client = f"{prefix}-{uuid.uuid4().hex[:8]}", self.client()
        client.create_bucket(Bucket=name)
        return name, client


def start_s3(log_dir: Path, host: str = "127.0.0.1", credentials: dict[str, str] = S3_ENV,
             kind: type[S3Server] = S3Server, **env: str) -> S3Server:
    """Starts moto_server on a free port of `host` (log in log_dir/moto.log) and waits until it answers; `kind`
    is the S3Server subclass to return, `env` more variables for the server."""
    port = free_port(host)
    log_path = log_dir / "moto.log"
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", host, "-p", str(port)], stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT, env=base_env(**credentials, **env))
    server = kind(host, port, proc, log_path, dict(credentials))

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(server.endpoint, timeout=1)
            return True
        except OSError as exc:
            return getattr(exc, "code", None) is not None  # an HTTP error answer means it is up

    wait_for(up, 60, f"the S3 server on {server.endpoint}")
    return server


#: The MLflow tracking server's own venv (make test builds it from tests/mlflow-server.lock): the server's mlflow
#: pins a pyarrow older than the project's, while the job's tests use the client, mlflow-skinny, in the main venv.
MLFLOW_SERVER = ROOT / ".tools" / "mlflow" / "bin" / "mlflow"


@dataclass
class HttpServer:
    """A server process of the tests' own, answering HTTP at `uri`."""

    host: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_answering(self, path: str, what: str) -> None:
        """Until GET <path> answers 200; a server that exits first fails the wait with its log's tail."""
        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited ({self.process.returncode}): {self.log_path.read_text()[-2000:]}")
            try:
                return urllib.request.urlopen(f"{self.uri}{path}", timeout=1).status == 200
            except OSError:
                return False

        wait_for(up, 120, f"{what} on {self.uri}")


class MlflowServer(HttpServer):
    """`mlflow server`: a SQLite backend store under its root, artifacts served through it (the suite's) or kept by
    the clients themselves in an object store (the cluster e2e's)."""


def start_mlflow(root: Path, host: str = "127.0.0.1", artifact_root: str = "") -> MlflowServer:
    """Starts the tracking server on a free port of `host` and waits for its /health. With `artifact_root` (an s3://
    URI) the server only records where artifacts are, and its clients read and write them there themselves
    (`--no-serve-artifacts`); without, it serves them from root/artifacts."""
    port = free_port(host)
    log_path = root / "mlflow.log"
    artifacts = (["--default-artifact-root", artifact_root, "--no-serve-artifacts"] if artifact_root
                 else ["--artifacts-destination", str(root / "artifacts")])
    proc = subprocess.Popen([str(MLFLOW_SERVER), "server", "--host", host, "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", *artifacts, "--workers", "1"],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=root)
    server = MlflowServer(host, port, proc, log_path)
    server.wait_answering("/health", "the MLflow tracking server")
    return server


@dataclass
class RayCluster:
    """A head (no CPUs: like the chart's head, it runs no scoring), a CPU worker and a `--num-gpus 1` worker."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    env: dict[str, str]
    node_ids: dict[str, str] = field(default_factory=dict)  # role -> Ray node id
    metrics_ports: list[int] = field(default_factory=list)  # each node's Prometheus endpoint

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ray(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """`ray <args>`; with `check`, a failure raises naming what the CLI printed (CalledProcessError hides it)."""
        done = subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def jobs_api_ready(self) -> bool:
        """The Jobs API can take a submission: the dashboard answers, and the head's dashboard agent has registered
        its address, which JobHead._get_head_node_agent (ray/dashboard/modules/job/job_head.py) waits for only
        10 s (WAIT_AVAILABLE_AGENT_TIMEOUT) before failing the submission. In a process with the cluster's
        environment, which holds its auth token."""
        key = f"DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX:{self.node_ids['head']}"  # JobHead._fetch_agent_info's key
        script = ("import sys\nfrom ray._raylet import GcsClient\nfrom ray.job_submission import JobSubmissionClient\n"
                  f"JobSubmissionClient({self.dashboard!r})\n"
                  f"sys.exit(0 if GcsClient(address={self.address!r}).internal_kv_get({key.encode()!r}, "
                  "namespace=b'dashboard') else 1)")
        return subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True,
                              timeout=60).returncode == 0

    def nodes(self) -> list[dict]:
        script = "import json, ray; ray.init(); print(json.dumps(ray.nodes()))"
        out = subprocess.run([sys.executable, "-c", script], env={**self.env, "RAY_ADDRESS": self.address},
                             capture_output=True, text=True, check=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])


#: Debian's PostgreSQL server binaries (scripts/install-postgres.sh, which make test runs, installs them).
POSTGRES_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@dataclass
class PostgresServer:
    """A PostgreSQL server of the tests' own (trust authentication on loopback; from `address`, a password), run as
    the `postgres` user under root since the server refuses to run as root."""

    port: int
    process: subprocess.Popen
    root: Path
    address: str = "127.0.0.1"
    password: str = ""

    def uri_from(self, database: str) -> str:
        """How a client elsewhere (a pod) reaches `database`: through `address`, with the password."""
        return f"postgresql+psycopg2://postgres:{self.password}@{self.address}:{self.port}/{database}"

    def database(self, name: str) -> str:
        """A new database `name`, as an SQLAlchemy URI (psycopg2, as pyiceberg's sql-postgres extra installs)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE runs outside a transaction
        try:
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for the clients to leave)."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_postgres(root: Path, address: str = "127.0.0.1") -> PostgresServer:
    """initdb into root/data, then `postgres` on a free port of loopback (and of `address`, where clients give the
    password it sets) until it answers."""
    bin_dir = POSTGRES_BINS[-1].parent
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user)
    data, log_path = root / "data", root / "postgres.log"
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True, user=user)
    password = secrets.token_hex(16) if address != "127.0.0.1" else ""
    if password:  # after initdb's own lines (loopback trusted): any other client gives the password
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    port = free_port()
    listen = ",".join(dict.fromkeys(["127.0.0.1", address]))
    proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
                             "-c", f"listen_addresses={listen}", "-c", "fsync=off"],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, user=user)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(up, 60, f"PostgreSQL on 127.0.0.1:{port}")
    if password:
        subprocess.run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                        f"ALTER USER postgres PASSWORD '{password}'"], check=True, capture_output=True)
    return PostgresServer(port, proc, root, address, password)


#: The jars of Iceberg's REST catalog server (scripts/install-iceberg-rest.sh, which make test runs, fetches them).
ICEBERG_REST_JARS = ROOT / ".tools" / "iceberg-rest" / "lib"


class IcebergRestServer(HttpServer):
    """Apache Iceberg's own REST catalog server (RESTCatalogServer, as the apache/iceberg-rest-fixture image runs it):
    a JDBC catalog on SQLite under its root behind the REST API. It serves one catalog, so the tests that share it
    empty it after each (`empty`)."""

    def empty(self) -> None:
        """Drops every table and namespace (not their files: each test's warehouse is its own tmp_path), so that the
        next test finds the catalog as new."""
        from pyiceberg.catalog.rest import RestCatalog

        catalog = RestCatalog("rest", uri=self.uri)
        for namespace in catalog.list_namespaces():
            for table in catalog.list_tables(namespace):
                catalog.drop_table(table)
            catalog.drop_namespace(namespace)


def start_iceberg_rest(root: Path) -> IcebergRestServer:
    """`java -cp <jars> org.apache.iceberg.rest.RESTCatalogServer` on a free port (it listens on every address; its
    CATALOG_* variables are catalog properties: CATALOG_REST_PORT is rest.port), its catalog in root/catalog.db and
    its default warehouse root/warehouse (a table the tests create is given its location), until GET /v1/config
    answers."""
    port, log_path = free_port(), root / "iceberg-rest.log"
    env = {**os.environ, "CATALOG_REST_PORT": str(port), "CATALOG_URI": f"jdbc:sqlite:{root}/catalog.db",
           "CATALOG_WAREHOUSE": f"file://{root}/warehouse", "CATALOG_JDBC_STRICT__MODE": "true"}
    proc = subprocess.Popen(["java", "-cp", f"{ICEBERG_REST_JARS}/*", "org.apache.iceberg.rest.RESTCatalogServer"],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env, cwd=root)
    server = IcebergRestServer("127.0.0.1", port, proc, log_path)
    server.wait_answering("/v1/config", "the Iceberg REST catalog server")
    return server


def _node_args(cluster: RayCluster) -> list[str]:
    """Ports every raylet on one machine must not share."""
    metrics = free_port()
    cluster.metrics_ports.append(metrics)
    return ["--node-ip-address", "127.0.0.1", "--node-manager-port", str(free_port()),
            "--object-manager-port", str(free_port()),
            "--metrics-export-port", str(metrics), "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
            "--object-store-memory", str(300 * 2**20)]


#: The worker nodes of the tests' clusters, by the resource each has: (CPUs, GPUs).
WORKER_NODES = {"cpu_group": ("2", "0"), "gpu_group": ("1", "1")}

#: `shardscore run` options that keep a run to one worker process at a time (2 CPUs: only the CPU node has them), for
#: the tests of a model library's answers: every worker process imports the library, the costliest part of a run's
#: start (tests/test_hf_model.py took 206 s and 343 CPU seconds with a worker per CPU, 141 s and 183 with one).
ONE_WORKER = ("--num-cpus-per-worker", "2")


def start_ray_cluster(temp_dir: Path, **env: str) -> RayCluster:
    """The suite's cluster; `env` reaches every node's processes (Ray's agents included). Each worker node keeps its
    session in `<temp_dir>-<role>`, as pods each have their own disk: nodes sharing one session folder share one
    unpacked runtime_env working_dir, which one node's runtime_env agent deletes while another's job runs in it, and
    one logs folder, whose every worker log each node's log monitor tracks and stats ten times a second
    (ray/_private/log_monitor.py, LogMonitor.run: the idle cluster's largest CPU cost over a long suite).

    Metrics go to the nodes' endpoints every 5 s instead of Ray's 10 (RAY_metrics_report_interval_ms, read by the
    raylets, the core workers and the agents): the metrics tests watch a task RUNNING that runs about 12 s. Each
    report costs every worker process and agent some CPU, so not every second.

    Each log monitor looks for new log files every 0.5 s instead of every 0.1 s (RAY_LOG_MONITOR_MANY_FILES_THRESHOLD
    0: LogMonitor.should_update_filenames globs at every turn of its 0.1 s loop only while it tracks fewer files than
    that). Those globs were 28 of 38 py-spy samples of the CPU node's log monitor in a `make test` run, which had
    used 7% of a core for 33 minutes. A worker's log file appears when the worker starts (the run's warm-up), so its
    lines still reach the driver.

    Every port is a free one, the head's Ray Client server's too: Ray's default, 10001, is one per machine, and a
    test's own cluster (tests/test_code_package.py) runs beside this one."""
    gcs, dash = free_port(), free_port()
    cluster = RayCluster(temp_dir, gcs, dash, base_env(RAY_metrics_report_interval_ms="5000",
                                                       RAY_LOG_MONITOR_MANY_FILES_THRESHOLD="0", **env))
    head = ["start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
            "--num-cpus", "0", "--num-gpus", "0", "--temp-dir", str(temp_dir), "--resources", '{"head": 1}',
            "--ray-client-server-port", str(free_port()), *_node_args(cluster)]
    cluster.ray(*head)
    for role, (cpus, gpus) in WORKER_NODES.items():
        cluster.ray("start", "--address", cluster.address, "--num-cpus", cpus, "--num-gpus", gpus,
                    "--resources", json.dumps({role: 1}), "--temp-dir", f"{temp_dir}-{role}", *_node_args(cluster))

    def all_nodes():
        nodes = [n for n in cluster.nodes() if n["Alive"]]
        return nodes if len(nodes) == 3 else None

    for node in wait_for(all_nodes, 120, "3 live Ray nodes", interval=1):
        role = next(r for r in ("head", *WORKER_NODES) if r in node["Resources"])
        cluster.node_ids[role] = node["NodeID"]
    wait_for(cluster.jobs_api_ready, 120, "the Jobs API (dashboard and the head's agent)", interval=0.5)
    return cluster


def kill_processes_mentioning(path: Path, gcs_port: int | None = None) -> None:
    """Stop one cluster and only it: its GCS, raylets and agents name its temp dir; workers are their children.
    The head's Ray Client server names neither, only the GCS's address (`--address=<node ip>:<gcs_port>`:
    ray/_private/services.py, start_ray_client_server), and outlived every cluster until it was matched on that.

    (`ray stop` would kill every Ray process on the machine, other clusters and containers' included.)
    """
    import psutil

    def ours(cmdline: list[str]) -> bool:
        return any(str(path) in part or (gcs_port is not None and part.startswith("--address=")
                                         and part.endswith(f":{gcs_port}")) for part in cmdline)

    me = psutil.Process()
    spare = {me.pid, *(p.pid for p in me.parents())}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid not in spare and ours(proc.info["cmdline"] or []):
            try:
                victims = [*proc.children(recursive=True), proc]
            except psutil.Error:
                continue
            for victim in victims:
                try:
                    victim.kill()
                except psutil.Error:
                    pass


def stop_ray_cluster(cluster: RayCluster) -> None:
    """Its processes, then every node's session folder (`<temp_dir>` and `<temp_dir>-<role>`)."""
    kill_processes_mentioning(cluster.temp_dir, cluster.gcs_port)
    for folder in (cluster.temp_dir, *(Path(f"{cluster.temp_dir}-{role}") for role in WORKER_NODES)):
        rmtree(folder)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def start_driver(cluster: RayCluster, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A `shardscore` driver process on the cluster, in its own session (so tests can signal or kill it alone)."""
    full_env = {**cluster.env, "RAY_ADDRESS": cluster.address, **(env or {})}
    return subprocess.Popen([str(BIN / "shardscore"), *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


class DriverOutput:
    """A start_driver process's output (stderr merged into stdout), read by a thread as it is printed, so that a test
    can wait for a line (`wait_for(lambda: "..." in output.text(), ...)`) while the driver runs."""

    def __init__(self, proc: subprocess.Popen):
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._lines.append(line)

    def text(self) -> str:
        """What the driver has printed so far."""
        return "".join(self._lines)

    def all(self, timeout: float) -> str:
        """Everything the driver printed, once its output is closed (it exited), waiting up to `timeout` seconds."""
        self._reader.join(timeout)
        return self.text()


def commit_count(out: Path) -> int:
    """Shards committed so far under a local output (its commit records)."""
    d = out / "_shardscore" / "commits"
    return len(list(d.glob("*.json"))) if d.exists() else 0


def commit_records(out: Path) -> list[dict]:
    """The commit records of a local output's shards so far (commit.ShardResult.to_dict), by file name."""
    d = out / "_shardscore" / "commits"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() else []


TEAM_MODEL = """import pandas as pd

EVEN = {even}


class Model:
    \"\"\"Pickled by reference to this module: each worker scores with the code its own node imports.\"\"\"

    columns = ["passenger_count"]

    def __call__(self, batch):
        return pd.DataFrame({{"score": (batch["passenger_count"] % 2 == 0) == EVEN}})


def load_model():
    return Model()
"""

TEAM_PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "teammodel"
version = "{version}"
dependencies = ["pandas"]

[tool.setuptools]
packages = ["teammodel"]
"""


def write_team_project(root: Path, even: bool = True) -> Path:
    """A team's project that is installed nowhere: the package `teammodel` (`teammodel.score:load_model` scores
    passenger_count is even, as the dummy model does; with even=False, is odd) and its pyproject.toml."""
    (root / "teammodel").mkdir(parents=True, exist_ok=True)
    (root / "teammodel" / "__init__.py").write_text("")
    (root / "teammodel" / "score.py").write_text(TEAM_MODEL.format(even=even))
    (root / "pyproject.toml").write_text(TEAM_PYPROJECT.format(version="1.0.0" if even else "2.0.0"))
    return root
