"""Shard planning: deterministic shards, row-group splitting, fingerprints, bad files, schema checks."""

from pathlib import Path

import pyarrow as pa
import pytest

from datasets import corrupt, retype, sample
from shardscore.errors import InputError
from shardscore.planning import plan
from shardscore.storage import resolve


def test_one_shard_per_file_with_deterministic_ids(tmp_path: Path):
    sample(tmp_path / "in", shards=3, rows=500)
    first = plan(resolve(str(tmp_path / "in")))
    second = plan(resolve(str(tmp_path / "in")))
    assert [s.shard_id for s in first.shards] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert first.shards == second.shards
    assert first.total_rows == 1500 and all(s.row_groups is None for s in first.shards)


def test_big_files_split_by_row_groups(tmp_path: Path):
    sample(tmp_path / "in", shards=1, rows=1000, row_group_size=100)
    p = plan(resolve(str(tmp_path / "in")), max_rows_per_shard=350)
    assert [s.row_groups for s in p.shards] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    assert [s.num_rows for s in p.shards] == [300, 300, 300, 100]
    assert p.shards[0].shard_id == "part-00000.parquet#rg0-2"
    assert p.shards[0].output_relpath == "part-00000.rg0-2.parquet"
    assert len({s.output_relpath for s in p.shards}) == 4


def test_fingerprint_changes_with_content_not_with_rewrite_time(tmp_path: Path):
    sample(tmp_path / "in", shards=2, rows=300)
    before = {s.shard_id: s.fingerprint for s in plan(resolve(str(tmp_path / "in"))).shards}
    sample(tmp_path / "in", shards=2, rows=300)  # identical bytes rewritten
    assert {s.shard_id: s.fingerprint for s in plan(resolve(str(tmp_path / "in"))).shards} == before
    sample(tmp_path / "in", shards=1, rows=300, seed=7)  # part-00000 now holds other rows
    after = {s.shard_id: s.fingerprint for s in plan(resolve(str(tmp_path / "in"))).shards}
    assert after["part-00000.parquet"] != before["part-00000.parquet"]
    assert after["part-00001.parquet"] == before["part-00001.parquet"]


def test_corrupt_file_is_a_bad_shard_not_a_crash(tmp_path: Path):
    sample(tmp_path / "in", shards=3, rows=200)
    corrupt(tmp_path / "in" / "part-00001.parquet")
    p = plan(resolve(str(tmp_path / "in")))
    assert [s.shard_id for s in p.shards] == ["part-00000.parquet", "part-00002.parquet"]
    assert [b.shard_id for b in p.bad_files] == ["part-00001.parquet"]
    assert "PAR1" in p.bad_files[0].reason


def test_wrong_type_and_missing_column_named_against_the_common_schema(tmp_path: Path):
    sample(tmp_path / "in", shards=3, rows=200)
    retype(tmp_path / "in" / "part-00002.parquet", "passenger_count", pa.string())
    p = plan(resolve(str(tmp_path / "in")), columns=["passenger_count", "vendor_id"])
    assert p.schema.field("passenger_count").type == pa.int8()  # the majority's type, not the odd file's
    assert p.schema_mismatches == {
        "part-00002.parquet": "column 'passenger_count' has type string, expected int8"}


def test_hidden_and_non_parquet_files_are_not_shards(tmp_path: Path):
    sample(tmp_path / "in", shards=1, rows=10)
    (tmp_path / "in" / "_SUCCESS").write_text("")
    (tmp_path / "in" / ".part-9.parquet.crc").write_text("")
    (tmp_path / "in" / "README.txt").write_text("hi")
    p = plan(resolve(str(tmp_path / "in")))
    assert [s.shard_id for s in p.shards] == ["part-00000.parquet"] and p.ignored == ["README.txt"]


def test_missing_and_empty_input_named(tmp_path: Path):
    with pytest.raises(InputError, match="nope: no such file or directory"):
        plan(resolve(str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Parquet files"):
        plan(resolve(str(tmp_path / "empty")))
