"""Progress for people: periodic lines that read well in `ray job logs` and `kubectl logs`, a bar on a terminal."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Iterable, TextIO

from .commit import ShardResult

#: A shard still unfinished this many seconds after it was handed to a worker is named in the progress line.
SLOW_SHARD_SECONDS = 30.0


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


class Progress:
    """Counts finished shards and rows; prints a line every `interval` seconds (a live bar on a terminal).

    The ETA is honest about work in flight: it never runs below what the shards still running need at the pace of
    those finished so far, and when a shard outlasts that too, it says so instead of showing 0:00:00. The line
    names the oldest unfinished shard once it has been out for `slow_after` seconds, so a stuck one can be found.
    """

    def __init__(self, total_shards: int, total_rows: int, interval: float = 10.0,
                 stream: TextIO | None = None, slow_after: float = SLOW_SHARD_SECONDS,
                 clock=time.monotonic):
        self.total_shards = total_shards
        self.total_rows = total_rows
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.clock = clock
        self.slow_after = slow_after
        self.started = clock()
        self.last_print = self.started
        self.shards_done = self.shards_failed = self.rows = 0
        self.out: dict[str, tuple[float, int]] = {}  # shard id -> (handed out at, rows), until its result comes
        self.seconds_per_row: list[float] = []

    def handed_out(self, shards: Iterable[tuple[str, int]]) -> None:
        """Shards (id, rows) just given to a worker."""
        now = self.clock()
        for shard_id, rows in shards:
            self.out[shard_id] = (now, rows)

    def record(self, result: ShardResult) -> None:
        self.out.pop(result.shard_id, None)
        if result.committed:
            self.shards_done += 1
            self.rows += result.rows_in
            if result.rows_in and result.seconds:
                self.seconds_per_row.append(result.seconds / result.rows_in)
        else:
            self.shards_failed += 1
        self.tick()

    def eta(self) -> str:
        if self.shards_done + self.shards_failed >= self.total_shards:
            return "-"
        now = self.clock()
        elapsed = now - self.started
        if elapsed <= 0 or not self.rows or not self.seconds_per_row:
            return "-"
        remaining = max(0, self.total_rows - self.rows)
        estimate = remaining / (self.rows / elapsed)
        out = list(self.out.values())  # one step: another thread may be reading (snapshot)
        if out:
            # The shards out now run side by side: the slowest of them, at the pace of the shards finished so far.
            pace = statistics.median(list(self.seconds_per_row))
            left = max(rows * pace - (now - since) for since, rows in out)
            if left <= 0 and remaining <= sum(rows for _, rows in out):
                return "unknown (the shards still out are taking longer than the others did)"
            estimate = max(estimate, left)
        return _duration(estimate)

    def line(self) -> str:
        return "shardscore: " + self.snapshot()["text"]

    def snapshot(self) -> dict[str, Any]:
        """The progress as numbers and as the line's text, for what reads it elsewhere (status.ProgressBeacon).
        Safe from another thread: it only reads, and copies the shards out in one step."""
        elapsed = self.clock() - self.started
        finished = self.shards_done + self.shards_failed
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * finished / self.total_shards if self.total_shards else 100.0
        eta = self.eta()
        text = (f"{finished}/{self.total_shards} shards ({pct:.1f}%), {_count(self.rows)} rows, "
                f"{_count(rate)} rows/s, elapsed {_duration(elapsed)}, ETA {eta}, {self.shards_failed} failed")
        out = list(self.out.items())
        if out:
            shard_id, (since, _) = min(out, key=lambda item: item[1][0])
            if self.clock() - since >= self.slow_after:
                text += f"; oldest unfinished: {shard_id}, out for {_duration(self.clock() - since)}"
        return {"shards_finished": finished, "shards_total": self.total_shards, "shards_failed": self.shards_failed,
                "rows": self.rows, "rows_total": self.total_rows, "rows_per_second": round(rate, 1),
                "elapsed_seconds": round(elapsed, 1), "eta": eta, "text": text}

    def _bar(self) -> str:
        finished = self.shards_done + self.shards_failed
        width = 24
        filled = int(width * finished / self.total_shards) if self.total_shards else width
        return "\r[" + "#" * filled + "." * (width - filled) + "] " + self.line()

    def tick(self, force: bool = False) -> None:
        now = self.clock()
        if self.tty:
            self.stream.write(self._bar())
            self.stream.flush()
        elif force or (self.interval > 0 and now - self.last_print >= self.interval):
            print(self.line(), file=self.stream, flush=True)
            self.last_print = now

    def close(self) -> None:
        if self.tty:
            self.stream.write(self._bar() + "\n")
        else:
            print(self.line(), file=self.stream, flush=True)
