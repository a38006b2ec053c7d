"""Logs that outlive the cluster: what the driver printed and each failed shard's whole error, traceback included,
written into the output (`_shardscore/logs/<run_id>/`) before the run's manifest, so that `shardscore status --logs`
finds them after an ephemeral cluster was deleted with its pods' logs. Bounded: a run's logs never outgrow a few
megabytes, however long it ran or however many shards failed.

The driver's log is what went through its Python `sys.stdout` and `sys.stderr` (shardscore's lines, Ray's Python
logging, worker output that Ray forwards to the driver), not what native code wrote straight to the file descriptors.
"""

from __future__ import annotations

import io
import sys
import traceback
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .commit import ShardResult
    from .storage import Location

#: Under the output's folder.META_DIR. This module imports nothing heavy: the CLI tees its output through it
#: before it imports Ray, and pyarrow must not come first.
LOGS_DIR = "_shardscore/logs"
#: The driver's log keeps its first DRIVER_LOG_HEAD characters (what the run set out to do) and its last ones up
#: to DRIVER_LOG_BYTES in all (how it ended): characters, as many bytes where the text is ASCII.
DRIVER_LOG_BYTES, DRIVER_LOG_HEAD = 1 << 20, 64 << 10
#: A failed shard's log keeps the last SHARD_LOG_BYTES characters of its error (the innermost frames, the message).
SHARD_LOG_BYTES = 16 << 10
#: Failed shards that get a log file of their own; the manifest names every failure with its reason regardless.
SHARD_LOGS = 100


class BoundedLog:
    """Text kept within `limit` characters: its head and its tail, with what was left out between them counted."""

    def __init__(self, limit: int = DRIVER_LOG_BYTES, head: int = DRIVER_LOG_HEAD):
        self.limit, self.head_limit = limit, head
        self.head, self.tail, self.tail_size, self.dropped = [], [], 0, 0
        self.head_size = 0

    def write(self, text: str) -> None:
        if self.head_size < self.head_limit:
            part = text[:self.head_limit - self.head_size]
            self.head.append(part)
            self.head_size += len(part)
            text = text[len(part):]
        if text:
            self.tail.append(text)
            self.tail_size += len(text)
            room = self.limit - self.head_limit
            while self.tail_size > room:  # drop whole writes from the front, then cut the one that still overflows
                first = self.tail[0]
                if self.tail_size - len(first) >= room:
                    self.tail.pop(0)
                    self.tail_size -= len(first)
                    self.dropped += len(first)
                else:
                    cut = self.tail_size - room
                    self.tail[0] = first[cut:]
                    self.tail_size -= cut
                    self.dropped += cut

    def text(self) -> str:
        gap = f"\n[... {self.dropped:,} characters left out ...]\n" if self.dropped else ""
        return "".join(self.head) + gap + "".join(self.tail)


class _Tee(io.TextIOBase):
    """A text stream that writes through to `stream` and into `log`; asks of it (isatty, fileno) go to `stream`."""

    def __init__(self, stream: TextIO, log: BoundedLog):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # `buffer`, `errors`, `line_buffering`, ...: the stream's own
        return getattr(self.stream, name)


def capture_driver_output() -> BoundedLog:
    """From now on, keep what this process prints (sys.stdout and sys.stderr) in a BoundedLog as well. Called before
    Ray is imported, whose logging handlers hold the stream they found."""
    log = BoundedLog()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _Tee):  # a second run in this process (`shardscore demo` after a run): its own log
            stream.log = log
        else:
            setattr(sys, name, _Tee(stream, log))
    return log


def error_text(exc: BaseException) -> str:
    """An exception as Python prints it, causes included, bounded to its last SHARD_LOG_BYTES characters."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= SHARD_LOG_BYTES else "[...]\n" + text[-SHARD_LOG_BYTES:]


def write_logs(loc: Location, run_id: str, generation: int, driver_log: BoundedLog | None,
               failures: list[ShardResult]) -> dict[str, str]:
    """The run's logs into the output: `driver.log`, and `failed-<n>.txt` for the first SHARD_LOGS failed shards
    (ShardResults) with a traceback. Returns each such shard's log by shard id, relative to the output."""
    base = f"{LOGS_DIR}/{run_id}"
    written: dict[str, str] = {}
    if driver_log is not None:
        _write_text(loc, f"{base}/driver.log", driver_log.text(), generation)
    with_errors = [r for r in failures if r.traceback][:SHARD_LOGS]
    for n, result in enumerate(with_errors, 1):
        rel = f"{base}/failed-{n:04d}.txt"
        worker = result.worker or {}
        _write_text(loc, rel, f"shard {result.shard_id} ({result.input_path})\nworker: host {worker.get('hostname')}, "
                              f"pid {worker.get('pid')}\nreason: {result.reason}\n\n{result.traceback}", generation)
        written[result.shard_id] = rel
    return written


def _write_text(loc: Location, rel: str, text: str, generation: int) -> None:
    from .storage import write_atomic

    data = text.encode("utf-8", "replace")
    write_atomic(loc, loc.join(rel), lambda f: f.write(data), generation=generation)
