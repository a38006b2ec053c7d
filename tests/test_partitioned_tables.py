"""Issue 20 §1: a table the run creates is partitioned like the input's Hive folders when asked (--partition-table),
and a partitioned table, the run's or another writer's, gets each file's partition values from its folders. The
files hold no partition column (as a Hive table migrated to Iceberg, or any Delta table); the readers below take the
values from the table's metadata, and prune by them. Runs are `shardscore run` driver processes on the multi-node
test cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, QueryBuilder, write_deltalake
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import LongType, NestedField, TimestampType

from test_iceberg_output import Catalog

pytestmark = pytest.mark.ray
MODEL = ["--model", "scale_model:load_model", "--key-columns", "id"]
DATES, FILES_PER_DATE, ROWS = ("2026-12-01", "2026-12-02"), 2, 300


def _hive_input(root: Path) -> dict[int, str]:
    """Files under date=<day>/ folders; returns id -> its folder's date."""
    dates, n = {}, 0
    for day in DATES:
        folder = root / "in" / f"date={day}"
        folder.mkdir(parents=True)
        for i in range(FILES_PER_DATE):
            ids = np.arange(n, n + ROWS, dtype=np.int64)
            pq.write_table(pa.table({"id": ids, "x": ids * 0.5}), folder / f"part-{i}.parquet")
            dates.update(dict.fromkeys(ids.tolist(), day))
            n += ROWS
    return dates


def _delta_rows(location: Path, where: str = "") -> dict[int, tuple[int, str]]:
    table = DeltaTable(str(location))
    got = pa.table(QueryBuilder().register("t", table).execute(f"select id, score, date from t {where}").read_all())
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id is in the table more than once"
    return dict(zip(ids, zip(got.column("score").to_pylist(), got.column("date").to_pylist(), strict=True), strict=True))


def _iceberg_rows(catalog: Catalog, row_filter: str = "") -> dict[int, tuple[int, str]]:
    scan = catalog.table().scan(row_filter=row_filter) if row_filter else catalog.table().scan()
    got = scan.to_arrow()
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id is in the table more than once"
    return dict(zip(ids, zip(got.column("score").to_pylist(), got.column("date").to_pylist(), strict=True), strict=True))


def test_tables_created_partitioned_like_the_inputs_folders_and_rescored_into_their_partitions(cli, shardscore,
                                                                                              tmp_path: Path):
    dates, catalog, delta = _hive_input(tmp_path), Catalog(tmp_path), tmp_path / "delta"
    inp = str(tmp_path / "in")
    plan = cli("plan", "--input", inp, "--output", f"delta+{delta}", "--partition-table", *MODEL,
               "--model-arg", "factor=2")
    assert plan.returncode == 0 and "absent, the run creates it, partitioned by date" in plan.stdout, plan.stderr
    for factor, more in ((2, ["--partition-table"]), (3, ["--overwrite"])):  # the second run: the table as it is
        for out in ("iceberg://t/scores.taxi", f"delta+{delta}"):
            r = shardscore("run", "--input", inp, "--output", out, *MODEL, "--model-arg", f"factor={factor}", *more,
                           env=catalog.env)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        want = {i: (factor * i, day) for i, day in dates.items()}
        assert _delta_rows(delta) == want and _iceberg_rows(catalog) == want
    first_day = {i: v for i, v in want.items() if v[1] == DATES[0]}
    # Delta: the partition column is the log's, and a filter on it reads that partition's files only.
    table = DeltaTable(str(delta))
    assert table.metadata().partition_columns == ["date"] and table.version() == 1
    assert {a["partition.date"] for a in pa.table(table.get_add_actions(flatten=True)).to_pylist()} == set(DATES)
    assert _delta_rows(delta, f"where date = '{DATES[0]}'") == first_day
    # Iceberg: an identity partition on date; the scan plans only that partition's files.
    ice = catalog.table()
    assert [(f.name, str(f.transform)) for f in ice.spec().fields] == [("date", "identity")]
    assert len(ice.snapshots()) == 2
    planned = list(ice.scan(row_filter=f"date == '{DATES[0]}'").plan_files())
    assert len(planned) == FILES_PER_DATE and all(f"/date={DATES[0]}/" in t.file.file_path for t in planned)
    assert _iceberg_rows(catalog, f"date == '{DATES[0]}'") == first_day


def test_a_partitioned_iceberg_table_through_the_rest_catalog(shardscore, iceberg_rest, tmp_path: Path):
    """The same over Apache Iceberg's REST catalog server: the table's creation, its spec and its first snapshot go
    to the server as one staged create (pyiceberg's create_table_transaction)."""
    dates, catalog = _hive_input(tmp_path), Catalog(tmp_path, uri=iceberg_rest.uri)
    try:
        r = shardscore("run", "--input", str(tmp_path / "in"), "--output", "iceberg://t/scores.taxi",
                       "--partition-table", *MODEL, "--model-arg", "factor=2", env=catalog.env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        ice = catalog.table()
        assert [(f.name, str(f.transform)) for f in ice.spec().fields] == [("date", "identity")]
        assert _iceberg_rows(catalog) == {i: (2 * i, day) for i, day in dates.items()}
        planned = list(ice.scan(row_filter=f"date == '{DATES[1]}'").plan_files())
        assert len(planned) == FILES_PER_DATE and all(f"/date={DATES[1]}/" in t.file.file_path for t in planned)
    finally:
        iceberg_rest.empty()


def test_partitioning_that_the_input_cannot_fill_is_refused_before_ray(cli, tmp_path: Path):
    _hive_input(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    pq.write_table(pa.table({"id": pa.array([1], pa.int64())}), flat / "part-0.parquet")
    other = tmp_path / "other"
    write_deltalake(str(other), pa.table({"id": pa.array([1], pa.int64()), "score": pa.array([2], pa.int64()),
                                          "region": pa.array(["eu"])}), partition_by=["region"])
    catalog = Catalog(tmp_path)
    cat = catalog.load()
    cat.create_namespace("scores")
    cat.create_table("scores.daily", Schema(NestedField(1, "id", LongType()), NestedField(2, "score", LongType()),
                                            NestedField(3, "at", TimestampType())),
                     partition_spec=PartitionSpec(PartitionField(3, 1000, DayTransform(), "at_day")))
    inp = str(tmp_path / "in")
    for given, output, said in [
        (str(flat), f"delta+{tmp_path / 'new'}", "--partition-table: the input has no Hive folders (<key>=<value>/)"),
        (inp, str(tmp_path / "folder"), f"--partition-table: --output {tmp_path / 'folder'} is a folder"),
        (inp, f"delta+{other}", f"the table is partitioned by region, but input file date={DATES[0]}/part-0.parquet "
                                "lies in no region=<value> folder"),
        (inp, "iceberg://t/scores.daily", "the table is partitioned by at_day (day of at, timestamp); shardscore fills "
                                          "only identity partitions of string columns"),
    ]:
        r = cli("run", "--input", given, "--output", output, "--partition-table", *MODEL, "--model-arg", "factor=2",
                env=catalog.env)
        assert r.returncode == 2 and said in r.stderr, (output, r.stderr[-3000:])
        assert "Started a local Ray" not in r.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "folder").exists()
    assert DeltaTable(str(other)).version() == 0
