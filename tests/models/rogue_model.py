"""A model that misbehaves on purpose, on the rows of one marked vendor (datasets.mark), as real models do.

mode:
- drift: `score` is a string for batches holding the marker, a bool for the others (two prediction schemas);
- raise: raises on batches holding the marker, the way a model's own validation does;
- key: returns a `vendor_id` column of its own beside `score` (a clash with --key-columns vendor_id);
- chatty: prints a line per batch on the worker's stdout, as models do;
- lock: holds a lock, which cannot be pickled (so it cannot be sent to workers);
- worker_fails: loads on the driver, fails in prepare() on every worker (a model that does not load there),
  while the file `flag` exists (always when no flag is given).
"""

import os
import threading

import pyarrow as pa
import pyarrow.compute as pc

MARKER = "MARKED"


class RogueModel:
    batch_format = "pyarrow"
    columns = ["passenger_count", "vendor_id"]

    def __init__(self, mode: str, flag: str):
        self.mode = mode
        self.flag = flag
        if mode == "lock":
            self.guard = threading.Lock()

    def prepare(self, device: str) -> None:  # runs on workers only
        if self.mode == "worker_fails" and (not self.flag or os.path.exists(self.flag)):
            raise RuntimeError("the weights are not on this worker")

    def __call__(self, batch):
        even = pc.equal(pc.bit_wise_and(batch.column("passenger_count"), 1), 0)
        marked = pc.any(pc.equal(batch.column("vendor_id"), MARKER)).as_py()
        if self.mode == "drift" and marked:
            return pa.table({"score": pc.cast(even, pa.string())})
        if self.mode == "raise" and marked:
            raise ValueError("value must be >0, got 0")
        if self.mode == "chatty":
            print(f"chatty model scored {batch.num_rows} rows", flush=True)
        if self.mode == "key":
            return pa.table({"vendor_id": batch.column("vendor_id"), "score": even})
        return pa.table({"score": even})


def load_model(mode: str = "ok", flag: str = "") -> RogueModel:
    return RogueModel(mode, flag)
