"""A model that scores each row with its `id` times `factor`: two factors are two models whose predictions differ
row by row, so a reader tells which one a row was scored by."""

import pyarrow as pa
import pyarrow.compute as pc


class ScaleModel:
    columns = ["id"]
    batch_format = "pyarrow"

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, batch: pa.Table):
        return {"score": pc.multiply(batch.column("id"), pa.scalar(self.factor, pa.int64()))}


def load_model(factor: int):
    return ScaleModel(factor)
