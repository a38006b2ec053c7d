"""Issue 20 §1, Iceberg: `--output iceberg://<catalog>/<namespace>.<table>` makes one table commit per run of exactly
the run's committed shards, tagged with the run. Runs are `shardscore run` driver processes on the multi-node test
cluster; the catalog is pyiceberg's SQL catalog on SQLite (the embedded default) or on PostgreSQL, or Apache Iceberg's
REST catalog server, its warehouse a local folder or the S3 server; the table is read back with pyiceberg's own
scan."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import DriverOutput, commit_count, free_port, start_driver, wait_for

pytestmark = pytest.mark.ray

FILES, ROWS = 4, 500


def _input(root: Path) -> Path:
    inp = root / "in"
    inp.mkdir()
    for i in range(FILES):
        ids = np.arange(i * ROWS, (i + 1) * ROWS, dtype=np.int64)
        pq.write_table(pa.table({"id": ids, "x": ids.astype(np.float64)}), inp / f"part-{i}.parquet")
    return inp


class Catalog:
    """The test's catalog, SQL on SQLite unless `uri` says otherwise: the variables a run reads it from, and
    pyiceberg's own view of it."""

    def __init__(self, root: Path, warehouse: str = "", name: str = "t", uri: str = "", **extra: str):
        self.name, self.db = name, root / "catalog.db"
        self.warehouse = warehouse or f"file://{root}/warehouse"
        self.props = {"uri": uri or f"sqlite:///{self.db}", "warehouse": self.warehouse, **extra}
        self.env = {f"PYICEBERG_CATALOG__{name.upper()}__{k.upper().replace('.', '__').replace('-', '_')}": v
                    for k, v in self.props.items()}

    def load(self):
        """As a run loads it: load_catalog picks the catalog's type from its uri (http: REST, else SQL)."""
        from pyiceberg.catalog import load_catalog

        return load_catalog(self.name, **self.props)

    def table(self, name: str = "scores.taxi"):
        return self.load().load_table(name)

    def rows(self, name: str = "scores.taxi", snapshot_id: int | None = None) -> dict[int, int]:
        """id -> score, as pyiceberg's scan reads the table (at a snapshot); asserts each id is there once."""
        got = self.table(name).scan(snapshot_id=snapshot_id).to_arrow()
        ids = got.column("id").to_pylist()
        assert len(ids) == len(set(ids)), "an id is in the table more than once"
        return dict(zip(ids, got.column("score").to_pylist(), strict=True))


@pytest.fixture(params=["sqlite", "postgresql", "rest"])
def catalog(request, tmp_path: Path) -> Catalog:
    """The SQL catalog on SQLite (the embedded default), and on the tests' PostgreSQL server; the tests' Iceberg REST
    catalog server, emptied after the test (it serves one catalog to every test)."""
    if request.param == "sqlite":
        return Catalog(tmp_path)
    if request.param == "rest":
        server = request.getfixturevalue("iceberg_rest")
        request.addfinalizer(server.empty)
        return Catalog(tmp_path, uri=server.uri)
    return Catalog(tmp_path, uri=request.getfixturevalue("postgres").database(f"catalog_{uuid.uuid4().hex[:8]}"))


def _run(shardscore, inp: Path, catalog: Catalog, factor: int, *args: str):
    return shardscore("run", "--input", str(inp), "--output", "iceberg://t/scores.taxi", "--model",
                      "scale_model:load_model", "--model-arg", f"factor={factor}", "--key-columns", "id",
                      "--batch-size", "200", *args, env=catalog.env)


def _scored(factor: int) -> dict[int, int]:
    return {i: i * factor for i in range(FILES * ROWS)}


def _table_dir(catalog: Catalog) -> Path:
    return Path(catalog.warehouse.removeprefix("file://")) / "scores" / "taxi"


def test_a_run_creates_the_table_in_one_snapshot_tagged_with_the_run_and_a_rerun_commits_nothing(
        shardscore, catalog: Catalog, tmp_path: Path):
    inp = _input(tmp_path)
    r = _run(shardscore, inp, catalog, 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert catalog.rows() == _scored(2)
    table = catalog.table()
    manifest = json.loads((_table_dir(catalog) / "_manifest.json").read_text())
    (snapshot,) = table.snapshots()
    assert snapshot.summary["shardscore.run-id"] == manifest["run_id"]
    assert snapshot.summary["shardscore.model-identity"] == manifest["model"]["identity"]
    assert manifest["table"] == {"name": "scores.taxi", "catalog": "t", "snapshot_id": snapshot.snapshot_id,
                                 "committed_now": True, "commit_seconds": manifest["table"]["commit_seconds"]}
    assert [f.name for f in table.schema().fields] == ["id", "score"]
    r = shardscore("status", "iceberg://t/scores.taxi", env=catalog.env)
    assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout + r.stderr
    r = shardscore("runs", "--json", "iceberg://t/scores.taxi", env=catalog.env)
    assert r.returncode == 0 and [run["run_id"] for run in json.loads(r.stdout)] == [manifest["run_id"]], r.stdout
    # Again: every shard is committed and the table holds exactly their files, so nothing is committed.
    r = _run(shardscore, inp, catalog, 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [s.snapshot_id for s in catalog.table().snapshots()] == [snapshot.snapshot_id]


def test_overwrite_replaces_every_row_in_one_snapshot_and_a_failed_run_commits_nothing(
        shardscore, catalog: Catalog, tmp_path: Path):
    inp = _input(tmp_path)
    assert _run(shardscore, inp, catalog, 2).returncode == 0
    (first,) = catalog.table().snapshots()
    r = _run(shardscore, inp, catalog, 3)
    assert r.returncode == 2 and "scored by another model" in r.stderr, r.stderr[-3000:]
    # A run that fails (one input file unreadable) scores the rest, commits nothing to the table: readers keep
    # the first run's rows, each once.
    (inp / "part-3.parquet").write_bytes(b"not parquet")
    r = _run(shardscore, inp, catalog, 3, "--overwrite")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert [s.snapshot_id for s in catalog.table().snapshots()] == [first.snapshot_id]
    assert catalog.rows() == _scored(2)
    # Repaired, the rerun commits once: one new snapshot that replaces every row; the first stays readable.
    ids = np.arange(3 * ROWS, 4 * ROWS, dtype=np.int64)
    pq.write_table(pa.table({"id": ids, "x": ids.astype(np.float64)}), inp / "part-3.parquet")
    r = _run(shardscore, inp, catalog, 3, "--overwrite")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    snapshots = catalog.table().snapshots()
    assert [s.snapshot_id for s in snapshots][:1] == [first.snapshot_id] and len(snapshots) == 2
    assert snapshots[1].summary["deleted-data-files"] == str(FILES)
    assert catalog.rows() == _scored(3)
    assert catalog.rows(snapshot_id=first.snapshot_id) == _scored(2)


@contextlib.contextmanager
def _held_at_the_commit(ray_cluster, inp: Path, catalog: Catalog, factor: int):
    """A `--overwrite` run with another factor whose table commit waits: the SQLite catalog is locked once the run
    has read it and taken the table's lease, and the run is handed over (process, output) when every shard is
    committed by it; the lock is released on leaving."""
    table_dir = _table_dir(catalog)
    lease_dir, commits = table_dir / "_shardscore" / "lease", table_dir / "_shardscore" / "commits"
    held = len(list(lease_dir.glob("*.json")))
    proc = start_driver(ray_cluster, "run", "--input", str(inp), "--output", "iceberg://t/scores.taxi", "--model",
                        "scale_model:load_model", "--model-arg", f"factor={factor}", "--key-columns", "id",
                        "--overwrite", env=catalog.env)
    output, lock = DriverOutput(proc), None
    try:
        wait_for(lambda: proc.poll() is not None or len(list(lease_dir.glob("*.json"))) > held, 120,
                 "the run to take the table's lease")
        lock = sqlite3.connect(catalog.db, timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        wait_for(lambda: proc.poll() is not None or [
            json.loads(p.read_text())["lease_generation"] > held for p in commits.glob("*.json")] == [True] * FILES,
            120, "every shard committed by the run")
        assert proc.poll() is None, output.all(10)
        yield proc, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if lock is not None:
            lock.execute("ROLLBACK")
            lock.close()


def _scored_once(shardscore, tmp_path: Path) -> tuple[Path, Catalog, int]:
    """The input, its SQLite catalog and the snapshot a first run (factor 2) committed."""
    inp, catalog = _input(tmp_path), Catalog(tmp_path)
    assert _run(shardscore, inp, catalog, 2).returncode == 0
    (first,) = catalog.table().snapshots()
    return inp, catalog, first.snapshot_id


def _rerun_commits_once(shardscore, inp: Path, catalog: Catalog, first_snapshot: int) -> None:
    """The table as the first run left it; then a rerun that scores nothing and makes the one commit."""
    assert commit_count(_table_dir(catalog)) == FILES
    assert [s.snapshot_id for s in catalog.table().snapshots()] == [first_snapshot]
    assert catalog.rows() == _scored(2)
    r = _run(shardscore, inp, catalog, 3, "--overwrite")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{FILES} already committed" in r.stdout, r.stdout
    assert len(catalog.table().snapshots()) == 2
    assert catalog.rows() == _scored(3)


def test_a_driver_killed_before_the_table_commit_leaves_the_table_as_it_was_and_the_rerun_commits_once(
        ray_cluster, shardscore, tmp_path: Path):
    inp, catalog, first = _scored_once(shardscore, tmp_path)
    with _held_at_the_commit(ray_cluster, inp, catalog, 3) as (proc, _):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    _rerun_commits_once(shardscore, inp, catalog, first)


def test_a_catalog_that_fails_at_the_commit_ends_the_run_with_exit_1_and_the_rerun_commits_once(
        ray_cluster, shardscore, tmp_path: Path):
    inp, catalog, first = _scored_once(shardscore, tmp_path)
    with _held_at_the_commit(ray_cluster, inp, catalog, 3) as (proc, output):
        # SQLAlchemy's SQLite driver waits 5 s for a lock (sqlite3.connect's default timeout), then fails
        assert proc.wait(120) == 1, output.all(10)[-3000:]
    said = output.all(10)
    assert "the table's commit failed (OperationalError" in said and "database is locked" in said, said[-3000:]
    _rerun_commits_once(shardscore, inp, catalog, first)


COMMIT_RACE = """
import sys
import pyarrow as pa, pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from shardscore.iceberg import IcebergTable

ours = IcebergTable("iceberg://t/scores.taxi")  # loads the table: its metadata is stale after the append below
other = SqlCatalog("t", uri=sys.argv[1], warehouse=sys.argv[2]).load_table("scores.taxi")
other.append(pa.table({"id": pa.array([-1], pa.int64()), "score": pa.array([-1], pa.int64())}))
path = f"{ours.location}/data/shardscore-1/a.parquet"
pq.write_table(pa.table({"id": pa.array([7], pa.int64()), "score": pa.array([14], pa.int64())}),
               path.removeprefix("file://"))
print(ours.commit(["data/shardscore-1/a.parquet"], {"shardscore.run-id": "r1"}, 1))
print(ours.commit(["data/shardscore-1/a.parquet"], {"shardscore.run-id": "r2"}, 1))
"""


def test_a_commit_that_loses_a_race_with_another_writer_is_recomputed_and_keeps_the_other_writers_rows(
        tmp_path: Path):
    catalog = Catalog(tmp_path)
    cat = catalog.load()
    cat.create_namespace("scores")
    cat.create_table("scores.taxi", pa.schema([("id", pa.int64()), ("score", pa.int64())]))
    (_table_dir(catalog) / "data" / "shardscore-1").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", COMMIT_RACE, catalog.props["uri"], catalog.warehouse],
                       env={**os.environ, **catalog.env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    snapshot_id, again = r.stdout.split()
    assert again == "None"  # the table holds exactly our file already: nothing is committed
    snapshots = catalog.table().snapshots()
    assert [s.snapshot_id for s in snapshots][-1] == int(snapshot_id) and len(snapshots) == 2
    assert snapshots[-1].summary["shardscore.run-id"] == "r1"
    assert catalog.rows() == {-1: -1, 7: 14}


@pytest.mark.parametrize("output, env, said", [
    ("iceberg://nope/scores.taxi", {}, "catalog 'nope' cannot be used"),
    ("iceberg://t/notatable", {"PYICEBERG_CATALOG__T__URI": "sqlite:////tmp/x.db"}, "not a table name"),
    ("iceberg://t/scores.taxi", {"PYICEBERG_CATALOG__T__URI": "sqlite:////nonexistent-dir/catalog.db"},
     "catalog 't' cannot be"),
    ("iceberg://t/scores.taxi", {"PYICEBERG_CATALOG__T__URI": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"},
     "Connection refused"),
])
def test_a_table_output_that_cannot_be_used_is_refused_before_ray(cli, tmp_path: Path, output, env, said):
    r = cli("run", "--input", str(_input(tmp_path)), "--output", output, "--model", "scale_model:load_model",
            "--model-arg", "factor=2", env=env)
    assert r.returncode == 2 and said in r.stderr, r.stderr[-3000:]
    assert "Started a local Ray" not in r.stderr


def test_a_new_table_in_a_catalog_without_a_warehouse_is_refused_before_ray_naming_the_variable(cli, tmp_path: Path):
    r = cli("run", "--input", str(_input(tmp_path)), "--output", "iceberg://t/scores.taxi", "--model",
            "scale_model:load_model", "--model-arg", "factor=2",
            env={"PYICEBERG_CATALOG__T__URI": f"sqlite:///{tmp_path}/catalog.db"})
    assert r.returncode == 2 and "PYICEBERG_CATALOG__T__WAREHOUSE" in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("columns, said", [
    ([("id", pa.int64()), ("score", pa.string())],
     "column 'score' is int64 in the predictions but large_string in the Iceberg table scores.taxi"),
    ([("id", pa.int32()), ("score", pa.int64())],
     "column 'id' is int64 in the predictions but int32 in the Iceberg table scores.taxi"),
])
def test_an_existing_table_the_predictions_do_not_fit_is_refused_before_ray_naming_the_column_and_types(
        cli, tmp_path: Path, columns, said):
    """The model scores the first rows in the driver (table_fit); the run stops there with exit 2, and the table
    keeps no snapshot and no file of it."""
    catalog = Catalog(tmp_path)
    cat = catalog.load()
    cat.create_namespace("scores")
    cat.create_table("scores.taxi", pa.schema(columns))
    r = cli("run", "--input", str(_input(tmp_path)), "--output", "iceberg://t/scores.taxi", "--model",
            "scale_model:load_model", "--model-arg", "factor=2", "--key-columns", "id", env=catalog.env)
    assert r.returncode == 2 and said in r.stderr and "do not fit the existing table" in r.stderr, r.stderr[-3000:]
    assert "Started a local Ray" not in r.stderr
    assert catalog.table().snapshots() == [] and not (_table_dir(catalog) / "data").exists()


@pytest.mark.s3
def test_a_table_whose_warehouse_is_on_s3(shardscore, s3, tmp_path: Path):
    bucket, _ = s3.new_bucket("iceberg")
    catalog = Catalog(tmp_path, warehouse=f"s3://{bucket}/warehouse", **{"s3.endpoint": s3.endpoint})
    inp = _input(tmp_path)
    r = shardscore("run", "--input", str(inp), "--output", "iceberg://t/scores.taxi", "--model",
                   "scale_model:load_model", "--model-arg", "factor=2", "--key-columns", "id", "--s3-endpoint",
                   s3.endpoint, env={**catalog.env, **s3.credentials})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    os.environ.update(s3.credentials)
    assert catalog.rows() == _scored(2)
    (snapshot,) = catalog.table().snapshots()
    assert all(f.file_path.startswith(f"s3://{bucket}/warehouse/scores/taxi/data/shardscore-")
               for f in catalog.table().scan().plan_files() for f in [f.file])


def test_plan_says_what_the_run_would_create_and_writes_nothing(cli, tmp_path: Path):
    catalog = Catalog(tmp_path)
    r = cli("plan", "--input", str(_input(tmp_path)), "--output", "iceberg://t/scores.taxi", "--model",
            "scale_model:load_model", "--model-arg", "factor=2", env=catalog.env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Iceberg table scores.taxi (catalog t): absent, the run creates it at {catalog.warehouse}/scores/taxi" \
        in r.stdout, r.stdout
    assert "0 committed, 4 to score" in r.stdout and not _table_dir(catalog).exists()


def test_the_demo_scores_into_an_iceberg_table_on_the_embedded_catalog(cli, tmp_path: Path):
    r = cli("demo", "--iceberg", "--workdir", str(tmp_path / "demo"), "--shards", "2", "--rows-per-shard", "2000",
            timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Predictions are in the Iceberg table demo.predictions" in r.stdout, r.stdout
    demo = Catalog(tmp_path / "demo", name="demo")
    assert demo.load().load_table("demo.predictions").scan().to_arrow().num_rows == 4000
