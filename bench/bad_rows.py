"""The Ray example's model (ray_example.load_model), raising on a share of the rows: those whose `pickup_at`
microseconds are a multiple of `every` (1 in 10,000 by default: 0.01 %, scattered through every batch of the taxi
sample). For the cost of --max-bad-rows' bisection, next to the same model on clean rows."""

from __future__ import annotations

import pandas as pd

from ray_example import load_model as example


def load_model(every: int = 10_000):
    inner = example()

    def model(batch: pd.DataFrame) -> pd.DataFrame:
        bad = batch["pickup_at"].astype("int64") % every == 0
        if bad.any():
            raise ValueError(f"cannot score pickup_at {batch['pickup_at'][bad].iloc[0]}")
        return inner(batch)

    return model
