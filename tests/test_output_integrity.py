"""`_SUCCESS` means what it says: every row scored exactly once, by one model, into a dataset that reads back.

Each case is a way a run used to end with exit 0 and `_SUCCESS` over missing, mixed or unreadable output, or with
the real error hidden. Runs are `shardscore run` driver processes on the multi-node test cluster.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, corrupt_pages, expected_even, mark, read_output, sample
from support import commit_count, start_driver, wait_for

pytestmark = pytest.mark.ray
DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=1"]


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def run(shardscore, inp: Path, out: Path, *args: str):
    return shardscore("run", "--input", str(inp), "--output", str(out), *args)


# ---------------------------------------------------------------- 1.1 output is the input, spelled differently
def test_the_input_spelled_differently_is_refused_as_output(cli, tmp_path: Path, monkeypatch):
    inp = sample(tmp_path / "same", shards=2, rows=10)
    before = {p.name: p.read_bytes() for p in inp.iterdir()}
    os.symlink(inp, tmp_path / "alias")
    cases = [("same", "./same"), ("same", str(tmp_path / "alias")), ("same/part-00000.parquet", "same"),
             ("same", "same/preds"), ("same/preds/..", "same/")]
    for cmd in ("run", "plan"):
        for i, o in cases:
            r = cli(cmd, "--input", i, "--output", o, *DUMMY, cwd=tmp_path)
            assert r.returncode == 2, (cmd, i, o, r.stdout, r.stderr)
            assert "the input" in r.stderr and "Choose an output outside the input" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in inp.iterdir()} == before  # not one byte of the input touched


# ---------------------------------------------------------------- 1.2 two inputs, one output file
def test_two_inputs_that_would_write_one_output_file_are_refused(cli, tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"passenger_count": pa.array(range(10), pa.int8())}), inp / "a.parquet")
    pq.write_table(pa.table({"passenger_count": pa.array(range(20), pa.int8())}), inp / "a.pq")
    for cmd in ("run", "plan"):
        r = cli(cmd, "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY)
        assert r.returncode == 2, r.stderr
        assert "a.parquet and a.pq would both write a.parquet" in r.stderr, r.stderr


# ---------------------------------------------------------------- 1.3 a committed file deleted or damaged
def test_a_deleted_or_truncated_output_file_is_rescored(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=4, rows=700)
    out = tmp_path / "out"
    assert run(shardscore, inp, out, *DUMMY).returncode == 0
    (out / "part-00002.parquet").unlink()
    data = (out / "part-00000.parquet").read_bytes()
    (out / "part-00000.parquet").write_bytes(data[: len(data) // 2])
    r = run(shardscore, inp, out, *DUMMY)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 shards re-scored: output file missing or changed" in r.stdout
    m = manifest(out)
    assert m["totals"]["rescored_damaged"] == 2 and m["totals"]["skipped_already_committed"] == 2
    assert_readable(out, m)
    assert read_output(out).num_rows == 2800 and (out / "_SUCCESS").exists()


# ---------------------------------------------------------------- 1.5 an input edit that keeps size and footer
def test_an_edit_that_keeps_size_and_footer_is_seen(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=2, rows=300)
    out = tmp_path / "out"
    assert run(shardscore, inp, out, *DUMMY).returncode == 0
    path = inp / "part-00001.parquet"
    stat = path.stat()
    path.write_bytes(path.read_bytes())  # same bytes, but rewritten: a local disk tells only by the mtime
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    r = run(shardscore, inp, out, *DUMMY)
    assert r.returncode == 2 and "input file part-00001.parquet changed since it was scored" in r.stderr, r.stderr


# ---------------------------------------------------------------- 1.6 two prediction schemas
@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_a_shard_whose_predictions_have_another_schema_fails_alone(shardscore, tmp_path: Path, strategy: str):
    inp = sample(tmp_path / "in", shards=6, rows=200)
    mark(inp / "part-00003.parquet")
    out = tmp_path / "out"
    r = run(shardscore, inp, out, "--model", "rogue_model:load_model", "--model-arg", "mode=drift",
            "--strategy", strategy, "--max-failed-shards", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert [f["shard_id"] for f in m["failures"]] == ["part-00003.parquet"]
    reason = m["failures"][0]["reason"]
    assert "column 'score' is string here but bool in the others" in reason, reason
    assert "A model must return the same columns and types" in reason
    assert m["prediction_schema"] == "score: bool"
    assert not (out / "part-00003.parquet").exists()
    assert_readable(out, m)


# ---------------------------------------------------------------- 1.7 a model column named like a key column
def test_a_model_column_that_clashes_with_a_key_column_is_named(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=2, rows=100)
    r = run(shardscore, inp, tmp_path / "out", "--model", "rogue_model:load_model", "--model-arg", "mode=key",
            "--key-columns", "vendor_id")
    assert r.returncode == 1
    assert "the model returned a column 'vendor_id', which --key-columns also writes" in r.stdout, r.stdout


# ---------------------------------------------------------------- 2. the real error, and only its own shard
@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_a_model_error_fails_only_its_shard_with_its_own_message(shardscore, tmp_path: Path, strategy: str):
    inp = sample(tmp_path / "in", shards=40, rows=50)  # small shards: bundled several per task
    mark(inp / "part-00017.parquet")
    out = tmp_path / "out"
    r = run(shardscore, inp, out, "--model", "rogue_model:load_model", "--model-arg", "mode=raise",
            "--strategy", strategy, "--max-failed-shards", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = manifest(out)
    assert m["totals"]["committed"] == 39
    assert [f["shard_id"] for f in m["failures"]] == ["part-00017.parquet"]
    assert m["failures"][0]["reason"] == "the model failed on rows 0..49: ValueError: value must be >0, got 0"
    assert_readable(out, m)


def test_corrupt_pages_behind_a_valid_footer_are_the_shards_own_failure(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=12, rows=50)
    corrupt_pages(inp / "part-00005.parquet")
    out = tmp_path / "out"
    r = run(shardscore, inp, out, *DUMMY)
    assert r.returncode == 1
    failures = manifest(out)["failures"]
    assert [f["shard_id"] for f in failures] == ["part-00005.parquet"]
    assert failures[0]["reason"].startswith("unreadable data (reading it): OSError: "), failures[0]["reason"]
    assert "Deserializing page header failed" in failures[0]["reason"]
    assert "Traceback" not in r.stdout + r.stderr
    assert manifest(out)["totals"]["committed"] == 11


# ---------------------------------------------------------------- 3. errors that came too late or too loosely
def test_a_model_that_cannot_be_pickled_is_named_before_ray_starts(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", "rogue_model:load_model",
            "--model-arg", "mode=lock")
    assert r.returncode == 2, r.stderr
    assert "--model rogue_model:load_model: the model cannot be pickled" in r.stderr
    assert "attribute the model.guard (a _thread.lock)" in r.stderr, r.stderr
    assert "Started a local Ray instance" not in r.stderr and not (tmp_path / "out").exists()


def test_summary_json_on_stdout_is_the_only_thing_there(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=100)
    r = run(shardscore, inp, tmp_path / "out", "--model", "rogue_model:load_model", "--model-arg", "mode=chatty",
            "--summary-json", "-", "--progress-interval", "0", "--strategy", "actors")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["totals"]["committed"] == 3  # nothing but the JSON document
    assert "shardscore: run succeeded" in r.stderr


def test_a_summary_json_path_that_cannot_be_written_fails_up_front(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY,
            "--summary-json", str(tmp_path / "no" / "such" / "dir" / "s.json"))
    assert r.returncode == 2 and "--summary-json" in r.stderr and "does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_integer_columns_wider_in_some_files_are_scored(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=300)
    table = pq.read_table(inp / "part-00001.parquet")
    idx = table.schema.get_field_index("passenger_count")
    pq.write_table(table.set_column(idx, "passenger_count", table.column(idx).cast(pa.int64())),
                   inp / "part-00001.parquet")
    out = tmp_path / "out"
    r = run(shardscore, inp, out, *DUMMY, "--key-columns", "passenger_count")
    assert r.returncode == 0, r.stdout[-2000:]
    table = read_output(out)
    assert table.schema.field("passenger_count").type == pa.int64()  # one type in every output file
    assert sum(table.column("score").to_pylist()) == expected_even(inp)


def test_a_changed_shard_layout_is_reported_as_such(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=1000, row_group_size=100)
    out = tmp_path / "out"
    assert run(shardscore, inp, out, *DUMMY, "--max-rows-per-shard", "500").returncode == 0
    r = run(shardscore, inp, out, *DUMMY, "--max-rows-per-shard", "300")
    assert r.returncode == 2
    assert "the shard layout changed: part-00000.parquet is now planned as part-00000.parquet#rg0-2" in r.stderr
    assert "--max-rows-per-shard changed?" in r.stderr and "is gone" not in r.stderr, r.stderr


def test_foreign_files_in_the_output_are_refused(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=2, rows=100)
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"x": [1]}), out / "old-export.parquet")
    r = run(shardscore, inp, out, *DUMMY)
    assert r.returncode == 2 and "no shard of this input wrote" in r.stderr and "old-export.parquet" in r.stderr


# ---------------------------------------------------------------- the same cases on an object store
@pytest.mark.s3
def test_on_s3_spellings_damage_and_silent_edits_are_all_seen(shardscore, s3, tmp_path: Path):
    bucket = f"integrity-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    s3_args = ["--s3-endpoint", s3.endpoint]
    assert shardscore("sample-data", "--output", f"s3://{bucket}/in", "--shards", "3", "--rows-per-shard", "500",
                      *s3_args).returncode == 0
    # 1.1: one location, three spellings
    r = shardscore("run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}//in/", *DUMMY, *s3_args)
    assert r.returncode == 2 and f"(both are {bucket}/in)" in r.stderr, r.stderr
    out = f"s3://{bucket}/out"
    assert shardscore("run", "--input", f"s3://{bucket}/in", "--output", out, *DUMMY, *s3_args).returncode == 0
    # 1.3: a committed object deleted, another overwritten with other bytes
    client.delete_object(Bucket=bucket, Key="out/part-00001.parquet")
    client.put_object(Bucket=bucket, Key="out/part-00002.parquet", Body=b"PAR1 not really PAR1")
    r = shardscore("run", "--input", f"s3://{bucket}/in", "--output", out, *DUMMY, *s3_args)
    assert r.returncode == 0 and "2 shards re-scored: output file missing or changed" in r.stdout, r.stderr[-2000:]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}
    assert not any(k.rsplit("/", 1)[-1].startswith(".tmp-") for k in keys)
    # 1.5: an input object rewritten with the same size and footer (values swapped): its ETag tells
    body = client.get_object(Bucket=bucket, Key="in/part-00000.parquet")["Body"].read()
    client.put_object(Bucket=bucket, Key="in/part-00000.parquet", Body=body[:4] + bytes([body[4] ^ 1]) + body[5:])
    r = shardscore("run", "--input", f"s3://{bucket}/in", "--output", out, *DUMMY, *s3_args)
    assert r.returncode == 2 and "input file part-00000.parquet changed since it was scored" in r.stderr, r.stderr


def test_success_is_never_written_over_files_that_changed_during_the_run(ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=6, rows=2000)
    out = tmp_path / "out"
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), "--model",
                          "slow_model:load_model", "--model-arg", "delay=0.25", "--batch-size", "500")
    def committed_file() -> Path | None:
        records = sorted((out / "_shardscore" / "commits").glob("*.json")) if commit_count(out) else []
        return out / json.loads(records[0].read_text())["output"] if records else None

    first = wait_for(committed_file, 120, "a committed shard's file")
    first.unlink()  # someone removes a committed file while the run goes on
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 1, output[-3000:]
    assert f"FAILED: shard {first.name}: its output file {first.name} is missing" in output, output[-3000:]
    assert not (out / "_SUCCESS").exists() and manifest(out)["status"] == "failed"
