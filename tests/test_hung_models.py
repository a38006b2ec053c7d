"""Hung models and dying workers (issue 19 §2, §3): with --batch-timeout, a model call that takes longer ends its
worker process, the batch is tried once more on a fresh one, then its rows are rejected within --max-bad-rows or
the shard fails, named with the rows and the timeout; a worker that keeps dying on a shard fails that shard alone,
with a hint, and its bundle-mates are scored. Runs are `shardscore run` driver processes on the multi-node test
cluster; the core's watchdog is also tested alone, with no process ended.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from datasets import read_output

#: Input files of unique ids (file i holds 10000*i ...), 1000 rows each in row groups of 250; shards of 500 rows.
FILES, ROWS = 4, 1000
#: The id the model hangs on: in shard f1.parquet#rg2-3 (input rows 500..999), the batch of input rows 700..799.
HANG = 10750
MODEL = ["--model", "hang_model:load_model", "--key-columns", "id", "--batch-size", "100", "--max-rows-per-shard",
         "500"]


def _ids(inp: Path, files: int = FILES, rows: int = ROWS, base: int = 0) -> Path:
    inp.mkdir()
    for i in range(files):
        ids = np.arange(rows, dtype=np.int64) + 10000 * i + base
        pq.write_table(pa.table({"id": ids}), inp / f"f{i:02d}.parquet" if files > 10 else inp / f"f{i}.parquet",
                       row_group_size=250)
    return inp


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def _scored(out: Path) -> list[int]:
    table = read_output(out)
    ids = table.column("id").to_pylist()
    assert table.column("score").to_pylist() == [2 * i for i in ids]
    return sorted(ids)


def _everything_but(skipped: range) -> list[int]:
    return sorted(set(10000 * f + r for f in range(FILES) for r in range(ROWS)) - set(skipped))


@pytest.mark.ray
def test_a_batch_that_hangs_twice_is_rejected_and_every_other_row_scored_once(shardscore, tmp_path: Path):
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, "--model-arg", f"hang=[{HANG}]",
                   "--batch-timeout", "2", "--max-bad-rows", "100")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    hung = range(10700, 10800)
    assert _scored(out) == _everything_but(hung)
    rows = sorted(ds.dataset(str(out / "_rejected"), format="parquet").to_table().to_pylist(),
                  key=lambda row: row["input_row"])
    message = ("the model's call on input rows 700..799 took longer than --batch-timeout 2 s 2 time(s), each on a "
               "fresh worker process (a hung call cannot be interrupted, so the process was ended)")
    assert rows == [{"input_file": "f1.parquet", "input_row": i - 10000, "id": i, "error_type": "BatchTimeout",
                     "error": message} for i in hung]
    m = manifest(out)
    assert m["status"] == "succeeded" and m["totals"]["rows_rejected"] == 100 and m["options"]["batch_timeout"] == 2
    # A rerun has nothing left to do, and no batch to wait for.
    r = shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, "--model-arg", f"hang=[{HANG}]",
                   "--batch-timeout", "2", "--max-bad-rows", "100")
    assert r.returncode == 0 and "8 already committed (skipped)" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.ray
def test_strict_a_batch_that_hangs_fails_its_shard_by_rows_and_timeout_on_actors(shardscore, tmp_path: Path):
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, "--model-arg", f"hang=[{HANG}]",
                   "--model-arg", "batch_format=pyarrow", "--strategy", "actors", "--batch-timeout", "2",
                   "--max-failed-shards", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    failures = manifest(out)["failures"]
    assert [f["shard_id"] for f in failures] == ["f1.parquet#rg2-3"]
    assert failures[0]["reason"] == (
        "the model failed on rows 200..299: BatchTimeout: the model's call on input rows 700..799 took longer than "
        "--batch-timeout 2 s 2 time(s), each on a fresh worker process (a hung call cannot be interrupted, so the "
        "process was ended)")
    assert _scored(out) == _everything_but(range(10500, 11000))
    assert not (out / "_rejected").exists()


@pytest.mark.ray
def test_without_retries_left_the_overrun_is_named_on_the_failed_shard(shardscore, tmp_path: Path):
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, "--model-arg", f"hang=[{HANG}]",
                   "--batch-timeout", "2", "--max-bad-rows", "100", "--max-retries", "0")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    failures = manifest(out)["failures"]
    assert [(f["shard_id"], f["reason"]) for f in failures] == [(
        "f1.parquet#rg2-3",
        "the model's call on input rows 700..799 took longer than --batch-timeout 2 s 1 time(s), each on a fresh "
        "worker process (a hung call cannot be interrupted, so the process was ended), and --max-retries 0 allows "
        "no further attempt")]
    assert f"FAILED shard f1.parquet#rg2-3 ({inp}/f1.parquet): the model's call on input rows 700..799" in r.stdout


@pytest.mark.ray
def test_a_model_hung_in_c_holding_the_gil_is_ended_too(shardscore, tmp_path: Path):
    """No Python thread runs while _sre backtracks: faulthandler's native thread ends the process 5 s later.
    The timeout is 3 s, not 1: the batches that must not overrun get headroom on a loaded machine (one CI run saw a
    second shard overrun 1 s at a load of 8)."""
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    started = time.monotonic()
    r = shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, "--model-arg", f"hang_in_c=[{HANG}]",
                   "--batch-timeout", "3", "--max-retries", "1", timeout=240)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    [failure] = manifest(out)["failures"]
    assert failure["shard_id"] == "f1.parquet#rg2-3"
    assert failure["reason"].startswith("the worker process died 2 time(s) while scoring this shard (out of memory? "
                                        "try a smaller --batch-size or more --memory-per-worker; "), failure
    assert _scored(out) == _everything_but(range(10500, 11000))
    print(f"ended in {time.monotonic() - started:.1f} s")


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_a_row_that_kills_its_worker_fails_its_shard_alone_with_a_hint(shardscore, tmp_path: Path, strategy: str):
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, "--model-arg", "exit_on=[20999]",
                   "--strategy", strategy, "--max-retries", "1", "--max-failed-shards", "1", "--max-bad-rows", "5")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [failure] = manifest(out)["failures"]
    assert failure["shard_id"] == "f2.parquet#rg2-3"
    assert failure["reason"].startswith("the worker process died 2 time(s) while scoring this shard (out of memory? "
                                        "try a smaller --batch-size or more --memory-per-worker; "), failure
    assert _scored(out) == _everything_but(range(20500, 21000))


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_the_bundle_mates_of_a_shard_that_kills_every_worker_are_scored(shardscore, tmp_path: Path, strategy: str):
    """48 files of 50 rows go in bundles of 4 (3 CPUs: at least 12 bundles); the model ends its process on every row
    of f04, the first of its bundle: f05..f07, which that worker never began, are handed out again and scored. With
    actors, the bundle queued behind it on the same actor loses a retry at each death, and is scored too."""
    inp, out = _ids(tmp_path / "in", files=48, rows=50), tmp_path / "out"
    killer = range(40000, 40050)
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model", "hang_model:load_model",
                   "--model-arg", f"exit_on={list(killer)}", "--key-columns", "id", "--max-retries", "1",
                   "--max-failed-shards", "1", "--strategy", strategy)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = manifest(out)
    assert [f["shard_id"] for f in m["failures"]] == ["f04.parquet"]
    assert m["failures"][0]["reason"].startswith("the worker process died 2 time(s) while scoring this shard")
    assert m["totals"]["committed"] == 47
    assert _scored(out) == sorted(set(10000 * f + r for f in range(48) for r in range(50)) - set(killer))


@pytest.mark.ray
def test_a_worker_that_dies_after_committing_and_failing_shards_of_its_bundle_is_named_with_the_right_one(
        shardscore, tmp_path: Path):
    """The bundle f04..f07: its worker commits f04, fails f05 (the model raises on its rows), then dies on f06. The
    driver names f06, the first shard of the bundle neither committed nor failed (ray_worker.last_scoring), not f05;
    f05, whose failure died with the worker, is handed out again and fails with its own error; f07 is scored."""
    inp, out = _ids(tmp_path / "in", files=48, rows=50), tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model", "hang_model:load_model",
                   "--model-arg", "raise_on=[50000]", "--model-arg", "exit_on=[60000]", "--key-columns", "id",
                   "--max-retries", "1", "--max-failed-shards", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    reasons = {f["shard_id"]: f["reason"] for f in manifest(out)["failures"]}
    assert sorted(reasons) == ["f05.parquet", "f06.parquet"], reasons
    assert "ValueError: ids [50000] are not to be scored" in reasons["f05.parquet"], reasons
    assert reasons["f06.parquet"].startswith("the worker process died 2 time(s) while scoring this shard"), reasons
    assert _scored(out) == sorted(10000 * f + r for f in range(48) for r in range(50) if f not in (5, 6))


@pytest.mark.ray
def test_a_warm_pool_actor_ended_by_the_timeout_gets_the_model_again(shardscore, tmp_path: Path):
    """The second run finds the pool warm and sends no model; the actor the watchdog ends restarts without it."""
    pool = ["--strategy", "actors", "--pool", "hangpool", "--pool-idle-timeout", "5", "--num-actors", "2"]
    args = [*MODEL, "--model-arg", f"hang=[{HANG}]", "--batch-timeout", "2", "--max-bad-rows", "100", *pool]
    first = shardscore("run", "--input", str(_ids(tmp_path / "clean", base=100000)), "--output",
                       str(tmp_path / "clean-out"), *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pids = [{s["worker"]["pid"] for s in manifest(d)["shards"]} for d in (tmp_path / "clean-out", out)]
    assert pids[0] & pids[1], pids  # the pool was warm: an actor of the first run scored in the second
    assert _scored(out) == _everything_but(range(10700, 10800))
    assert manifest(out)["totals"]["rows_rejected"] == 100


@pytest.mark.parametrize("value, message", [
    ("0", "--batch-timeout 0.0: must be > 0"),
    ("-3", "--batch-timeout -3.0: must be > 0"),
    ("soon", "--batch-timeout: invalid value 'soon'"),
])
def test_bad_batch_timeouts_are_refused_before_ray(cli, tmp_path: Path, value: str, message: str):
    r = cli("run", "--input", str(_ids(tmp_path / "in")), "--output", str(tmp_path / "out"), *MODEL,
            "--batch-timeout", value)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Started a local Ray instance" not in r.stdout + r.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- the core, without a cluster
def test_the_watchdog_records_the_overrun_and_ends_the_process_once_the_timeout_passes():
    from shardscore.watchdog import EXIT_CODE, Overrun, Watch, Watchdog

    ended, recorded = [], []
    watch = Watch(Watchdog(end=ended.append), 0.2, {}, recorded.append)
    with watch.call(700, 100, "shard s"):
        pass  # a quick call: nothing happens
    time.sleep(0.4)
    assert ended == [] and recorded == []
    with watch.call(700, 100, "shard s"):
        time.sleep(1.0)
    assert ended == [EXIT_CODE] and recorded == [Overrun(700, 100, 1)]


def test_a_batch_that_overran_once_is_tried_again_and_twice_is_not_called():
    from shardscore.watchdog import BatchTimeout, Overrun, Watch, Watchdog

    ended, recorded = [], []
    watch = Watch(Watchdog(end=ended.append), 0.2, {(700, 100): Overrun(700, 100, 1)}, recorded.append)
    with watch.call(700, 100, "shard s"):
        time.sleep(0.6)
    assert recorded == [Overrun(700, 100, 2)]
    watch.earlier[(700, 100)] = recorded[-1]
    with pytest.raises(BatchTimeout, match=r"input rows 700\.\.799 took longer than --batch-timeout 0.2 s 2 time"):
        with watch.call(700, 100, "shard s"):
            raise AssertionError("the model is not called a third time")
    with watch.call(800, 100, "shard s"):  # another batch of the shard is watched as before
        pass


def test_the_isolator_rejects_a_whole_batch_without_splitting_it():
    """Rows 32..63 overran twice (BatchTimeout is a WholeBatch): rejected together, never called in halves."""
    from shardscore.quarantine import Isolator, Rejections, WholeBatch

    calls: list[tuple[int, int]] = []

    def predict(rows: pa.Table, first: int) -> pa.Table:
        calls.append((first, rows.num_rows))
        if (first, rows.num_rows) == (32, 32):
            raise WholeBatch("overran")
        if 20 in rows.column("id").to_pylist():
            raise ValueError("bad 20")
        return pa.table({"score": rows.column("id")})

    isolator = Isolator(predict, Rejections("f.parquet", ("id",)), allowed=40, budget_text="budget 40", cap=100)
    parts = isolator.score(pa.table({"id": pa.array(range(64), pa.int64())}), 0, ValueError("the whole batch"))
    assert [i for _, rows, _ in parts for i in rows.column("id").to_pylist()] == [i for i in range(32) if i != 20]
    table = isolator.rejections.table()
    assert dict(zip(table.column("input_row").to_pylist(), table.column("error_type").to_pylist(), strict=True)) == {
        20: "ValueError", **{row: "WholeBatch" for row in range(32, 64)}}
    assert [call for call in calls if call[0] >= 32] == [(32, 32)]
