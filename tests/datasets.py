"""Small datasets for tests, including the bad shards a real dataset has: corrupt, empty, wrong types."""

from __future__ import annotations

from pathlib import Path

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
