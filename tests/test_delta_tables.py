"""Issue 20 §1, §2, Delta Lake: `--output delta+<location>` makes one log entry per run of exactly the run's committed
shards, tagged with the run (commit info) and its lease generation (a `txn` action); `--input
delta+<location>[@<version>]` scores one version's data files, pinned in the manifest. Runs are `shardscore run`
driver processes on the multi-node test cluster; tables live in local folders and on the S3 server, and are read back
with delta-rs's own engine (QueryBuilder, DataFusion). Its pyarrow dataset reader (DeltaTable.to_pyarrow_table) is
not used: with deltalake 1.6.6 and pyarrow 26 it aborts the interpreter at exit now and then ("terminate called
without an active exception")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import read_output
from deltalake import DeltaTable, QueryBuilder, write_deltalake
from support import DriverOutput, commit_count, start_driver, wait_for
from test_iceberg_output import FILES, ROWS, _input, _scored

pytestmark = pytest.mark.ray
MODEL = ["--model", "scale_model:load_model", "--key-columns", "id", "--batch-size", "200"]


def rows(location: str | Path, version: int | None = None, **storage: str) -> dict[int, int]:
    """id -> score, as delta-rs's engine reads the table (at a version); asserts each id is there once."""
    table = DeltaTable(str(location), version=version, storage_options=storage or None)
    got = pa.table(QueryBuilder().register("t", table).execute("select id, score from t").read_all())
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id is in the table more than once"
    return dict(zip(ids, got.column("score").to_pylist(), strict=True))


def _run(shardscore, inp: Path | str, out: str, factor: int, *args: str, **kw):
    return shardscore("run", "--input", str(inp), "--output", out, *MODEL, "--model-arg", f"factor={factor}", *args,
                      **kw)


def test_a_run_creates_the_table_in_one_version_tagged_with_the_run_and_a_rerun_commits_nothing(
        shardscore, tmp_path: Path):
    inp, out = _input(tmp_path), tmp_path / "table"
    r = _run(shardscore, inp, f"delta+{out}", 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert rows(out) == _scored(2)
    table, manifest = DeltaTable(str(out)), json.loads((out / "_manifest.json").read_text())
    assert table.version() == 0
    (info,) = table.history()
    assert info["shardscore.run-id"] == manifest["run_id"]
    assert info["shardscore.model-identity"] == manifest["model"]["identity"]
    generation = json.loads(next((out / "_shardscore" / "commits").glob("*.json")).read_text())["lease_generation"]
    assert table.transaction_version("shardscore") == generation
    assert manifest["table"] == {"format": "delta", "location": str(out), "version": 0, "committed_now": True,
                                 "commit_seconds": manifest["table"]["commit_seconds"]}
    assert table.schema().to_arrow().names == ["id", "score"]
    r = shardscore("status", f"delta+{out}")
    assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout + r.stderr
    # Again: every shard is committed and the table holds exactly their files, so nothing is committed.
    r = _run(shardscore, inp, f"delta+{out}", 2)
    assert r.returncode == 0 and f"{FILES} already committed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert DeltaTable(str(out)).version() == 0


def test_overwrite_replaces_every_row_in_one_version_and_a_failed_run_commits_nothing(shardscore, tmp_path: Path):
    inp, out = _input(tmp_path), tmp_path / "table"
    assert _run(shardscore, inp, f"delta+{out}", 2).returncode == 0
    r = _run(shardscore, inp, f"delta+{out}", 3)
    assert r.returncode == 2 and "scored by another model" in r.stderr, r.stderr[-3000:]
    # A run that fails (one input file unreadable) scores the rest and commits nothing: readers keep the first
    # run's rows, each once.
    (inp / "part-3.parquet").write_bytes(b"not parquet")
    r = _run(shardscore, inp, f"delta+{out}", 3, "--overwrite")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert DeltaTable(str(out)).version() == 0 and rows(out) == _scored(2)
    # Repaired, the rerun commits once: one version that replaces every row; the first stays readable.
    ids = np.arange(3 * ROWS, 4 * ROWS, dtype=np.int64)
    pq.write_table(pa.table({"id": ids, "x": ids.astype(np.float64)}), inp / "part-3.parquet")
    r = _run(shardscore, inp, f"delta+{out}", 3, "--overwrite")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = DeltaTable(str(out))
    assert table.version() == 1 and rows(out) == _scored(3) and rows(out, version=0) == _scored(2)
    assert table.history()[0]["operationParameters"]["mode"] == "Append"  # adds and removes in one entry


def test_a_driver_killed_before_the_table_commit_or_a_commit_that_fails_leaves_the_table_and_the_rerun_commits_once(
        ray_cluster, shardscore, tmp_path: Path):
    """Version 1's log file is taken by a named pipe once the run has read the table (version 0) and taken its lease,
    so no commit of the run can land (delta-rs finds the version taken, and what holds it is no commit). The driver
    is SIGKILLed once every shard is committed; a second run fails at the commit (exit 1); then, the pipe gone, the
    rerun scores nothing and adds exactly one version."""
    inp, out = _input(tmp_path), tmp_path / "table"
    assert _run(shardscore, inp, f"delta+{out}", 2).returncode == 0
    leases, commits = out / "_shardscore" / "lease", out / "_shardscore" / "commits"
    pipe = out / "_delta_log" / f"{1:020d}.json"
    held = len(list(leases.glob("*.json")))
    proc = start_driver(ray_cluster, "run", "--input", str(inp), "--output", f"delta+{out}", *MODEL, "--model-arg",
                        "factor=3", "--overwrite")
    output = DriverOutput(proc)  # read as printed, so that the driver never blocks on a full pipe
    try:
        wait_for(lambda: proc.poll() is not None or len(list(leases.glob("*.json"))) > held, 120,
                 "the run to take the table's lease")
        os.mkfifo(pipe)
        wait_for(lambda: proc.poll() is not None or [json.loads(p.read_text())["lease_generation"] > held
                                                     for p in commits.glob("*.json")] == [True] * FILES,
                 120, "every shard committed by the run")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, output.all(10)[-3000:]
    assert commit_count(out) == FILES and DeltaTable(str(out)).version() == 0 and rows(out) == _scored(2)
    r = _run(shardscore, inp, f"delta+{out}", 3, "--overwrite")
    assert r.returncode == 1 and "the table's commit lost to other writers 5 times" in r.stderr, r.stderr[-3000:]
    assert DeltaTable(str(out)).version() == 0 and rows(out) == _scored(2)
    pipe.unlink()
    r = _run(shardscore, inp, f"delta+{out}", 3, "--overwrite")
    assert r.returncode == 0 and f"{FILES} already committed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert DeltaTable(str(out)).version() == 1 and rows(out) == _scored(3)


COMMITS = """
import sys
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import write_deltalake
from shardscore.delta import DeltaTarget
from shardscore.storage import StorageOptions
from shardscore.tables import TableUnavailable

location = sys.argv[1]
write_deltalake(location, pa.table({"id": pa.array([-1], pa.int64()), "score": pa.array([-1], pa.int64())}))
ours = DeltaTarget("delta+" + location, StorageOptions())  # read at version 0: stale after the append below
write_deltalake(location, pa.table({"id": pa.array([-2], pa.int64()), "score": pa.array([-2], pa.int64())}),
                mode="append")
for name, score in (("a", 14), ("b", 16)):
    pq.write_table(pa.table({"id": pa.array([score // 2], pa.int64()), "score": pa.array([score], pa.int64())}),
                   f"{location}/data/shardscore-5/{name}.parquet")
print(ours.commit(["data/shardscore-5/a.parquet"], {"shardscore.run-id": "r1"}, 5))
print(ours.commit(["data/shardscore-5/a.parquet"], {"shardscore.run-id": "r2"}, 5))
try:
    ours.commit(["data/shardscore-5/b.parquet"], {"shardscore.run-id": "old"}, 4)
except TableUnavailable as exc:
    print(exc)
"""


def test_a_commit_after_another_writers_keeps_their_rows_and_a_superseded_run_commits_nothing(tmp_path: Path):
    """Driven from a process of its own, as the driver commits (no Ray): the handle was read before another writer
    appended; its commit goes on top and keeps that writer's rows. A run of an older lease generation than the
    table's `txn` version is refused."""
    location = tmp_path / "table"
    (location / "data" / "shardscore-5").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", COMMITS, str(location)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr[-3000:]
    version, again, refused = r.stdout.splitlines()
    assert (version, again) == ("2", "None")  # the table holds exactly our file already: nothing is committed
    assert "a newer shardscore run (lease generation 5) has committed" in refused
    assert rows(location) == {-1: -1, -2: -2, 7: 14}
    assert DeltaTable(str(location)).history()[0]["shardscore.run-id"] == "r1"


@pytest.mark.parametrize("option, uri, said", [
    ("--output", "delta+http://host/t", "not a Delta table's location"),
    ("--output", "delta+{folder}", "holds files (part-0.parquet"),
    ("--input", "delta+{tmp}/none", "holds no Delta table"),
    ("--input", "delta+{source}@7", "the Delta table cannot be read"),
    ("--input", "delta+{source}@latest", "'latest' is not a version of the table"),
])
def test_a_delta_table_that_cannot_be_used_is_refused_before_ray(cli, tmp_path: Path, option, uri, said):
    inp, source = _input(tmp_path), tmp_path / "source"
    write_deltalake(str(source), pa.table({"id": pa.array([1], pa.int64())}))
    uri = uri.format(folder=inp, tmp=tmp_path, source=source)
    given = {"--input": str(inp), "--output": str(tmp_path / "out"), option: uri}
    r = cli("run", "--input", given["--input"], "--output", given["--output"], *MODEL, "--model-arg", "factor=2")
    assert r.returncode == 2 and said in r.stderr, r.stderr[-3000:]
    assert "Started a local Ray" not in r.stderr and not (tmp_path / "out").exists()


def test_an_existing_table_the_predictions_do_not_fit_is_refused_before_ray_naming_the_columns(cli, tmp_path: Path):
    table = tmp_path / "table"
    write_deltalake(str(table), pa.table({"id": pa.array([1], pa.int64()), "label": pa.array(["a"])}))
    r = cli("run", "--input", str(_input(tmp_path)), "--output", f"delta+{table}", *MODEL, "--model-arg", "factor=2")
    where = f"the Delta table {table}"
    assert r.returncode == 2, r.stderr[-3000:]
    assert (f"column 'label' (string) of {where} is not among the predictions' columns; column 'score' (int64) of "
            f"the predictions is not in {where}") in r.stderr, r.stderr[-3000:]
    assert "Started a local Ray" not in r.stderr
    assert DeltaTable(str(table)).version() == 0 and not (table / "data").exists()


def test_a_model_that_cannot_answer_the_drivers_check_leaves_it_to_the_workers(shardscore, tmp_path: Path):
    """The driver's rows (table_fit) hold id 0, which the model raises on: the check is skipped, said on stderr, and
    the workers score the table's rows with id 0 quarantined (--max-bad-rows)."""
    table = tmp_path / "table"
    write_deltalake(str(table), pa.table({"id": pa.array([-1], pa.int64()), "score": pa.array([-2], pa.int64())}))
    r = shardscore("run", "--input", str(_input(tmp_path)), "--output", f"delta+{table}", "--model",
                   "bad_rows_model:load_model", "--model-arg", "bad=[0]", "--key-columns", "id", "--max-bad-rows", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ("the model's first predictions could not be made in the driver to check them against the Delta table "
            f"{table} (ValueError: cannot score id 0); each shard is checked as it is scored") in r.stderr
    assert rows(table) == {-1: -2} | {i: 2 * i for i in range(1, FILES * ROWS)}


def test_plan_says_what_the_run_would_create_and_writes_nothing(cli, tmp_path: Path):
    out = tmp_path / "table"
    r = cli("plan", "--input", str(_input(tmp_path)), "--output", f"delta+{out}", *MODEL, "--model-arg", "factor=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Delta table at {out}: absent, the run creates it" in r.stdout and "0 committed, 4 to score" in r.stdout
    assert not out.exists()


@pytest.mark.s3
def test_a_table_on_s3(shardscore, s3, tmp_path: Path):
    bucket, _ = s3.new_bucket("delta")
    r = _run(shardscore, _input(tmp_path), f"delta+s3://{bucket}/scores", 2, "--s3-endpoint", s3.endpoint,
             env=s3.credentials)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    storage = {"aws_endpoint_url": s3.endpoint, "aws_allow_http": "true", **{k.lower(): v for k, v in
                                                                           s3.credentials.items()}}
    assert rows(f"s3://{bucket}/scores", **storage) == _scored(2)
    table = DeltaTable(f"s3://{bucket}/scores", storage_options=storage)
    assert table.version() == 0 and all(uri.startswith(f"s3://{bucket}/scores/data/shardscore-")
                                        for uri in table.file_uris())


def _source(location: Path, batches: int = 3, rows_each: int = 400) -> None:
    """A table written by delta-rs: `batches` appends of `rows_each` rows (ids 0, 1, ...), one file and version each."""
    for i in range(batches):
        ids = np.arange(i * rows_each, (i + 1) * rows_each, dtype=np.int64)
        write_deltalake(str(location), pa.table({"id": ids, "fare": ids * 0.5}), mode="append")


def _scores(out: Path) -> dict[int, int]:
    table = read_output(out)
    return dict(zip(table.column("id").to_pylist(), table.column("score").to_pylist(), strict=True))


def test_a_version_is_scored_file_by_file_and_a_newer_one_is_handled_as_changed_input(shardscore, tmp_path: Path):
    source, out = tmp_path / "source", tmp_path / "out"
    _source(source)
    r = _run(shardscore, f"delta+{source}", str(out), 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _scores(out) == {i: 2 * i for i in range(1200)}
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["input_table"] == {"format": "delta", "location": str(source), "version": 2}
    assert manifest["totals"]["shards"] == 3
    # An append: its one new file is scored, the others are already committed.
    write_deltalake(str(source), pa.table({"id": np.arange(1200, 1300, dtype=np.int64), "fare": np.zeros(100)}),
                    mode="append")
    r = _run(shardscore, f"delta+{source}", str(out), 2)
    assert r.returncode == 0 and "3 already committed" in r.stdout and "100 rows scored this run" in r.stdout, r.stdout
    assert _scores(out) == {i: 2 * i for i in range(1300)}
    # An overwrite removes every file: without --incremental the gone files' predictions are refused, with it they
    # are removed and the new file scored. Version 0 alone is still there to score, as it was.
    write_deltalake(str(source), pa.table({"id": np.arange(5000, 5050, dtype=np.int64), "fare": np.zeros(50)}),
                    mode="overwrite")
    r = _run(shardscore, f"delta+{source}", str(out), 2)
    assert r.returncode == 2 and "its input file is gone from the input" in r.stderr, r.stderr[-3000:]
    r = _run(shardscore, f"delta+{source}", str(out), 2, "--incremental")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _scores(out) == {i: 2 * i for i in range(5000, 5050)}
    r = _run(shardscore, f"delta+{source}@0", f"delta+{tmp_path / 'first'}", 2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert rows(tmp_path / "first") == {i: 2 * i for i in range(400)}


def test_incremental_runs_into_a_table_add_the_new_files_rows_and_remove_the_gone_ones(shardscore, tmp_path: Path):
    """What a scheduled release with scheduleLayout incremental does at each tick, into one table."""
    inp, out = _input(tmp_path), tmp_path / "table"
    assert _run(shardscore, inp, f"delta+{out}", 2, "--incremental").returncode == 0
    ids = np.arange(FILES * ROWS, (FILES + 1) * ROWS, dtype=np.int64)
    pq.write_table(pa.table({"id": ids, "x": ids.astype(np.float64)}), inp / "part-new.parquet")
    r = _run(shardscore, inp, f"delta+{out}", 2, "--incremental")
    assert r.returncode == 0 and f"{ROWS} rows scored this run" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    (inp / "part-0.parquet").unlink()
    assert _run(shardscore, inp, f"delta+{out}", 2, "--incremental").returncode == 0
    assert DeltaTable(str(out)).version() == 2
    assert rows(out) == {i: 2 * i for i in range(ROWS, (FILES + 1) * ROWS)}
