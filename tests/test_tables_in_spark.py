"""Issue 20 §3: the tables shardscore commits read the same in an independent engine. Apache Spark (Iceberg's Spark
runtime, Delta Lake's delta-spark) reads an Iceberg table of the SQLite catalog and a Delta table after a first run
and an --overwrite run: only the second run's rows, each once, at the current snapshot or version, and the first
run's at the earlier one (time travel). And Spark makes the row-level deletes shardscore's writers never make: such
an input is refused before Ray, and the same table compacted as the refusal advises is scored without the deleted
row. Runs are `shardscore run` driver processes on the multi-node test cluster."""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from datasets import read_output
from support import make_tempdir, rmtree, stop_process
from test_iceberg_output import Catalog, _input, _scored
from test_partitioned_tables import DATES, _hive_input

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime (java on PATH) for Spark")]
MODEL = ["--model", "scale_model:load_model", "--key-columns", "id"]
SERVER = Path(__file__).with_name("spark_tables.py")


class Spark:
    """The module's one Spark process (tests/spark_tables.py), a JSON request and answer a line."""

    def __init__(self, root: Path):
        self.log = root / "spark.log"
        self.process = subprocess.Popen([sys.executable, str(SERVER), str(root / "warehouse")], text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"))

    def ask(self, request: dict, timeout: float = 600) -> Any:
        from spark_tables import REPLY

        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while selector.select(max(0.0, deadline - time.monotonic())):
                line = self.process.stdout.readline()
                if not line:
                    break
                if line.startswith(REPLY):
                    answer = json.loads(line[len(REPLY):])
                    assert not (isinstance(answer, dict) and "error" in answer), answer.get("error")
                    return answer
        pytest.fail(f"Spark gave no answer to {request} (exit {self.process.poll()}); its log ends:\n"
                    f"{self.log.read_text()[-4000:]}")

    def rows(self, *reads: dict) -> list[dict[int, Any]]:
        """id -> score (or the tuple of the other columns read) per read, as Spark reads it; asserts each id is
        there once."""
        tables = self.ask({"read": list(reads)})
        for rows in tables:
            assert len(rows) == len({row[0] for row in rows}), "an id is in the table more than once"
        return [{row[0]: row[1] if len(row) == 2 else tuple(row[1:]) for row in rows} for rows in tables]


@pytest.fixture(scope="module")
def spark():
    root = make_tempdir("shardscore-spark-")
    server = Spark(root)
    yield server
    server.process.stdin.close()
    try:
        server.process.wait(60)
    finally:
        stop_process(server.process)
        rmtree(root)


def test_spark_reads_the_iceberg_and_delta_tables_as_committed_and_their_earlier_versions(shardscore, spark,
                                                                                         tmp_path: Path):
    inp, catalog, delta = _input(tmp_path), Catalog(tmp_path), tmp_path / "delta"
    for factor, more in ((2, []), (3, ["--overwrite"])):
        for out in ("iceberg://t/scores.taxi", f"delta+{delta}"):
            r = shardscore("run", "--input", str(inp), "--output", out, *MODEL, "--model-arg", f"factor={factor}",
                           *more, env=catalog.env)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = catalog.table()
    first, _ = table.snapshots()
    assert spark.rows({"format": "iceberg", "path": table.metadata_location},
                      {"format": "iceberg", "path": table.metadata_location,
                       "options": {"snapshot-id": str(first.snapshot_id)}},
                      {"format": "delta", "path": str(delta)},
                      {"format": "delta", "path": str(delta), "options": {"versionAsOf": "0"}}) == [
        _scored(3), _scored(2), _scored(3), _scored(2)]


def test_input_tables_with_row_level_deletes_are_refused_and_scored_once_compacted(cli, shardscore, spark,
                                                                                   tmp_path: Path):
    """Spark's merge-on-read DELETE of id 7: an Iceberg position delete file, a Delta deletion vector (tests/
    spark_tables.py). The Iceberg tables are registered in the SQLite catalog where Spark's Hadoop catalog left
    them."""
    made = spark.ask({"deletes": str(tmp_path)})
    catalog = Catalog(tmp_path)
    cat = catalog.load()
    cat.create_namespace("ns")
    for kind, tables in made.items():
        cat.register_table(("ns", kind), tables["iceberg"])
    said = {"iceberg": "has 1 delete file(s) (row-level deletes): not supported yet; compact the table first",
            "delta": "has deletion vectors on 1 file(s) (row-level deletes): not supported yet; compact the table first"}
    for fmt, given in (("iceberg", "iceberg://t/ns.{kind}"), ("delta", "delta+{location}")):
        out = tmp_path / f"out-{fmt}"
        refused = cli("run", "--input", given.format(kind="deleted", location=made["deleted"]["delta"]), "--output",
                      str(out), *MODEL, "--model-arg", "factor=2", env=catalog.env)
        assert refused.returncode == 2 and said[fmt] in refused.stderr, refused.stderr[-3000:]
        assert "Started a local Ray" not in refused.stderr and not out.exists()
        scored = shardscore("run", "--input", given.format(kind="compacted", location=made["compacted"]["delta"]),
                            "--output", str(out), *MODEL, "--model-arg", "factor=2", env=catalog.env)
        assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
        table = read_output(out)
        assert dict(zip(table.column("id").to_pylist(), table.column("score").to_pylist(), strict=True)) == {
            i: 2 * i for i in range(100) if i != 7}, fmt


def test_spark_reads_partitioned_tables_partition_values_from_their_metadata(shardscore, spark, tmp_path: Path):
    """--partition-table: the files hold no `date`; Spark's Iceberg (identity partition constants) and Delta
    (partitionValues) readers give each row its folder's date, and a filter on it reads only that partition."""
    dates, catalog, delta = _hive_input(tmp_path), Catalog(tmp_path), tmp_path / "delta"
    for out in ("iceberg://t/scores.taxi", f"delta+{delta}"):
        r = shardscore("run", "--input", str(tmp_path / "in"), "--output", out, "--partition-table", *MODEL,
                       "--model-arg", "factor=2", env=catalog.env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    want = {i: (2 * i, day) for i, day in dates.items()}
    first_day = {i: v for i, v in want.items() if v[1] == DATES[0]}
    columns = ["id", "score", "date"]
    reads = [{"format": fmt, "path": path, "columns": columns, **extra}
             for fmt, path in (("iceberg", catalog.table().metadata_location), ("delta", str(delta)))
             for extra in ({}, {"where": f"date = '{DATES[0]}'"})]
    assert spark.rows(*reads) == [want, first_day, want, first_day]
