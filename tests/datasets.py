"""Small datasets for tests, including the bad shards a real dataset has: corrupt, empty, wrong types."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from shardscore.sample_data import generate
from shardscore.storage import resolve


def sample(path: Path, shards: int = 4, rows: int = 1000, row_group_size: int = 262144, seed: int = 0) -> Path:
    generate(resolve(str(path)), shards, rows, seed=seed, row_group_size=row_group_size)
    return path


def corrupt(path: Path) -> None:
    """Truncate a Parquet file in its middle: footer gone."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path, like: Path) -> None:
    """A valid Parquet file with the right schema and zero rows."""
    pq.write_table(pq.read_schema(like).empty_table(), path)


def retype(path: Path, column: str, type_: pa.DataType) -> None:
    table = pq.read_table(path)
    idx = table.schema.get_field_index(column)
    pq.write_table(table.set_column(idx, column, table.column(column).cast(type_)), path)


def drop_column(path: Path, column: str) -> None:
    pq.write_table(pq.read_table(path).drop_columns([column]), path)


def expected_even(input_dir: Path) -> int:
    """How many rows of the dataset have an even passenger count (what the dummy model scores True)."""
    table = ds.dataset(str(input_dir)).to_table(columns=["passenger_count"])
    return pc.sum(pc.equal(pc.bit_wise_and(table.column(0), 1), 0)).as_py()


def read_output(out: Path) -> pa.Table:
    """Every predictions file (the way a reader would: hidden files and folders skipped)."""
    return ds.dataset(str(out), format="parquet").to_table()


def mark(path: Path, vendor: str = "MARKED") -> None:
    """Give every row of a file the vendor tests/models/rogue_model.py misbehaves on."""
    table = pq.read_table(path)
    idx = table.schema.get_field_index("vendor_id")
    pq.write_table(table.set_column(idx, "vendor_id", pa.array([vendor] * table.num_rows, pa.string())), path)


def corrupt_pages(path: Path) -> None:
    """Damage the data pages and keep the footer valid: planning reads the file fine, decoding it fails."""
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    for i in range(4, footer_start):
        data[i] = 0xFF
    path.write_bytes(bytes(data))


def assert_readable(out: Path, manifest: dict) -> None:
    """Every reader a user points at the output sees exactly the manifest's `totals.rows_out` rows.

    Each reader in the form README's Output section documents: pyarrow and pandas take the folder (their dataset
    discovery skips `_`- and `.`-prefixed entries: pyarrow.dataset's default `ignore_prefixes`); DuckDB 2.0.1 reads
    a folder as `<folder>/**/*.parquet` (checked both ways); polars 2.1.0 refuses the folder itself ("directory
    contained paths with different file extensions": `_SUCCESS`, `_manifest.json`), so it takes the glob. The
    glob matches no metadata: shardscore's temporaries end in a uuid and `_shardscore/` holds only JSON.
    """
    expected = manifest["totals"]["rows_out"]
    glob = f"{out}/**/*.parquet"
    if not list(out.rglob("*.parquet")):  # zero-row inputs only: no file; DuckDB and polars refuse an empty glob
        assert ds.dataset(str(out), format="parquet").count_rows() == expected == 0
        return
    counts = {
        "pyarrow": ds.dataset(str(out), format="parquet").count_rows(),
        "pandas": len(pd.read_parquet(out)),
        "duckdb glob": duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()[0][0],
        "duckdb folder": duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0],
        "polars": pl.scan_parquet(glob).select(pl.len()).collect().item(),
    }
    assert counts == dict.fromkeys(counts, expected), (counts, expected)


def add_shard(path: Path, rows: int = 100, seed: int = 99) -> Path:
    """One more input file, leaving the others untouched (regenerating them would change their mtimes)."""
    staging = path.parent / f".staging-{seed}"
    generate(resolve(str(staging)), 1, rows, seed=seed)
    target = path / f"part-{len(list(path.glob('part-*.parquet'))):05d}.parquet"
    (staging / "part-00000.parquet").rename(target)
    staging.rmdir()
    return target


# ---------------------------------------------------------------- files as other tools write them (issue 16)
def taxi_frame(rows: int, seed: int = 0):
    """The same logical rows every writer below writes: a text key, a timestamp, the dummy model's column."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "vendor_id": rng.choice(np.array(["VTS", "CMT", "DDS"]), rows).astype(object),
        "pickup_at": (pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, rows), unit="s")
                      ).astype("datetime64[us]"),
        "passenger_count": rng.integers(0, 7, rows).astype("int8"),
    })


def write_with(tool: str, frame, path: Path, timestamp_unit: str | None = None) -> Path:
    """Write `frame` as `tool` does by default: pandas 3 (text as large_string, timestamps in the frame's unit),
    polars (large_string, microseconds), DuckDB (string, microseconds); `timestamp_unit` first converts the frame's
    timestamps (pandas keeps nanoseconds in the file when the frame has them)."""
    if timestamp_unit:
        frame = frame.assign(**{c: frame[c].astype(f"datetime64[{timestamp_unit}]")
                                for c in frame.columns if str(frame[c].dtype).startswith("datetime64")})
    if tool == "pandas":
        frame.to_parquet(path, index=False)
    elif tool == "polars":
        import polars as pl

        pl.from_pandas(frame).write_parquet(path)
    elif tool == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.register("frame", frame)
        con.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
        con.close()
    else:
        raise ValueError(tool)
    return path


def databricks_folder(folder: Path, frame, commits: dict[str, dict], files: dict[str, str]) -> None:
    """A folder as a Databricks (DBIO) write leaves it: `_started_<tid>` for every tid of `files`, `_committed_<tid>`
    with each of `commits` (its JSON), and each data file of `files` (name -> tid) holding `frame`."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for name, tid in files.items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / name)
        (folder / f"_started_{tid}").write_text("")
    for tid, body in commits.items():
        (folder / f"_committed_{tid}").write_text(json.dumps(body))
