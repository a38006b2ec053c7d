"""The dummy model of Ray's "Batch Prediction with Ray Core" example: score = passenger_count is even.

Like the example it carries a large payload, so that shipping the model by value would cost real copies; here
its size is configurable. Unlike the example it declares the one column it needs and scores in pyarrow, so
shards read a single column and never build a DataFrame.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class EvenPassengerModel:
    columns = ["passenger_count"]

    def __init__(self, payload_mb: float, batch_format: str):
        self.payload = np.zeros(int(payload_mb * 2**20) // 8)
        self.batch_format = batch_format

    def __call__(self, batch):
        if self.batch_format == "pyarrow":
            even = pc.equal(pc.bit_wise_and(batch.column("passenger_count"), 1), 0)
            return pa.table({"score": even})
        if self.batch_format == "numpy":
            return {"score": batch["passenger_count"] % 2 == 0}
        return batch[["passenger_count"]].assign(score=batch["passenger_count"] % 2 == 0)[["score"]]


def load_model(payload_mb: float = 100, batch_format: str = "pyarrow") -> EvenPassengerModel:
    """payload_mb: size of the dummy weights; batch_format: pyarrow (fastest), numpy or pandas."""
    if payload_mb < 0:
        raise ValueError(f"payload_mb must be >= 0, got {payload_mb}")
    return EvenPassengerModel(payload_mb, batch_format)
