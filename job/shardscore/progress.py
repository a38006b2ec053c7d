"""Progress for people: periodic lines that read well in `ray job logs` and `kubectl logs`, a bar on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .commit import ShardResult


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


class Progress:
    """Counts finished shards and rows; prints a line every `interval` seconds (a live bar on a terminal)."""

    def __init__(self, total_shards: int, total_rows: int, interval: float = 10.0,
                 stream: TextIO | None = None):
        self.total_shards = total_shards
        self.total_rows = total_rows
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_print = self.started
        self.shards_done = self.shards_failed = self.rows = 0

    def record(self, result: ShardResult) -> None:
        if result.status == "committed":
            self.shards_done += 1
            self.rows += result.rows_in
        else:
            self.shards_failed += 1
        self.tick()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        finished = self.shards_done + self.shards_failed
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        remaining_rows = max(0, self.total_rows - self.rows)
        eta = _duration(remaining_rows / rate) if rate > 0 and finished < self.total_shards else "-"
        pct = 100.0 * finished / self.total_shards if self.total_shards else 100.0
        return (f"shardscore: {finished}/{self.total_shards} shards ({pct:.1f}%), {_count(self.rows)} rows, "
                f"{_count(rate)} rows/s, elapsed {_duration(elapsed)}, ETA {eta}, {self.shards_failed} failed")

    def _bar(self) -> str:
        finished = self.shards_done + self.shards_failed
        width = 24
        filled = int(width * finished / self.total_shards) if self.total_shards else width
        return "\r[" + "#" * filled + "." * (width - filled) + "] " + self.line()

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
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
