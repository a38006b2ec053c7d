"""A slow model that appends its process id to a file at every batch, so that a test can pause exactly the
processes scoring one run's shards; `tag` is written into every prediction row, so two runs' files differ."""

import os
import time

import pyarrow as pa
import pyarrow.compute as pc


class TaggedModel:
    columns = ["passenger_count"]
    batch_format = "pyarrow"

    def __init__(self, pidfile: str, tag: str, delay: float):
        self.pidfile, self.tag, self.delay = pidfile, tag, delay

    def __call__(self, batch):
        with open(self.pidfile, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(self.delay)
        even = pc.equal(pc.bit_wise_and(batch.column("passenger_count"), 1), 0)
        return pa.table({"score": even, "run": pa.array([self.tag] * batch.num_rows, pa.string())})


def load_model(pidfile: str, tag: str = "a", delay: float = 0.0) -> TaggedModel:
    return TaggedModel(pidfile, tag, delay)
