"""Sample data with the NYC taxi 2009 schema of the Ray example, dirty values included, at any size.

Deterministic: the same seed, shard count and row count give byte-identical files, so tests and benchmarks
can regenerate data instead of storing it. Each shard is written row group by row group (bounded memory).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Location, write_atomic

SCHEMA = pa.schema([
    ("vendor_id", pa.string()),
    ("pickup_at", pa.timestamp("us")),
    ("dropoff_at", pa.timestamp("us")),
    ("passenger_count", pa.int8()),
    ("trip_distance", pa.float32()),
    ("pickup_longitude", pa.float32()),
    ("pickup_latitude", pa.float32()),
    ("rate_code_id", pa.string()),
    ("store_and_fwd_flag", pa.string()),
    ("dropoff_longitude", pa.float32()),
    ("dropoff_latitude", pa.float32()),
    ("payment_type", pa.string()),
    ("fare_amount", pa.float32()),
    ("extra", pa.float32()),
    ("mta_tax", pa.float32()),
    ("tip_amount", pa.float32()),
    ("tolls_amount", pa.float32()),
    ("total_amount", pa.float32()),
])

_YEAR_START_US = 1230768000 * 10**6  # 2009-01-01T00:00:00Z
_YEAR_US = 365 * 24 * 3600 * 10**6


def taxi_batch(rows: int, rng: np.random.Generator) -> pa.Table:
    """One batch of taxi-like rows. Like the real 2009 data, about 1.5% of passenger counts are 0 or negative."""
    pickup = _YEAR_START_US + rng.integers(0, _YEAR_US, rows)
    duration = rng.gamma(2.0, 420.0, rows).astype(np.int64) * 10**6
    passengers = rng.choice(np.array([1, 2, 3, 4, 5, 6, 0, -1, -3], dtype=np.int8), rows,
                            p=[0.69, 0.14, 0.05, 0.03, 0.05, 0.025, 0.01, 0.003, 0.002])
    distance = rng.gamma(1.6, 1.7, rows).astype(np.float32)
    fare = (2.5 + distance * 2.0 + rng.normal(0, 1.0, rows)).astype(np.float32)
    tip = np.where(rng.random(rows) < 0.3, fare * rng.uniform(0.1, 0.25, rows), 0).astype(np.float32)
    tolls = np.where(rng.random(rows) < 0.05, 4.8, 0).astype(np.float32)
    extra = rng.choice(np.array([0.0, 0.5, 1.0], dtype=np.float32), rows)
    mta = np.full(rows, 0.5, dtype=np.float32)

    def coords(center: float, spread: float) -> np.ndarray:
        values = rng.normal(center, spread, rows).astype(np.float32)
        values[rng.random(rows) < 0.02] = 0.0  # missing GPS fixes are recorded as 0 in the real data
        return values

    return pa.table({
        "vendor_id": pa.array(rng.choice(np.array(["VTS", "CMT", "DDS"]), rows)),
        "pickup_at": pa.array(pickup, pa.timestamp("us")),
        "dropoff_at": pa.array(pickup + duration, pa.timestamp("us")),
        "passenger_count": pa.array(passengers, pa.int8()),
        "trip_distance": pa.array(distance),
        "pickup_longitude": pa.array(coords(-73.98, 0.04)),
        "pickup_latitude": pa.array(coords(40.75, 0.03)),
        "rate_code_id": pa.nulls(rows, pa.string()),
        "store_and_fwd_flag": pa.array(rng.choice(np.array(["N", "Y"]), rows, p=[0.99, 0.01])),
        "dropoff_longitude": pa.array(coords(-73.97, 0.05)),
        "dropoff_latitude": pa.array(coords(40.75, 0.04)),
        "payment_type": pa.array(rng.choice(np.array(["CASH", "Credit", "No Charge", "Dispute"]), rows,
                                            p=[0.6, 0.38, 0.015, 0.005])),
        "fare_amount": pa.array(fare),
        "extra": pa.array(extra),
        "mta_tax": pa.array(mta),
        "tip_amount": pa.array(tip),
        "tolls_amount": pa.array(tolls),
        "total_amount": pa.array((fare + extra + mta + tip + tolls).astype(np.float32)),
    }, schema=SCHEMA)


def write_shard(loc: Location, index: int, rows: int, seed: int = 0, row_group_size: int = 262144) -> str:
    """Write shard `index` (part-00000.parquet, ...) of `rows` rows; returns its path."""
    path = loc.join(f"part-{index:05d}.parquet")
    rng = np.random.default_rng([seed, index])

    def write(sink: pa.NativeFile) -> None:
        with pq.ParquetWriter(sink, SCHEMA, compression="snappy") as writer:
            done = 0
            while done < rows:
                n = min(row_group_size, rows - done)
                writer.write_table(taxi_batch(n, rng), row_group_size=n)
                done += n

    write_atomic(loc, path, write)
    return path


def generate(loc: Location, shards: int, rows_per_shard: int, seed: int = 0,
             row_group_size: int = 262144) -> list[str]:
    if shards < 1 or rows_per_shard < 1:
        raise ValueError(f"--shards and --rows-per-shard must be >= 1 (got {shards}, {rows_per_shard})")
    return [write_shard(loc, i, rows_per_shard, seed, row_group_size) for i in range(shards)]
