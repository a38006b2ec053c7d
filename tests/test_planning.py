"""Shard planning: deterministic shards, row-group splitting, fingerprints, bad files, schema checks."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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


def _fingerprints(path: Path) -> dict[str, str]:
    return {s.shard_id: s.fingerprint for s in plan(resolve(str(path))).shards}


def test_fingerprint_is_stable_and_changes_with_content(tmp_path: Path):
    sample(tmp_path / "in", shards=2, rows=300)
    before = _fingerprints(tmp_path / "in")
    assert _fingerprints(tmp_path / "in") == before
    sample(tmp_path / "in", shards=1, rows=300, seed=7)  # part-00000 now holds other rows
    after = _fingerprints(tmp_path / "in")
    assert after["part-00000.parquet"] != before["part-00000.parquet"]
    assert after["part-00001.parquet"] == before["part-00001.parquet"]


def test_fingerprint_sees_an_edit_that_keeps_size_and_footer(tmp_path: Path):
    """Two values swapped: same size, same statistics, same footer bytes; the modification time tells."""
    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(pa.table({"x": pa.array([1, 2, 3, 4], pa.int64())}), d / "a.parquet", write_statistics=False,
                   use_dictionary=False, compression="none")
    before = _fingerprints(d)
    data = (d / "a.parquet").read_bytes()
    old = pa.array([1, 2], pa.int64()).buffers()[1].to_pybytes()
    new = pa.array([2, 1], pa.int64()).buffers()[1].to_pybytes()
    assert data.count(old) == 1
    swapped = data.replace(old, new)
    assert len(swapped) == len(data) and swapped[-200:] == data[-200:]
    written = (d / "a.parquet").stat()
    (d / "a.parquet").write_bytes(swapped)
    # Dated 10 ms after the first write: a coarse file-system clock may not have ticked between the two writes.
    os.utime(d / "a.parquet", ns=(written.st_atime_ns, written.st_mtime_ns + 10_000_000))
    assert pq.read_table(d / "a.parquet").column("x").to_pylist() == [2, 1, 3, 4]
    assert _fingerprints(d) != before


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
    assert [s.shard_id for s in p.shards] == ["part-00000.parquet"] and [i.relpath for i in p.ignored] == ["README.txt"]


def test_missing_and_empty_input_named(tmp_path: Path):
    with pytest.raises(InputError, match="nope: no such file or directory"):
        plan(resolve(str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Parquet files"):
        plan(resolve(str(tmp_path / "empty")))
