"""The alternatives shardscore is measured against, each runnable as `python baselines.py NAME INPUT OUTPUT`.

- pool-best: a ProcessPoolExecutor over the files, written at its best: reads only the column the model needs,
  stays in pyarrow, one process per core. This machine's limit for the dummy model.
- pool-example: the same pool running the Ray example's own model (all columns, pandas, in batches).
- pool-torch: the same pool running the PyTorch model (loaded once per process, one thread per process).
- ray-data: Ray Data's read_parquet().map_batches(model).write_parquet() with the Ray example's model.
- ray-data-dummy, ray-data-iceberg, ray-data-delta: the same with shardscore's dummy model (one column, pyarrow, no
  payload) into Parquet files, into an Iceberg table (write_iceberg) of a SQLite catalog under OUTPUT that it
  creates, and into a Delta table at OUTPUT (write_delta, which creates it).
Each prints one JSON line: rows, and ray_init seconds where Ray is used.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_MODEL = None


def _files(input_dir: str) -> list[str]:
    return sorted(os.path.join(input_dir, f) for f in os.listdir(input_dir) if f.endswith(".parquet"))


def _best(path: str, out_dir: str) -> int:
    col = pq.read_table(path, columns=["passenger_count"]).column(0)
    even = pc.equal(pc.bit_wise_and(col, 1), 0)
    pq.write_table(pa.table({"score": even}), os.path.join(out_dir, os.path.basename(path)), compression="zstd")
    return len(even)


def _init_example() -> None:
    global _MODEL
    from ray_example import load_model

    _MODEL = load_model()


def _example(path: str, out_dir: str) -> int:
    # Streams record batches like shardscore does (bounded memory); the model still gets every column as pandas.
    rows = 0
    with pq.ParquetWriter(os.path.join(out_dir, os.path.basename(path)), pa.schema([("score", pa.bool_())]),
                          compression="zstd") as writer:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
            writer.write_table(pa.Table.from_pandas(_MODEL(batch.to_pandas()), preserve_index=False))
            rows += batch.num_rows
    return rows


def _init_torch(weights: str) -> None:
    global _MODEL
    import torch

    from shardscore.models.torch_model import load_model

    torch.set_num_threads(1)  # one core per process, as Ray gives each task
    _MODEL = load_model(path=weights)
    _MODEL.prepare("cpu")


def _torch(path: str, out_dir: str) -> int:
    pf = pq.ParquetFile(path)
    with pq.ParquetWriter(os.path.join(out_dir, os.path.basename(path)), pa.schema([("prediction", pa.float32())]),
                          compression="zstd") as writer:
        rows = 0
        for batch in pf.iter_batches(batch_size=65536, columns=_MODEL.columns):
            names = batch.schema.names
            out = _MODEL({n: batch.column(i).to_numpy() for i, n in enumerate(names)})
            writer.write_table(pa.table(out))
            rows += batch.num_rows
    return rows


def pool(input_dir: str, output_dir: str, fn, initializer=None, initargs=()) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    files = _files(input_dir)
    with ProcessPoolExecutor(max_workers=os.cpu_count(), initializer=initializer, initargs=initargs) as ex:
        rows = sum(ex.map(fn, files, [output_dir] * len(files)))
    return {"rows": rows}


def ray_data(input_dir: str, output_dir: str) -> dict:
    import ray
    import ray.data

    from ray_example import load_model

    started = time.monotonic()
    ray.init()
    init_seconds = time.monotonic() - started
    model = load_model()

    def scored(table: pa.Table):
        # Ray Data's pandas batches are Arrow-backed under pandas 3, where the example's `% 2` on int8 raises;
        # hand the model the NumPy-backed frame it was written for, as shardscore does.
        return model(table.to_pandas())

    ds = ray.data.read_parquet(input_dir)
    ds.map_batches(scored, batch_format="pyarrow", num_cpus=0.5).write_parquet(output_dir)
    rows = sum(pq.ParquetFile(os.path.join(output_dir, f)).metadata.num_rows
               for f in os.listdir(output_dir) if f.endswith(".parquet"))
    return {"rows": rows, "ray_init": init_seconds}


def ray_data_dummy(input_dir: str, output_dir: str, table: str) -> dict:
    """The dummy model through Ray Data into Parquet files (`table` ""), into the Iceberg table bench.scores of a
    SQLite catalog under output_dir, created empty first (Ray Data's IcebergDatasink.on_write_start loads the
    table), or into a Delta table at output_dir."""
    import ray
    import ray.data

    from shardscore.models.dummy import load_model

    started = time.monotonic()
    ray.init()
    init_seconds = time.monotonic() - started
    model = load_model(payload_mb=0)
    ds = ray.data.read_parquet(input_dir, columns=["passenger_count"]).map_batches(model, batch_format="pyarrow",
                                                                                    num_cpus=0.5)
    if table == "delta":
        from deltalake import DeltaTable

        ds.write_delta(output_dir)
        return {"rows": sum(pa.table(DeltaTable(output_dir).get_add_actions(flatten=True)).column("num_records")
                            .to_pylist()), "ray_init": init_seconds}
    if not table:
        ds.write_parquet(output_dir)
        return {"rows": sum(pq.ParquetFile(os.path.join(output_dir, f)).metadata.num_rows
                            for f in os.listdir(output_dir) if f.endswith(".parquet")), "ray_init": init_seconds}
    from pyiceberg.catalog.sql import SqlCatalog

    os.makedirs(output_dir, exist_ok=True)
    props = {"uri": f"sqlite:///{output_dir}/catalog.db", "warehouse": f"file://{output_dir}/warehouse"}
    catalog = SqlCatalog("bench", **props)
    catalog.create_namespace("bench")
    catalog.create_table("bench.scores", pa.schema([("score", pa.bool_())]))
    ds.write_iceberg("bench.scores", catalog_kwargs={"name": "bench", "type": "sql", **props})
    summary = catalog.load_table("bench.scores").current_snapshot().summary
    return {"rows": int(summary["total-records"]), "ray_init": init_seconds}


def main(name: str, input_dir: str, output_dir: str, *extra: str) -> None:
    if name == "pool-best":
        result = pool(input_dir, output_dir, _best)
    elif name == "pool-example":
        result = pool(input_dir, output_dir, _example, _init_example)
    elif name == "pool-torch":
        result = pool(input_dir, output_dir, _torch, _init_torch, (extra[0],))
    elif name == "ray-data":
        result = ray_data(input_dir, output_dir)
    elif name in ("ray-data-dummy", "ray-data-iceberg", "ray-data-delta"):
        result = ray_data_dummy(input_dir, output_dir, name.removeprefix("ray-data-dummy").removeprefix("ray-data-"))
    else:
        raise SystemExit(f"unknown baseline {name!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
