"""A model that scores each row with twice its `id`, except where it is told to misbehave: it hangs (sleeps) on a
batch holding an id of `hang`, hangs holding the GIL (a regular expression that backtracks for ever in C) on one of
`hang_in_c`, ends its worker process (os._exit, as a segfault or the OOM killer would) on one of `exit_on`, or
raises ValueError on one of `raise_on`;
`delay` seconds per batch give a test time to act while a run is under way."""

import os
import re
import time

import pyarrow as pa
import pyarrow.compute as pc


class HangModel:
    def __init__(self, hang: list[int], hang_in_c: list[int], exit_on: list[int], raise_on: list[int],
                 batch_format: str, delay: float):
        self.hang, self.hang_in_c, self.exit_on, self.delay = set(hang), set(hang_in_c), set(exit_on), delay
        self.raise_on = set(raise_on)
        self.batch_format = batch_format
        self.columns = ["id"]

    def __call__(self, batch):
        ids = set(batch["id"].tolist() if self.batch_format == "pandas" else batch.column("id").to_pylist())
        time.sleep(self.delay)
        if self.exit_on & ids:
            os._exit(9)
        if self.raise_on & ids:
            raise ValueError(f"ids {sorted(self.raise_on & ids)} are not to be scored")
        if self.hang & ids:
            time.sleep(3600)
        if self.hang_in_c & ids:
            re.match(r"(a+)+$", "a" * 64 + "b")  # exponential backtracking in _sre, which holds the GIL throughout
        if self.batch_format == "pandas":
            return (batch["id"] * 2).rename("score")
        return {"score": pc.multiply(batch.column("id"), pa.scalar(2, pa.int64()))}


def load_model(hang: list[int] = (), hang_in_c: list[int] = (), exit_on: list[int] = (), raise_on: list[int] = (),
               batch_format: str = "pandas", delay: float = 0):
    return HangModel(list(hang), list(hang_in_c), list(exit_on), list(raise_on), batch_format, delay)
