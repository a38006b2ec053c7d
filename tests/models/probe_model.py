"""A model that logs every time it is pickled (serialised) or unpickled, and in which process.

Proves the "put the model once" contract: one pickling on the driver whatever the shard count, and at most one
unpickling per worker process.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class ProbeModel:
    columns = ["passenger_count"]
    batch_format = "pyarrow"

    def __init__(self, log: str, payload_mb: float):
        self.log = log
        self.payload = np.ones(int(payload_mb * 2**20) // 8)

    def __getstate__(self):
        with open(self.log, "a") as f:
            f.write(f"pickle {os.getpid()}\n")
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.log, "a") as f:
            f.write(f"unpickle {os.getpid()}\n")

    def __call__(self, batch):
        return pa.table({"score": pc.equal(pc.bit_wise_and(batch.column("passenger_count"), 1), 0)})


def load_model(log: str, payload_mb: float = 16):
    return ProbeModel(log, payload_mb)
