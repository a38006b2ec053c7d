"""Issue 20 §3: the tables shardscore commits read the same in an independent engine. Apache Spark (Iceberg's Spark
runtime, Delta Lake's delta-spark) reads an Iceberg table of the SQLite catalog and a Delta table after a first run
and an --overwrite run: only the second run's rows, each once, at the current snapshot or version, and the first
run's at the earlier one (time travel). Runs are `shardscore run` driver processes on the multi-node test cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_iceberg_output import Catalog, _input, _scored

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime (java on PATH) for Spark")]
MODEL = ["--model", "scale_model:load_model", "--key-columns", "id"]


def spark_rows(*reads: dict) -> list[dict[int, int]]:
    """id -> score per read, as Spark reads it (tests/spark_read.py); asserts each id is there once."""
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("spark_read.py")), json.dumps(list(reads))],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    tables = json.loads(r.stdout.splitlines()[-1])
    for rows in tables:
        assert len(rows) == len({i for i, _ in rows}), "an id is in the table more than once"
    return [dict(rows) for rows in tables]


def test_spark_reads_the_iceberg_and_delta_tables_as_committed_and_their_earlier_versions(shardscore, tmp_path: Path):
    inp, catalog, delta = _input(tmp_path), Catalog(tmp_path), tmp_path / "delta"
    for factor, more in ((2, []), (3, ["--overwrite"])):
        for out in ("iceberg://t/scores.taxi", f"delta+{delta}"):
            r = shardscore("run", "--input", str(inp), "--output", out, *MODEL, "--model-arg", f"factor={factor}",
                           *more, env=catalog.env)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = catalog.table()
    first, _ = table.snapshots()
    assert spark_rows({"format": "iceberg", "path": table.metadata_location},
                      {"format": "iceberg", "path": table.metadata_location,
                       "options": {"snapshot-id": str(first.snapshot_id)}},
                      {"format": "delta", "path": str(delta)},
                      {"format": "delta", "path": str(delta), "options": {"versionAsOf": "0"}}) == [
        _scored(3), _scored(2), _scored(3), _scored(2)]
