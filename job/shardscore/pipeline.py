"""Overlap a shard's reading, scoring and writing, so that a device does not wait on Parquet. Knows nothing of Ray.

`prefetch` reads and decodes the next batches in a thread while the model scores the current one; a
`BackgroundWriter` encodes and writes the predictions in another. pyarrow releases the GIL while it decodes and
encodes, so on a GPU worker the three steps run at once. Queues are bounded (`depth` batches each way), so memory
stays flat however long the shard; an error in either thread is raised in the scoring thread, as if the step had
run there, so it fails the shard the same way.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The items of `source`, produced ahead by a background thread: at most `depth` wait to be taken."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            items.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="shardscore-read", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()  # the consumer stopped early (the model failed): let the reader end
        thread.join(timeout=10)


class BackgroundWriter:
    """Runs `write(item)` for each submitted item in a background thread, in order, `depth` items at most queued.

    A failure of `write` is raised by the next `submit` or by `close`, in the caller's thread.
    """

    def __init__(self, write: Callable[[Any], None], depth: int = 2):
        self._write = write
        self._items: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shardscore-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._items.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: Any) -> None:
        self._raise()
        self._items.put(item)

    def close(self) -> None:
        """Wait for every submitted item to be written; raise the first failure."""
        self.stop()
        self._raise()

    def stop(self) -> None:
        """Wait for the thread to end (also after a failure elsewhere), without raising. Idempotent."""
        if self._thread.is_alive():
            self._items.put(_DONE)
            self._thread.join()
