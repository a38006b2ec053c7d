"""Issue 20 §2, Iceberg: `--input iceberg://<catalog>/<namespace>.<table>[@<snapshot id>]` scores one snapshot's data
files, pinned in the manifest; a newer snapshot's new files are new shards and its removed files' predictions are
refused or, with --incremental or --overwrite, removed, as for a folder whose files came and went. The source table
is written by pyiceberg (three appends, three data files); runs are `shardscore run` driver processes on the
multi-node test cluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from datasets import read_output
from test_iceberg_output import Catalog

pytestmark = pytest.mark.ray

MODEL = ["--model", "scale_model:load_model", "--model-arg", "factor=2", "--key-columns", "id"]


def _source(catalog: Catalog, batches: int = 3, rows: int = 400):
    """The table src.trips: `batches` appends of `rows` rows each (ids 0, 1, ...): one data file and snapshot each."""
    cat = catalog.load()
    cat.create_namespace_if_not_exists("src")
    schema = pa.schema([("id", pa.int64()), ("fare", pa.float64())])
    table = cat.create_table("src.trips", schema)
    for i in range(batches):
        ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        table.append(pa.table({"id": ids, "fare": ids * 0.5}, schema=schema))
    return table


def _scores(out: Path) -> dict[int, int]:
    table = read_output(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id is in the output more than once"
    return dict(zip(ids, table.column("score").to_pylist(), strict=True))


def _manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def test_a_snapshot_is_scored_file_by_file_and_a_newer_one_is_handled_as_changed_input(shardscore, tmp_path: Path):
    catalog, out = Catalog(tmp_path), tmp_path / "out"
    source = _source(catalog)
    run = lambda *args: shardscore("run", "--input", "iceberg://t/src.trips", "--output", str(out), *MODEL, *args,  # noqa: E731
                                   env=catalog.env)
    r = run()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _scores(out) == {i: 2 * i for i in range(1200)}
    first = source.current_snapshot().snapshot_id
    manifest = _manifest(out)
    assert manifest["input_table"] == {"name": "src.trips", "catalog": "t", "snapshot_id": first}
    assert manifest["totals"]["shards"] == 3 and all(s["shard_id"].startswith("data/") for s in manifest["shards"])
    # An append: the new snapshot's one new file is scored, the others are already committed.
    source.append(pa.table({"id": np.arange(1200, 1300, dtype=np.int64), "fare": np.zeros(100)},
                           schema=source.schema().as_arrow()))
    r = run()
    assert r.returncode == 0 and "3 already committed" in r.stdout and "100 rows scored this run" in r.stdout, r.stdout
    assert _scores(out) == {i: 2 * i for i in range(1300)}
    assert _manifest(out)["input_table"]["snapshot_id"] == catalog.table("src.trips").current_snapshot().snapshot_id
    # An overwrite replaces every file: without --incremental the gone files' predictions are refused, with it
    # they are removed and the new file scored.
    source = catalog.table("src.trips")
    source.overwrite(pa.table({"id": np.arange(5000, 5050, dtype=np.int64), "fare": np.zeros(50)},
                              schema=source.schema().as_arrow()))
    r = run()
    assert r.returncode == 2 and "its input file is gone from the input" in r.stderr, r.stderr[-3000:]
    r = run("--incremental")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _scores(out) == {i: 2 * i for i in range(5000, 5050)}


def test_a_named_snapshot_is_scored_as_it_was(shardscore, tmp_path: Path):
    catalog, out = Catalog(tmp_path), tmp_path / "out"
    source = _source(catalog, batches=1)
    first = source.current_snapshot().snapshot_id
    source.append(pa.table({"id": np.arange(400, 500, dtype=np.int64), "fare": np.zeros(100)},
                           schema=source.schema().as_arrow()))
    r = shardscore("run", "--input", f"iceberg://t/src.trips@{first}", "--output", str(out), *MODEL, env=catalog.env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _scores(out) == {i: 2 * i for i in range(400)}
    assert _manifest(out)["input_table"]["snapshot_id"] == first


def test_from_one_iceberg_table_into_another(shardscore, tmp_path: Path):
    catalog = Catalog(tmp_path)
    _source(catalog)
    r = shardscore("run", "--input", "iceberg://t/src.trips", "--output", "iceberg://t/scores.trips", *MODEL,
                   env=catalog.env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert catalog.rows("scores.trips") == {i: 2 * i for i in range(1200)}


@pytest.mark.parametrize("source, said", [
    ("iceberg://t/src.nope", "catalog 't' has no table src.nope"),
    ("iceberg://t/src.trips@123", "the table has no snapshot '123' (its latest: "),
])
def test_a_table_input_that_is_not_there_is_refused_before_ray(cli, tmp_path: Path, source: str, said: str):
    catalog = Catalog(tmp_path)
    _source(catalog, batches=1)
    r = cli("run", "--input", source, "--output", str(tmp_path / "out"), *MODEL, env=catalog.env)
    assert r.returncode == 2 and said in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "out").exists()
