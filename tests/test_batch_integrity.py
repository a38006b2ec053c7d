"""Every prediction lands beside its own row, in the type the output has, from the values and columns the model was
meant to see: a model's reordered pandas answer, batches of other types, Spark's INT96 dates beyond 2262, files whose
columns come in another order. Runs are `shardscore run` driver processes on the multi-node test cluster.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, read_output

pytestmark = pytest.mark.ray


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def run(shardscore, inp: Path, out: Path, *args: str):
    return shardscore("run", "--input", str(inp), "--output", str(out), *args)


def reasons(out: Path) -> dict[str, str]:
    return {f["shard_id"]: f["reason"] for f in manifest(out)["failures"]}


# ---------------------------------------------------------------- §2 a pandas answer in another row order
def _keyed(inp: Path, files: int = 2, rows: int = 300) -> Path:
    """Files of unique ids (none equal to a row's position) with x = id / 2: a prediction x * 2 equals its row's id."""
    inp.mkdir()
    for i in range(files):
        ids = np.arange(rows, dtype=np.int64) + 1000 * (i + 1)
        pq.write_table(pa.table({"id": ids, "x": ids / 2}), inp / f"part-{i}.parquet")
    return inp


@pytest.mark.parametrize("how", ["sort_values", "sample", "frame", "arrow_series"])
def test_a_reordered_pandas_answer_is_written_beside_its_own_keys(shardscore, tmp_path: Path, how: str):
    _assert_each_key_beside_its_score(shardscore, _keyed(tmp_path / "in"), tmp_path / "out", how, rows=600)


def _assert_each_key_beside_its_score(shardscore, inp: Path, out: Path, how: str, rows: int) -> None:
    """reordering_model scores each row with its own id: a prediction written beside another row's key shows."""
    r = run(shardscore, inp, out, "--model", "reordering_model:load_model", "--model-arg", f"how={how}",
            "--key-columns", "id", "--batch-size", "100")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = read_output(out)
    assert table.num_rows == rows
    assert [float(i) for i in table.column("id").to_pylist()] == table.column("score").to_pylist()
    assert_readable(out, manifest(out))


def test_a_batch_indexed_by_the_files_pandas_metadata_is_matched_by_its_labels_or_positions(shardscore,
                                                                                          tmp_path: Path):
    """pandas wrote the file with its `id` index, so the model's batches are indexed by id (3000, 3001, ...)."""
    inp = tmp_path / "in"
    inp.mkdir()
    ids = pd.Index(np.arange(3000, 3300), name="id")
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({"x": ids / 2}, index=ids)), inp / "pandas.parquet")
    for how in ("sample", "positional_series"):  # labels of the batch's index, or positions 0..n-1
        _assert_each_key_beside_its_score(shardscore, inp, tmp_path / f"out-{how}", how, rows=300)


@pytest.mark.parametrize("how, labels", [("set_index", "[1000, 1001, 1002, 1003, 1004, ...] is not a permutation "
                                         "of the batch's [0, 1, 2, 3, 4, ...] (labels the batch does not have: "
                                         "[1000, 1001, 1002, 1003, 1004, ...])"),
                                         ("duplicates", "(duplicate labels: [0, 0, 0, 0, 0, ...])")])
def test_a_pandas_answer_whose_index_is_not_the_batchs_fails_its_shard(shardscore, tmp_path: Path, how: str,
                                                                        labels: str):
    inp, out = _keyed(tmp_path / "in", files=1), tmp_path / "out"
    r = run(shardscore, inp, out, "--model", "reordering_model:load_model", "--model-arg", f"how={how}",
            "--key-columns", "id", "--batch-size", "100")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    reason = reasons(out)["part-0.parquet"]
    assert reason.startswith("the model's answer for rows 0..99 cannot be used: the answer's index"), reason
    assert labels in reason, reason
    assert "reset_index(drop=True)" in reason and "as an array" in reason, reason
    assert reason in r.stdout
    assert not (out / "_SUCCESS").exists() and not (out / "part-0.parquet").exists()


# ---------------------------------------------------------------- §5 batches of one shard with other types
def _typed(path: Path, kinds: list[str], rows: int = 100) -> None:
    """One file whose batch i (of `rows` rows) asks typed_by_data_model for type kinds[i]; v = the row number."""
    n = rows * len(kinds)
    kind = pa.array([k for k in kinds for _ in range(rows)])
    path.parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"kind": kind, "v": pa.array(range(n), pa.int64())}), path)


def test_batches_that_widen_losslessly_are_cast_and_all_null_batches_fix_no_type(shardscore, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _typed(inp / "a.parquet", ["null", "nan", "int64", "int32"])  # the first typed batch (int64) fixes the type
    args = ("--model", "typed_by_data_model:load_model", "--batch-size", "100")
    r = run(shardscore, inp, out, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = manifest(out)
    assert m["prediction_schema"] == "prediction: int64"
    assert pq.read_schema(out / "a.parquet").field("prediction").type == pa.int64()
    assert read_output(out).column("prediction").to_pylist() == [None] * 200 + list(range(200, 400))
    assert_readable(out, m)
    # Across shards the same rule: the output's type is int64, so a new shard's int32 is cast, a null one too.
    _typed(inp / "b.parquet", ["int32", "int32"])
    _typed(inp / "c.parquet", ["null", "nan"])
    r = run(shardscore, inp, out, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = manifest(out)
    assert m["totals"]["committed"] == 3 and m["prediction_schema"] == "prediction: int64"
    assert pq.read_table(out / "b.parquet").column("prediction").to_pylist() == list(range(200))
    assert pq.read_table(out / "c.parquet").column("prediction").to_pylist() == [None] * 200
    assert {pq.read_schema(out / f"{s}.parquet").field("prediction").type for s in "abc"} == {pa.int64()}
    assert_readable(out, m)


def test_a_batch_whose_type_would_lose_values_fails_its_shard_naming_both_types(shardscore, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    cases = {"bool-int64": (["bool", "int64"], "int64", "bool"),  # name: (batch types, the refused, the fixed)
             "float-double": (["float", "double"], "double", "float"),
             "int32-int64": (["null", "int32", "int64"], "int64", "int32")}
    for name, (kinds, _, _) in cases.items():
        _typed(inp / f"{name}.parquet", kinds)
    r = run(shardscore, inp, out, "--model", "typed_by_data_model:load_model", "--batch-size", "100")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    found = reasons(out)
    assert sorted(found) == sorted(f"{name}.parquet" for name in cases)
    for name, (kinds, here, fixed) in cases.items():
        reason = found[f"{name}.parquet"]
        last = len(kinds) - 1
        assert reason.startswith(f"the model's predictions for rows {last * 100}..{last * 100 + 99} do not fit "
                                 f"the output's types (fixed by rows 0..{last * 100 - 1} of this shard)"), reason
        assert f"column 'prediction' is {here} here but {fixed} in the others" in reason, reason
    assert not list(out.glob("*.parquet"))


# ---------------------------------------------------------------- §6 INT96 timestamps beyond 1677-2262
FAR = [dt.datetime(9999, 12, 31), dt.datetime(1500, 1, 1), dt.datetime(2020, 6, 1, 12, 34, 56, 789012)]


def test_int96_dates_outside_the_nanosecond_range_reach_keys_and_model_exactly(shardscore, cli, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    spark = pa.table({"id": [0, 1, 2], "valid_to": pa.array(FAR, pa.timestamp("us"))})
    pq.write_table(spark, inp / "spark.parquet", use_deprecated_int96_timestamps=True)  # as Spark's legacy writer
    assert pq.ParquetFile(inp / "spark.parquet").metadata.schema.column(1).physical_type == "INT96"
    pq.write_table(spark.set_column(0, "id", pa.array([3, 4, 5])), inp / "duckdb.parquet")  # INT64 micros
    assert pq.ParquetFile(inp / "duckdb.parquet").metadata.schema.column(1).physical_type == "INT64"
    args = ("--model", "echo_model:load_model", "--model-arg", "column=valid_to", "--key-columns", "id,valid_to")
    r = cli("plan", "--input", str(inp), *args)
    assert r.returncode == 0 and "valid_to: timestamp[us]" in r.stdout and "mismatch" not in r.stdout, r.stdout
    r = run(shardscore, inp, out, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = read_output(out).sort_by("id")
    assert table.column("valid_to").to_pylist() == FAR * 2  # the key column
    assert table.column("seen").to_pylist() == FAR * 2  # what the model got
    assert_readable(out, manifest(out))


# ---------------------------------------------------------------- §7 files with their columns in another order
def _features(ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": ids % 7, "b": ids % 5 + 10, "c": ids % 3 + 20, "id": ids}


def test_a_model_that_takes_columns_by_position_gets_one_order_in_every_file(shardscore, tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    files = {"ref-0": "a,b,c,id", "ref-1": "a,b,c,id", "ref-2": "a,b,c,id",  # the reference: most files' order
             "permuted": "c,id,b,a", "extra": "a,b,extra,c,id"}
    for i, (name, order) in enumerate(files.items()):
        cols = {**_features(np.arange(200, dtype=np.int64) + 1000 * i), "extra": np.full(200, 5.0)}
        pq.write_table(pa.table({n: cols[n] for n in order.split(",")}), inp / f"{name}.parquet")
    for declared, order in (("", ["a", "b", "c", "id"]), ("c,a", ["c", "a", "id"])):
        out = tmp_path / f"out-{declared or 'all'}"
        declares = ("--model-arg", f"declared={declared}") if declared else ()
        r = run(shardscore, inp, out, "--model", "positional_model:load_model", *declares, "--key-columns", "id",
                "--batch-size", "64")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        table = read_output(out).sort_by("id")
        features = _features(table.column("id").to_numpy())
        reference = sum(features[n].astype(np.float64) * 10.0 ** p for p, n in enumerate(order))
        assert table.num_rows == 1000
        assert table.column("prediction").to_pylist() == reference.tolist()
        assert_readable(out, manifest(out))
