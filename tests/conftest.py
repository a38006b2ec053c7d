"""Session fixtures: the real Ray cluster, S3, MLflow, PostgreSQL and Iceberg REST catalog servers, started once and
shared by the tests that need them; the chart rendered with its ci values files and its advertised combinations,
shared by the tests/test_chart*.py files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chartlib
from support import (BIN, ICEBERG_REST_JARS, MLFLOW_SERVER, POSTGRES_BINS, IcebergRestServer, MlflowServer,
                     PostgresServer, RayCluster, S3Server, base_env, make_tempdir, rmtree, start_iceberg_rest,
                     start_mlflow, start_postgres, start_ray_cluster, start_s3, stop_process, stop_ray_cluster)

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))


@pytest.fixture(scope="session")
def s3() -> S3Server:
    log_dir = make_tempdir("shardscore-s3-")
    server = start_s3(log_dir)
    yield server
    stop_process(server.process)
    rmtree(log_dir)


@pytest.fixture(scope="session")
def mlflow_server() -> MlflowServer:
    if not MLFLOW_SERVER.exists():
        pytest.skip(f"the MLflow tracking server is not installed ({MLFLOW_SERVER}): make test installs it")
    root = make_tempdir("shardscore-mlflow-")
    server = start_mlflow(root)
    yield server
    stop_process(server.process)
    rmtree(root)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    if not POSTGRES_BINS:
        pytest.skip("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): make test installs "
                    "Debian's postgresql (scripts/install-postgres.sh)")
    root = make_tempdir("shardscore-pg-")
    server = start_postgres(root)
    yield server
    server.stop()
    rmtree(root)


@pytest.fixture(scope="session")
def iceberg_rest() -> IcebergRestServer:
    if not shutil.which("java"):
        pytest.skip("java is not installed: the Iceberg REST catalog server needs Java 17+ (Debian's "
                    "openjdk-17-jre-headless)")
    if not any(ICEBERG_REST_JARS.glob("iceberg-open-api-*.jar")):
        pytest.skip(f"the Iceberg REST catalog server is not installed ({ICEBERG_REST_JARS}): make test fetches it "
                    "(scripts/install-iceberg-rest.sh)")
    root = make_tempdir("shardscore-iceberg-rest-")
    server = start_iceberg_rest(root)
    yield server
    stop_process(server.process)
    rmtree(root)


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    temp_dir = Path("/tmp") / f"ssray{os.getpid()}"  # short: Ray's socket paths must stay under 107 bytes
    cluster = start_ray_cluster(temp_dir)
    yield cluster
    stop_ray_cluster(cluster)


@pytest.fixture
def shardscore(ray_cluster: RayCluster):
    """Run the `shardscore` CLI as a separate driver process against the test cluster."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = {**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address, **(env or {})}
        return subprocess.run([str(BIN / "shardscore"), *args], env=full_env, capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture
def cli():
    """Run the `shardscore` CLI with no cluster (for checks that must fail before Ray starts)."""

    def run(*args: str, timeout: float = 120, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "shardscore"), *args], env=base_env(**(env or {})), capture_output=True,
                              text=True, timeout=timeout, cwd=cwd)

    return run


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every ci values file, and the defaults with only the required values."""
    out = {p.stem: chartlib.render([p]) for p in chartlib.CI_FILES}
    out["defaults"] = chartlib.render_advertised()
    return out


@pytest.fixture(scope="session")
def advertised() -> dict[str, list[dict]]:
    return {name: chartlib.render_advertised(sets, set_json, release)
            for name, sets, set_json, release in chartlib.ADVERTISED}
