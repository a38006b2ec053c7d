"""Row quarantine (issue 19 §1): with --max-bad-rows, the rows a model raises on are found by bisection, left out
of the predictions and committed with their shard under `<output>/_rejected/`, with the error and their position in
the input file; every other row is scored exactly once; over the budget the shard fails, named. Runs are `shardscore
run` driver processes on the multi-node test cluster, and on the S3 server.
"""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, read_output
from support import ROOT, base_env

pytestmark = pytest.mark.ray

#: Input files of unique ids (file i holds i*10000 ...), 1000 rows each in row groups of 250.
FILES, ROWS = 4, 1000
#: The ids bad_rows_model raises on, scattered: the first rows of a file, two neighbours in a row-group shard that
#: does not start the file, a file's last row; file 3 has none.
BAD = [3, 10750, 10751, 20999]
MODEL = ["--model", "bad_rows_model:load_model", "--key-columns", "id", "--batch-size", "100",
         "--max-rows-per-shard", "500"]


def _ids(inp: Path) -> Path:
    inp.mkdir()
    for i in range(FILES):
        ids = np.arange(ROWS, dtype=np.int64) + 10000 * i
        pq.write_table(pa.table({"id": ids, "x": ids % 7}), inp / f"f{i}.parquet", row_group_size=250)
    return inp


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def rejected(out: Path) -> list[dict]:
    """The quarantine dataset, as a user reads it: every file under _rejected/, in input order."""
    rows = ds.dataset(str(out / "_rejected"), format="parquet").to_table().to_pylist()
    return sorted(rows, key=lambda r: (r["input_file"], r["input_row"]))


def expected_rejected() -> list[dict]:
    return [{"input_file": f"f{i // 10000}.parquet", "input_row": i % 10000, "id": i, "error_type": "ValueError",
             "error": f"cannot score id {i}"} for i in BAD]


def _run(shardscore, inp: Path, out: Path, *args: str):
    return shardscore("run", "--input", str(inp), "--output", str(out), *MODEL, *args)


def _assert_scored_once(out: Path) -> None:
    table = read_output(out)
    ids = table.column("id").to_pylist()
    everything = [10000 * i + r for i in range(FILES) for r in range(ROWS)]
    assert sorted(ids) == sorted(set(everything) - set(BAD)), "every other row once, no bad row"
    assert table.column("score").to_pylist() == [2 * i for i in ids]


@pytest.mark.parametrize("strategy, batch_format", [("tasks", "pandas"), ("actors", "pyarrow"), ("tasks", "numpy")])
def test_rows_the_model_raises_on_are_quarantined_and_every_other_row_scored_once(shardscore, tmp_path: Path,
                                                                                  strategy: str, batch_format: str):
    inp, out, log = _ids(tmp_path / "in"), tmp_path / "out", tmp_path / "calls.log"
    args = ("--model-arg", f"bad={BAD}", "--model-arg", f"batch_format={batch_format}", "--model-arg",
            f"seen_log={log}", "--strategy", strategy, "--max-bad-rows", "2")
    r = _run(shardscore, inp, out, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _assert_scored_once(out)
    assert rejected(out) == expected_rejected()
    m = manifest(out)
    assert m["totals"]["rows_rejected"] == len(BAD) and m["totals"]["shards_with_rejected_rows"] == 3
    assert m["totals"]["rows_out"] == FILES * ROWS - len(BAD) and m["options"]["max_bad_rows"] == 2
    by_shard = {s["shard_id"]: (s["rows_rejected"], s["rejected"]) for s in m["shards"]}
    assert by_shard["f1.parquet#rg2-3"] == (2, "_rejected/f1.rg2-3.pq")
    assert by_shard["f3.parquet#rg0-1"] == (0, "")
    assert f"{len(BAD)} rows rejected (the model raised on them) in 3 shards, within --max-bad-rows: they are in " \
           f"{out}/_rejected/" in r.stdout, r.stdout
    assert_readable(out, m)  # no reader of the predictions takes the quarantine files for predictions
    # Bounded: the 40 batches once each, and at most 2*ceil(log2(100)) = 14 more calls per bad row.
    calls = log.read_text().splitlines()
    assert len(calls) <= 40 + len(BAD) * 2 * math.ceil(math.log2(100)), len(calls)
    _assert_reruns_keep_the_rejected_set(shardscore, inp, out, args)
    if batch_format == "pandas":
        _assert_readmes_command_rescores_exactly_the_rejected_rows(shardscore, tmp_path)


def _assert_readmes_command_rescores_exactly_the_rejected_rows(shardscore, tmp_path: Path) -> None:
    """README's "Re-scoring only the rejected rows": its DuckDB command as written, in the folder that holds `in/`
    and `out/`, then a run of the fixed model (it raises on no row) over what it selected."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("**Re-scoring only the rejected rows**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    select, run = block.rsplit("\nshardscore run ", 1)
    assert run.startswith("--input retry --output retry-out"), run
    subprocess.run(["bash", "-c", select], cwd=tmp_path, env=base_env(), check=True, timeout=120)
    r = shardscore("run", "--input", str(tmp_path / "retry"), "--output", str(tmp_path / "retry-out"),
                   "--model", "bad_rows_model:load_model", "--model-arg", "bad=[]", "--key-columns", "id")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = read_output(tmp_path / "retry-out")
    assert sorted(table.column("id").to_pylist()) == BAD and table.column("score").to_pylist() == [
        2 * i for i in table.column("id").to_pylist()]


def _assert_reruns_keep_the_rejected_set(shardscore, inp: Path, out: Path, args: tuple[str, ...]) -> None:
    """A rerun skips what is committed; a quarantine file lost, or a crash between it and its record, re-scores
    the shard into the same rows."""
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.p*")}  # predictions (.parquet) and quarantine (.pq)
    r = _run(shardscore, inp, out, *args)
    assert r.returncode == 0 and "8/8 shards committed, 0 failed, 8 already committed (skipped)" in r.stdout, \
        r.stdout[-3000:] + r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.p*")} == before
    (out / "_rejected" / "f0.rg0-1.pq").unlink()  # lost: the shard is damaged
    record = next(p for p in (out / "_shardscore" / "commits").glob("*.json")
                  if json.loads(p.read_text())["shard_id"] == "f2.parquet#rg2-3")
    record.unlink()  # a crash after the shard's files, before its record
    r = _run(shardscore, inp, out, *args)
    assert r.returncode == 0 and "1 shards re-scored: output file missing or changed" in r.stdout, r.stderr[-3000:]
    assert manifest(out)["totals"]["rows_scored_this_run"] == 1000
    assert rejected(out) == expected_rejected()
    _assert_scored_once(out)


def test_a_shard_over_its_budget_fails_by_name_and_strict_is_the_default(shardscore, tmp_path: Path):
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    r = _run(shardscore, inp, out, "--model-arg", f"bad={BAD}", "--max-bad-rows", "1", "--max-failed-shards", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]  # one shard failed, within --max-failed-shards
    failure = manifest(out)["failures"]
    assert [f["shard_id"] for f in failure] == ["f1.parquet#rg2-3"]
    reason = ("the model failed on more rows than --max-bad-rows 1 allows: 2 rejected, the last input row 751: "
              "ValueError: cannot score id 10751")
    assert failure[0]["reason"] == reason
    assert f"FAILED shard f1.parquet#rg2-3 ({inp}/f1.parquet): {reason}" in r.stdout, r.stdout
    assert not (out / "f1.rg2-3.parquet").exists() and not (out / "_rejected" / "f1.rg2-3.pq").exists()
    assert rejected(out) == [row for row in expected_rejected() if row["id"] not in (10750, 10751)]
    # A fraction rounds down: 0.001 of a 500-row shard allows no row.
    r = _run(shardscore, inp, tmp_path / "fraction", "--model-arg", f"bad={BAD}", "--max-bad-rows", "0.001")
    assert r.returncode == 1
    assert "more rows than --max-bad-rows 0.001 (0 of this shard's 500 rows) allows: 1 rejected, the last input " \
           "row 3: ValueError: cannot score id 3" in r.stdout, r.stdout
    # Without the option the first row the model raises on fails its shard, as before.
    r = _run(shardscore, inp, tmp_path / "strict", "--model-arg", f"bad={BAD}")
    assert r.returncode == 1
    assert "FAILED shard f0.parquet#rg0-1" in r.stdout and "the model failed on rows 0..99: ValueError: cannot " \
           "score id 3" in r.stdout, r.stdout
    assert not (tmp_path / "strict" / "_rejected").exists()
    # An answer that cannot be used is no bad row: it fails the shard whatever the budget, as before.
    unusable = tmp_path / "unusable"
    r = shardscore("run", "--input", str(inp), "--output", str(unusable), "--model", "reordering_model:load_model",
                   "--model-arg", "how=duplicates", "--batch-size", "100", "--max-bad-rows", "5")
    assert r.returncode == 1
    reasons = {f["reason"].split(": the answer's index")[0] for f in manifest(unusable)["failures"]}
    assert reasons == {"the model's answer for rows 0..99 cannot be used"}, reasons
    assert not (unusable / "_rejected").exists()


@pytest.mark.s3
def test_quarantine_files_on_s3_are_committed_verified_and_rescored_when_lost(shardscore, s3, tmp_path: Path):
    bucket = f"quarantine-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for path in _ids(tmp_path / "in").iterdir():
        client.upload_file(str(path), bucket, f"in/{path.name}")
    s3_args = ("--s3-endpoint", s3.endpoint, "--model-arg", f"bad={BAD}", "--max-bad-rows", "0.005")
    inp, out = f"s3://{bucket}/in", f"s3://{bucket}/out"
    r = shardscore("run", "--input", inp, "--output", out, *MODEL, *s3_args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    keys = rejected_keys(client, bucket)
    assert keys == {"out/_rejected/f0.rg0-1.pq", "out/_rejected/f1.rg2-3.pq", "out/_rejected/f2.rg2-3.pq"}
    local = tmp_path / "rejected"
    local.mkdir()
    for key in keys:
        client.download_file(bucket, key, str(local / key.rsplit("/", 1)[1]))
    rows = sorted(ds.dataset(str(local), format="parquet").to_table().to_pylist(), key=lambda r: r["id"])
    assert rows == expected_rejected()
    m = json.loads(client.get_object(Bucket=bucket, Key="out/_manifest.json")["Body"].read())
    assert m["status"] == "succeeded" and m["totals"]["rows_rejected"] == len(BAD)
    client.delete_object(Bucket=bucket, Key="out/_rejected/f2.rg2-3.pq")
    r = shardscore("run", "--input", inp, "--output", out, *MODEL, *s3_args)
    assert r.returncode == 0 and "1 shards re-scored: output file missing or changed" in r.stdout, r.stderr[-3000:]
    assert rejected_keys(client, bucket) == keys


def rejected_keys(client, bucket: str) -> set[str]:
    """The objects under out/_rejected/, without the folder markers pyarrow leaves (S3FileSystem.delete_file keeps
    a deleted file's parent "directory" as an empty `<dir>/` object)."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix="out/_rejected/")["Contents"]
    return {o["Key"] for o in listed if not o["Key"].endswith("/")}


@pytest.mark.parametrize("value, message", [
    ("-1", "--max-bad-rows -1: must be >= 0"),
    ("1.5", "--max-bad-rows 1.5: a fraction of a shard's rows must be below 1"),
    ("lots", "--max-bad-rows: invalid value 'lots' for max_bad_rows (expected a whole number of rows or a fraction "
             "between 0 and 1)"),
])
def test_bad_budgets_are_refused_before_ray(cli, tmp_path: Path, value: str, message: str):
    inp = _ids(tmp_path / "in")
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *MODEL, "--model-arg", "bad=[]",
            "--max-bad-rows", value)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Started a local Ray instance" not in r.stdout + r.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- the core, without a cluster
def _isolator(bad: set[int], allowed: int, batch: int = 1024, fails_above: int = 0):
    """An Isolator over a model that raises on the ids in `bad` (and on any batch above `fails_above` rows), and
    the list of the row counts of its calls."""
    from shardscore.quarantine import Isolator, Rejections, call_cap

    calls: list[int] = []

    def predict(rows: pa.Table, first: int) -> pa.Table:
        calls.append(rows.num_rows)
        ids = rows.column("id").to_pylist()
        if (fails_above and len(ids) > fails_above) or bad.intersection(ids):
            raise ValueError(f"cannot score id {min(bad.intersection(ids), default=None)}")
        return pa.table({"score": [2 * i for i in ids]})

    return Isolator(predict, Rejections("f.parquet", ("id",)), allowed=allowed, budget_text=f"budget {allowed}",
                    cap=call_cap(batch, allowed)), calls


@pytest.mark.parametrize("bad", [{0}, {1023}, {5, 6}, {1, 300, 301, 900}])
def test_bisection_finds_exactly_the_bad_rows_within_two_calls_per_level_each(bad: set[int]):
    isolator, calls = _isolator(bad, allowed=len(bad))
    batch = pa.table({"id": pa.array(range(1024), pa.int64())})
    parts = isolator.score(batch, 5000, ValueError("the whole batch"))
    scored = [i for _, rows, _ in parts for i in rows.column("id").to_pylist()]
    assert scored == [i for i in range(1024) if i not in bad]  # every other row once, in order
    assert [p[2].column("score").to_pylist() for p in parts] == [[2 * i for i in p[1].column("id").to_pylist()]
                                                                  for p in parts]
    table = isolator.rejections.table()
    assert table.column("input_row").to_pylist() == [5000 + i for i in sorted(bad)]
    assert table.column("error").to_pylist() == [f"cannot score id {i}" for i in sorted(bad)]
    assert len(calls) <= 2 * 10 * len(bad)  # log2(1024) = 10 levels, two calls each
    again, _ = _isolator(bad, allowed=len(bad))
    again.score(batch, 5000, ValueError("the whole batch"))
    assert again.rejections.table().equals(table)  # deterministic: a rerun rejects the same rows


def test_a_model_that_fails_on_batches_not_rows_is_stopped_by_the_cap():
    from shardscore.quarantine import OverBudget

    isolator, calls = _isolator(set(), allowed=3, fails_above=4)
    with pytest.raises(OverBudget, match="took more than 88 extra model calls, the most budget 3 allows .* does "
                                         "the model fail on batches rather than on rows"):
        isolator.score(pa.table({"id": pa.array(range(1024), pa.int64())}), 0, ValueError("too big"))
    assert len(calls) == 88 and not isolator.rejections  # the 89th call is not made


def test_reconcile_and_verify_know_the_quarantine_files(tmp_path: Path):
    from shardscore.commit import ShardResult, reconcile
    from shardscore.errors import OutputError
    from shardscore.folder import ParquetFolder
    from shardscore.planning import Shard
    from shardscore.storage import resolve

    shards = [Shard(f"s{i}.parquet", f"/in/s{i}.parquet", f"s{i}.parquet", None, 10, 100, "f") for i in range(3)]
    folder = ParquetFolder(resolve(str(tmp_path)))
    for name in ("s0.parquet", "s1.parquet", "_rejected/s0.pq", "_rejected/s2.pq"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 5)
    listing = folder.listing()
    assert sorted(listing) == ["_rejected/s0.pq", "_rejected/s2.pq", "s0.parquet", "s1.parquet"]

    def record(i: int, rejected: str = "") -> ShardResult:
        info = listing[f"s{i}.parquet"]
        stamp = {"rejected": rejected, "rows_rejected": 1, "rejected_size": 5,
                 "rejected_mtime_ns": listing[rejected].mtime_ns} if rejected else {}
        return ShardResult(f"s{i}.parquet", "committed", input_fingerprint="f", model_identity="m", output_options="o",
                           output=f"s{i}.parquet", output_size=5, output_mtime_ns=info.mtime_ns, **stamp)

    committed = {"s0.parquet": record(0, "_rejected/s0.pq"), "s1.parquet": record(1)}
    rec = reconcile(shards, committed, "m", "o", False, listing)
    assert [r.shard_id for r in rec.done] == ["s0.parquet", "s1.parquet"] and [s.shard_id for s in rec.todo] == [
        "s2.parquet"]
    assert rec.leftovers == ["_rejected/s2.pq"]  # s2 crashed before its record: its quarantine file goes
    assert folder.verify(list(committed.values())) == ["file _rejected/s2.pq is in the output but in no shard of "
                                                       "the manifest"]
    (tmp_path / "_rejected" / "s0.pq").unlink()
    rec = reconcile(shards, committed, "m", "o", False, folder.listing())
    assert [(s.shard_id, why) for s, _, why in rec.damaged] == [("s0.parquet", "its file of rejected rows "
                                                                "_rejected/s0.pq is missing")]
    (tmp_path / "_rejected" / "other.pq").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"under _rejected/, for rows the model failed on\): _rejected/other.pq"):
        reconcile(shards, committed, "m", "o", False, folder.listing())
