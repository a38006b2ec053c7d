"""The "Batch Prediction with Ray Core" pattern as the Ray docs write it, for side-by-side comparison.

`load_model()` is the docs' dummy model (a function on a DataFrame, declaring nothing). `python ray_example.py
INPUT OUTPUT` runs the docs' driver: `ray.put(model)` once, one task per shard that reads the whole file into
pandas, scores it and (as the docs recommend) writes its result from the worker. Nothing else is tuned.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def load_model():
    # A dummy model.
    def model(batch: pd.DataFrame) -> pd.DataFrame:
        # Dummy payload so copying the model will actually copy some data across nodes.
        model.payload = np.zeros(100_000_000)
        return pd.DataFrame({"score": batch["passenger_count"] % 2 == 0})

    return model


def main(input_dir: str, output_dir: str) -> None:
    import ray

    started = time.monotonic()
    ray.init()
    init_seconds = time.monotonic() - started

    @ray.remote
    def make_prediction(model, shard_path: str, out_path: str) -> int:
        df = pq.read_table(shard_path).to_pandas()
        result = model(df)
        pq.write_table(pa.Table.from_pandas(result), out_path)
        return len(result)

    os.makedirs(output_dir, exist_ok=True)
    files = sorted(f for f in os.listdir(input_dir) if f.endswith(".parquet"))
    model_ref = ray.put(load_model())
    refs = [make_prediction.remote(model_ref, os.path.join(input_dir, f), os.path.join(output_dir, f))
            for f in files]
    rows = sum(ray.get(refs))
    print(json.dumps({"rows": rows, "ray_init": init_seconds}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
