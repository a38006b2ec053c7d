"""The bound on one model call (--batch-timeout): a call that outlasts it ends the worker process.

A model hung in C code cannot be interrupted from Python, so the process ends (os._exit) and its work is retried on
a fresh one, which is what Ray does for a task or actor whose process died. Before it ends, the watchdog hands the
call that overran (`Overrun`) to the shard's `record`, so that the retry knows: a batch that overran once is tried
once more, on the fresh worker; one that overran OVERRUNS times is not called again (`BatchTimeout`: its rows are
rejected within --max-bad-rows, or the shard fails).

Two watchers bound a call. A Python thread at the timeout: it records the overrun, prints the model's stack, and
ends the process. And, 5 s later, faulthandler's native thread (faulthandler.dump_traceback_later,
Modules/faulthandler.c faulthandler_thread: a C thread that needs no GIL, dumps every thread's stack and calls
_exit(1)), for a call that holds the GIL so that no Python thread runs; such an overrun is not recorded, and its
shard is retried as for any worker that died. Knows nothing of Ray.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager, Iterator

from .quarantine import WholeBatch

#: A batch that overran this many times (each on a fresh worker process) is not called again.
OVERRUNS = 2

#: The exit status of a worker process the watchdog ends.
EXIT_CODE = 75


@dataclass(frozen=True)
class Overrun:
    """A model call that outlasted --batch-timeout: its rows (positions in the input file), and how many times
    this batch has overrun so far."""

    first_row: int
    rows: int
    times: int = 1

    @property
    def span(self) -> str:
        return f"{self.first_row}..{self.first_row + self.rows - 1}"

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Overrun":
        return cls(int(data["first_row"]), int(data["rows"]), int(data["times"]))


class BatchTimeout(WholeBatch):
    """A batch that overran --batch-timeout on OVERRUNS workers: its rows are rejected together, never split (each
    half would be another call that may hang)."""


def timed_out(overrun: Overrun, timeout: float) -> str:
    return (f"the model's call on input rows {overrun.span} took longer than --batch-timeout {timeout:g} s "
            f"{overrun.times} time(s), each on a fresh worker process (a hung call cannot be interrupted, so the "
            "process was ended)")


@dataclass
class Watch:
    """What one shard's writer needs for --batch-timeout: the process's watchdog, the timeout, the overruns of
    this shard's batches in earlier attempts, and where a new overrun is recorded for the next."""

    watchdog: "Watchdog"
    timeout: float
    earlier: dict[tuple[int, int], Overrun]  # by (first_row, rows)
    record: Callable[[Overrun], None]

    def call(self, first_row: int, rows: int, what: str) -> ContextManager[None]:
        """Watch the model's call on these rows; raises BatchTimeout instead when they overran OVERRUNS times."""
        before = self.earlier.get((first_row, rows))
        if before is not None and before.times >= OVERRUNS:
            raise BatchTimeout(timed_out(before, self.timeout))
        this = Overrun(first_row, rows, before.times + 1 if before else 1)
        return self.watchdog.watch(self.timeout, this, f"{what}: the model's call on input rows {this.span}",
                                   self.record)


class Watchdog:
    """One per worker process: ends it when the call being watched outlasts its timeout."""

    def __init__(self, end: Callable[[int], Any] = os._exit, backstop: Callable[[float], float] = lambda t: t + 5):
        self._end, self._backstop = end, backstop  # backstop: when faulthandler's thread ends the process
        self._cond = threading.Condition()
        self._call: tuple[float, float, Overrun, str, Callable[[Overrun], None]] | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, timeout: float, overrun: Overrun, what: str, record: Callable[[Overrun], None]) -> Iterator[None]:
        with self._cond:
            self._call = (time.monotonic() + timeout, timeout, overrun, what, record)
            self._cond.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="shardscore-batch-timeout", daemon=True)
            self._thread.start()
        faulthandler.dump_traceback_later(self._backstop(timeout), exit=True)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            with self._cond:
                self._call = None

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._call is None or self._call[0] > time.monotonic():
                    self._cond.wait(None if self._call is None else self._call[0] - time.monotonic())
                _, timeout, overrun, what, record = self._call
                self._call = None
            self._overran(timeout, overrun, what, record)

    def _overran(self, timeout: float, overrun: Overrun, what: str, record: Callable[[Overrun], None]) -> None:
        print(f"shardscore: {what} has taken longer than --batch-timeout {timeout:g} s (time {overrun.times}): "
              "this worker process ends, since a hung call cannot be interrupted; the model's stack:",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        try:
            record(overrun)
        except Exception as exc:  # noqa: BLE001 - the process must end whatever the record does
            print(f"shardscore: the overrun could not be recorded ({type(exc).__name__}: {exc}): the retry scores "
                  "this batch as if it had not overrun", file=sys.stderr, flush=True)
        sys.stderr.flush()
        self._end(EXIT_CODE)
