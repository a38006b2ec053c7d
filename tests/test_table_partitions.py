"""A file's partition values are its Hive folders' (tables.partition_values): unescaped as Hive and Spark escape them,
Hive's null folder null, folders without `=` and the file name ignored."""

from __future__ import annotations

from shardscore.tables import partition_values


def test_a_files_partition_values_are_its_hive_folders_unescaped():
    assert partition_values("data/shardscore-3/date=2026-12-01/hour=10%3A00/part=x.parquet") == {
        "date": "2026-12-01", "hour": "10:00"}
    assert partition_values("region=__HIVE_DEFAULT_PARTITION__/part-0.parquet") == {"region": None}
    assert partition_values("part-0.parquet") == {}
