"""The dummy model, held at its first batch until the test opens a gate: lets a test change the input while a
shard has its file open and has read part of it."""

import os
import time

from shardscore.models.dummy import load_model as dummy


def load_model(gate: str):
    """gate: a folder; the first batch writes `waiting` there and waits until `open` appears."""
    inner = dummy(payload_mb=0)

    class Gated:
        columns = inner.columns
        batch_format = inner.batch_format

        def __call__(self, batch):
            deadline = time.monotonic() + 120
            if not os.path.exists(os.path.join(gate, "waiting")):
                open(os.path.join(gate, "waiting"), "w").close()
            while not os.path.exists(os.path.join(gate, "open")) and time.monotonic() < deadline:
                time.sleep(0.05)
            return inner(batch)

    return Gated()
