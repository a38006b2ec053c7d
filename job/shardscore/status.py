"""`shardscore status`: what became of the runs on an output, read from the output alone, and what the driver writes
there while it scores so that it can be read. Knows nothing of Ray: it reads any location shardscore reads, so a
laptop can ask about a run on S3 after its cluster is gone.

What it reads (folder.py has the layout):
- the lease (lease.py): the latest run, and whether its driver still beats (a heartbeat every ttl/4 seconds);
- `_shardscore/progress.json`, which the driver rewrites every PROGRESS_EVERY seconds while it scores
  (ProgressBeacon): how far the run has come;
- `_manifest.json`: how the last run that wrote one ended, and which shards failed and why.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

import pyarrow.fs as pafs

from .errors import ConfigError, InputError
from .folder import MANIFEST, META_DIR, RUN_RECORD
from .lease import Holder, Lease, LeaseLost, check_fence, why_free
from .storage import Location, SharedJson, list_files, read_json

PROGRESS_FILE = f"{META_DIR}/progress.json"
#: Seconds between two writes of the progress file: often enough to follow a run, few enough requests for S3.
PROGRESS_EVERY = 5.0

#: `shardscore status`'s exit code per state: 0 where nothing is wrong (yet), as `shardscore run` exits otherwise.
EXIT_CODES = {"succeeded": 0, "running": 0, "failed": 1, "stalled": 1, "unfinished": 1, "aborted": 3,
              "never_ran": 2}
#: Failed shards named in the text (the JSON lists every one).
SHOWN_FAILURES = 20


class ProgressBeacon:
    """The driver's side: writes the progress file when the run starts scoring, then every `every` seconds, in a
    thread. A write that fails is tried again at the next beat: progress must never fail a run. Fenced like every
    other write of a run (lease.check_fence), and on S3 conditional too (storage.SharedJson): the first write of the
    run that takes an output over makes every later write of the run it superseded fail, also one that had passed
    its fence check before that run's driver was frozen."""

    def __init__(self, loc: Location, run_id: str, generation: int, snapshot: Callable[[], dict[str, Any]],
                 every: float = PROGRESS_EVERY, clock: Callable[[], float] = time.time):
        self.loc, self.run_id, self.generation, self.snapshot = loc, run_id, generation, snapshot
        self.every, self.clock = every, clock
        self._file = SharedJson(loc, loc.join(PROGRESS_FILE), generation)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="shardscore-progress", daemon=True)

    def start(self) -> None:
        if self._write_quietly():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def write(self) -> None:
        """One write; LeaseLost once another run holds the output (a refused conditional write is checked again)."""
        body = {"run_id": self.run_id, "at": self.clock(), **self.snapshot()}
        if not self._file.write(body, check=self._fence):
            self._fence()  # another writer wrote it: a run that took over (LeaseLost), else the next beat writes again

    def _fence(self) -> None:
        check_fence(self.loc, self.generation, "the progress file")

    def _write_quietly(self) -> bool:
        """Whether the beacon goes on: False once the lease is lost."""
        try:
            self.write()
        except LeaseLost:
            return False
        except OSError:
            pass
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.every) and self._write_quietly():
            pass


@dataclass
class RunStatus:
    """What `shardscore status` tells: the state, the latest run, its progress or its manifest's totals and
    failures, and what to do next."""

    output: str
    state: str  # one of EXIT_CODES
    run: dict[str, Any] = field(default_factory=dict)  # the latest run's lease record (lease.Holder)
    progress: dict[str, Any] | None = None  # the running run's last progress (ProgressBeacon)
    totals: dict[str, Any] | None = None  # the manifest's
    failures: list[dict[str, Any]] = field(default_factory=list)  # the manifest's: shard_id, path, reason
    note: str = ""
    next: str = ""
    logs: str = ""  # the run's logs folder, relative to the output (logs.py), when it wrote one

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, now: float) -> str:
        if self.state == "never_ran":
            return f"shardscore: {self.output}: no run has written it ({self.note})"
        lines = [f"shardscore: {self.output}: {self.state.replace('_', ' ')}" + (
            f" (run {self.run['run_id']}, {_about(self.run, now)})" if self.run else "")]
        if self.note:
            lines.append(f"shardscore: {self.note}")
        if self.progress:
            lines.append(f"shardscore: {self.progress['text']} (as of {now - self.progress['at']:.0f} s ago)")
        if self.totals:
            t = self.totals
            done = (f"{t['committed']} shards committed and {t['failed']} failed before it stopped"
                    if self.state == "aborted" else f"{t['committed']}/{t['shards']} shards committed, {t['failed']} "
                                                     "failed")
            lines.append(f"shardscore: {done}; {t['rows_in']:,} rows in, {t['rows_out']:,} predictions out")
        lines += [failure_line(f) for f in self.failures[:SHOWN_FAILURES]]
        if len(self.failures) > SHOWN_FAILURES:
            lines.append(f"shardscore: ... and {len(self.failures) - SHOWN_FAILURES} more failed shards "
                         "(--json lists them all)")
        if self.logs:
            lines.append(f"shardscore: logs: {self.output.rstrip('/')}/{self.logs} (--logs prints them)")
        if self.next:
            lines.append(f"shardscore: next: {self.next}")
        return "\n".join(lines)


def failure_line(failure: dict[str, Any]) -> str:
    """A failure of the manifest as a person reads it, here and in `shardscore run`'s summary."""
    if failure["shard_id"]:
        return f"shardscore: FAILED shard {failure['shard_id']} ({failure['path']}): {failure['reason']}"
    return f"shardscore: FAILED: {failure['reason']}"


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _about(run: dict[str, Any], now: float) -> str:
    parts = [f"started {_utc(run['started_at'])}" + (f" on host {run['host']}, pid {run['pid']}"
                                                    if run.get("host") else "")]
    if run.get("ray_job"):
        parts.append(f"Ray job {run['ray_job']}")
    if run.get("finished_at"):
        parts.append(f"finished {_utc(run['finished_at'])}")
    elif "heartbeat_at" in run:
        parts.append(f"last heartbeat {now - run['heartbeat_at']:.0f} s ago")
    return ", ".join(parts)


def read_status(loc: Location, now: float | None = None, host: str | None = None) -> RunStatus:
    """The output's status as its files tell it. Raises ConfigError for a location that holds something other than
    a shardscore output, and OSError where it cannot be read."""
    now, host = time.time() if now is None else now, host or socket.gethostname()
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        return RunStatus(loc.uri, "never_ran", note="nothing is there")
    if info.type != pafs.FileType.Directory:
        raise InputError(f"{loc.uri} is a file, not an output: give the folder (or prefix) a run wrote")
    holder = Lease.current(loc)
    manifest = read_json(loc, loc.join(MANIFEST))
    if holder is None and manifest is None and read_json(loc, loc.join(RUN_RECORD)) is None:
        if next(iter(list_files(loc, recursive=False)), None) is None:
            return RunStatus(loc.uri, "never_ran", note="the folder is empty")
        raise ConfigError(f"{loc.uri} is not a shardscore output: it has neither {MANIFEST} nor {META_DIR}/ "
                          "(another tool's files?)")
    if holder is not None and not holder.released and (manifest or {}).get("run_id") != holder.run_id:
        return _unfinished_run(loc, holder, now, host)
    if manifest is None:
        return RunStatus(loc.uri, "unfinished", asdict(holder) if holder else {},
                         note="the latest run ended without writing a manifest: it stopped before scoring",
                         next="its log says why; rerun the same command")
    return _ended(loc.uri, manifest, holder)


def _unfinished_run(loc: Location, holder: Holder, now: float, host: str) -> RunStatus:
    """The latest run has not released the lease: it is running, or its driver is gone (stalled)."""
    progress = read_json(loc, loc.join(PROGRESS_FILE))
    progress = progress if progress and progress.get("run_id") == holder.run_id else None
    why = why_free(holder, now, host)
    if not why:
        return RunStatus(loc.uri, "running", asdict(holder), progress,
                         note="" if progress else "no progress written yet (the driver writes it every "
                                                  f"{PROGRESS_EVERY:g} s while it scores)",
                         next=f"follow it with `shardscore status --watch {loc.uri}`")
    when = "now" if "process" in why else f"after {_utc(holder.heartbeat_at + holder.ttl)}, when its lease expires"
    return RunStatus(loc.uri, "stalled", asdict(holder), progress,
                     note=f"the driver seems gone since {_utc(holder.heartbeat_at)}: {why}",
                     next=f"if it is, rerun the same command: it takes the output over {when} and resumes; the "
                          "committed shards are kept")


def _ended(output: str, manifest: dict[str, Any], holder: Holder | None) -> RunStatus:
    """How the last run that wrote a manifest ended."""
    state, totals, failures = manifest["status"], manifest["totals"], manifest["failures"]
    run = {**(asdict(holder) if holder and holder.run_id == manifest["run_id"] else {}),
           "run_id": manifest["run_id"], "started_at": manifest["started_at"], "finished_at": manifest["finished_at"]}
    note = "" if not holder or holder.run_id == manifest["run_id"] else (
        f"the latest run, {holder.run_id} ({_utc(holder.started_at)}), wrote no manifest: it found nothing to do or "
        f"stopped before scoring; this is the manifest of run {manifest['run_id']}")
    if state == "succeeded":
        step = (f"none: {len(failures)} shards failed within --max-failed-shards; rerun the same command to score "
                "them" if failures else "none: _SUCCESS is there, readers can use the output")
    elif state == "aborted":
        step = f"rerun the same command to resume: the {totals['committed']} committed shards are kept"
    else:
        step = (f"fix what the failures name, then rerun the same command: the {totals['committed']} committed "
                "shards are kept and only the others are scored")
    return RunStatus(output, state, run, None, totals, failures, note, step, manifest.get("logs", ""))


def logs_text(loc: Location, status: RunStatus) -> str:
    """The run's driver log, then each failed shard's error, as the run wrote them into the output."""
    if not status.logs:
        return "shardscore: this run wrote no logs into the output"
    paths = [f"{status.logs}driver.log", *(f["log"] for f in status.failures if f.get("log"))]
    parts = []
    for rel in paths:
        try:
            with loc.fs.open_input_stream(loc.join(rel)) as f:
                parts.append(f"===== {rel}\n{f.read().decode('utf-8', 'replace')}")
        except FileNotFoundError:
            parts.append(f"===== {rel}: missing")
    return "\n".join(parts)


def watch(read: Callable[[], RunStatus], stream: TextIO, every: float = PROGRESS_EVERY,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> RunStatus:
    """Follow a run: a line each time its progress changes, then the whole status once it is no longer running."""
    last = None
    while True:
        status = read()
        if status.state != "running":
            print(status.text(clock()), file=stream, flush=True)
            return status
        line = status.progress["text"] if status.progress else status.note
        if line != last:
            print(f"shardscore: running: {line}", file=stream, flush=True)
            last = line
        sleep(every)


def print_status(status: RunStatus, as_json: bool, stream: TextIO, logs: str = "") -> None:
    print(json.dumps(status.to_json(), indent=2) if as_json else status.text(time.time()), file=stream, flush=True)
    if logs:
        print(logs, file=stream, flush=True)
