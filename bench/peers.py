"""What teams would pick instead of shardscore, each written the way its docs recommend for batch scoring.

`python peers.py ENGINE MODEL INPUT OUTPUT`, run by bench/run.py from the peers' own venv (bench/peers.lock):
- ENGINE `spark`: PySpark in local mode, one core per task slot. The Ray example's model through `mapInPandas`
  (Spark's docs for "a function over an iterator of pandas DataFrames", the model loaded once per Python worker,
  which Spark reuses across tasks); the declaring model through `mapInArrow` on the one column it reads.
- ENGINE `daft`: Daft's native runner. A `@daft.cls` class whose `__init__` loads the model once per instance (the
  docs' way to "initialize a class instance once, e.g. loading a model") and a `@daft.method.batch` method.
- MODEL `example`: the Ray docs' model on a pandas DataFrame of every column (bench/ray_example.py); `declaring`:
  shardscore's dummy model, which declares its one column and scores pyarrow.
Both read the input folder's Parquet files and write Parquet (zstd, as shardscore does). One JSON line: rows,
`import_s` (the engine's import) and `engine_s` (the JVM and SparkSession, or Daft's context, before the query).
"""

from __future__ import annotations

import json
import os
import sys
import time

BATCH = 65536  # shardscore's and the process pool's batch size


def _example_model():
    from ray_example import load_model

    return load_model()


def _declaring_model():
    from shardscore.models.dummy import load_model

    return load_model()


_MODEL = None


def _once(factory):
    """The model, loaded once per Python worker process (Spark reuses its Python workers across tasks)."""
    global _MODEL
    if _MODEL is None:
        _MODEL = factory()
    return _MODEL


def _spark_example(batches):
    model = _once(_example_model)
    for frame in batches:
        yield model(frame)


def _spark_declaring(batches):
    model = _once(_declaring_model)
    for batch in batches:
        yield from model(batch).to_batches()


def spark(model: str, input_dir: str, output_dir: str) -> dict:
    started = time.monotonic()
    from pyspark.sql import SparkSession

    imported = time.monotonic()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers run this venv's Python, not PATH's
    session = (SparkSession.builder.master(f"local[{os.cpu_count()}]").appName("bench-peer")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
               .config("spark.sql.parquet.compression.codec", "zstd")
               .config("spark.ui.enabled", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    engine = time.monotonic()
    import peers  # by reference, not by value from __main__: a reused Python worker keeps its loaded model

    frame = session.read.parquet(input_dir)
    if model == "example":
        scored = frame.mapInPandas(peers._spark_example, schema="score boolean")
    else:
        scored = frame.select("passenger_count").mapInArrow(peers._spark_declaring, schema="score boolean")
    scored.write.mode("overwrite").parquet(output_dir)
    rows = session.read.parquet(output_dir).count()
    session.stop()
    return {"rows": rows, "import_s": imported - started, "engine_s": engine - imported}


def daft_run(model: str, input_dir: str, output_dir: str) -> dict:
    started = time.monotonic()
    import daft
    import pyarrow as pa

    imported = time.monotonic()
    factory = _example_model if model == "example" else _declaring_model

    @daft.cls
    class Scorer:
        def __init__(self):
            self.model = factory()

        @daft.method.batch(return_dtype=daft.DataType.bool(), batch_size=BATCH)
        def score(self, *columns: daft.Series) -> pa.Array:
            if model == "example":  # every column, as a pandas DataFrame: what the Ray example's model expects
                import pandas as pd

                frame = pd.DataFrame({c.name(): c.to_arrow().to_pandas() for c in columns})
                return pa.array(self.model(frame)["score"])
            return self.model(pa.table({c.name(): c.to_arrow() for c in columns})).column("score").combine_chunks()

    frame = daft.read_parquet(os.path.join(input_dir, "*.parquet"))
    engine = time.monotonic()
    names = frame.column_names if model == "example" else ["passenger_count"]
    scored = frame.select(Scorer().score(*[daft.col(n) for n in names]).alias("score"))
    scored.write_parquet(output_dir, compression="zstd", write_mode="overwrite")
    rows = daft.read_parquet(os.path.join(output_dir, "*.parquet")).count_rows()
    return {"rows": rows, "import_s": imported - started, "engine_s": engine - imported}


def main(engine: str, model: str, input_dir: str, output_dir: str) -> None:
    if model not in ("example", "declaring"):
        raise SystemExit(f"unknown model {model!r}: example or declaring")
    runs = {"spark": spark, "daft": daft_run}
    if engine not in runs:
        raise SystemExit(f"unknown engine {engine!r}: {' or '.join(runs)}")
    print(json.dumps(runs[engine](model, input_dir, output_dir)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
