"""A model that raises on a few specific rows (by `id`) and scores every other row with its own id: the output
shows which rows were scored, and how often the model saw each one (`seen_log`, one line per call)."""

import os

import pyarrow as pa
import pyarrow.compute as pc


class BadRowsModel:
    def __init__(self, bad: list[int], batch_format: str, seen_log: str = ""):
        self.bad = set(bad)
        self.batch_format = batch_format
        self.columns = ["id"]
        self.seen_log = seen_log

    def __call__(self, batch):
        # pandas: a DataFrame; numpy: a dict of arrays; pyarrow: a Table.
        ids = batch.column("id").to_pylist() if self.batch_format == "pyarrow" else batch["id"].tolist()
        if self.seen_log:
            with open(self.seen_log, "a") as f:
                f.write(f"{os.getpid()} {len(ids)}\n")
        bad = sorted(self.bad.intersection(ids))
        if bad:
            raise ValueError(f"cannot score id {bad[0]}")
        if self.batch_format == "pandas":
            return (batch["id"] * 2).rename("score")
        if self.batch_format == "numpy":
            return {"score": batch["id"] * 2}
        return {"score": pc.multiply(batch.column("id"), pa.scalar(2, pa.int64()))}


def load_model(bad: list[int], batch_format: str = "pandas", seen_log: str = ""):
    return BadRowsModel(bad, batch_format, seen_log)
