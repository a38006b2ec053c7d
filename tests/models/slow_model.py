"""The dummy model, slowed down per batch: gives tests time to kill a driver or a worker mid-run."""

import time

from shardscore.models.dummy import load_model as dummy


def load_model(delay: float = 0.3, payload_mb: float = 1):
    inner = dummy(payload_mb=payload_mb)

    class Slow:
        columns = inner.columns
        batch_format = inner.batch_format

        def __call__(self, batch):
            time.sleep(delay)
            return inner(batch)

    return Slow()
