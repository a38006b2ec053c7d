"""The dummy model, slowed down per batch: gives tests time to kill a driver or a worker mid-run. With `fail_from`,
a batch holding a passenger_count of at least that raises, naming it: one shard fails, with a traceback."""

import time

import pyarrow.compute as pc

from shardscore.models.dummy import load_model as dummy


def load_model(delay: float = 0.3, payload_mb: float = 1, fail_from: int | None = None):
    inner = dummy(payload_mb=payload_mb)

    class Slow:
        columns = inner.columns
        batch_format = inner.batch_format

        def __call__(self, batch):
            time.sleep(delay)
            if fail_from is not None:
                top = pc.max(batch.column("passenger_count")).as_py()
                if top is not None and top >= fail_from:
                    raise ValueError(f"passenger_count {top} is past what this model was trained on")
            return inner(batch)

    return Slow()
