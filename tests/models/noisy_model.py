"""A model that prints or ends its process the ways real models do, on the rows of datasets.mark's vendor.

mode:
- print: prints a line per batch on stdout, and from its first batch on a thread keeps printing every 10 ms
  (a model's background logger), so the worker's lines also reach the driver after the summary;
- sys_exit: `sys.exit(code)` on a batch holding the marker (a script's argument check left in the model);
- os_exit: `os._exit(code)` on a batch holding the marker (the worker process ends at once);
- segfault: reads address 0 on a batch holding the marker (a native library crashing).
"""

import ctypes
import os
import sys
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc

MARKER = "MARKED"


def _keep_printing() -> None:
    while True:
        print("noisy model: still here", flush=True)
        time.sleep(0.01)


class NoisyModel:
    batch_format = "pyarrow"
    columns = ["passenger_count", "vendor_id"]

    def __init__(self, mode: str, code: int):
        self.mode, self.code = mode, code
        self.printer: threading.Thread | None = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.mode == "print":
            print(f"noisy model scored {batch.num_rows} rows", flush=True)
            if self.printer is None:
                self.printer = threading.Thread(target=_keep_printing, daemon=True)
                self.printer.start()
        if pc.any(pc.equal(batch.column("vendor_id"), MARKER)).as_py():
            if self.mode == "sys_exit":
                sys.exit(self.code)
            if self.mode == "os_exit":
                os._exit(self.code)
            if self.mode == "segfault":
                ctypes.string_at(0)
        return pa.table({"score": pc.equal(pc.bit_wise_and(batch.column("passenger_count"), 1), 0)})

    def __getstate__(self) -> dict:
        return {"mode": self.mode, "code": self.code, "printer": None}


def load_model(mode: str = "print", code: int = 3) -> NoisyModel:
    return NoisyModel(mode, code)
