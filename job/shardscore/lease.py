"""One writer per output: a lease with a heartbeat, an expiry and numbered generations. Knows nothing of Ray.

Layout: `<output>/_shardscore/lease/<generation>.json`, generations 1, 2, 3, ...

- A run takes the lease by *creating* the next generation's file with the store's create-if-absent (a hard link
  on local disks, S3's `If-None-Match: *`): of two runs that race for it, exactly one creates it.
- The holder rewrites its own file every `ttl / 4` seconds (the heartbeat) and marks it released when it ends.
  A run that takes the lease over rewrites the former holder's file once, naming itself (`superseded_by`): on S3
  the holder's writes are conditional on its own last one (storage.SharedJson), so after that none lands, also a
  heartbeat that passed its generation check before its process was paused.
- The highest generation is held while its file is not released and its heartbeat is younger than its ttl. On the
  holder's own host a holder whose process is gone has died at once, without waiting for the expiry.
- A run that finds it held is refused, naming the holder. It takes over a dead or expired holder's lease by
  creating the next generation, and says so.
- A holder that finds a higher generation than its own was presumed dead and has lost the lease: it stops, and
  writes nothing more to the output (`Lease.check` where the driver is about to change it, `check_fence` before each
  of a worker's publishes). See `check_fence` for what the fence guarantees and the window it leaves.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Callable

import psutil

from .errors import ShardscoreError
from .storage import Location, SharedJson, create_json, delete, list_files, read_json, write_json

LEASE_DIR = "_shardscore/lease"


class LeaseHeld(ShardscoreError):
    """Another live run writes this output."""


class LeaseLost(ShardscoreError):
    """Another run took this run's lease over (this run was paused or cut off past its ttl): it writes no more."""

    exit_code = 3


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a generation of the lease."""

    generation: int
    run_id: str
    host: str
    pid: int
    pid_started: float  # the process's start time: a reused pid is not the holder
    ray_job: str  # the Ray job submission id (a RayJob's jobId), when the run was submitted as a job
    started_at: float
    heartbeat_at: float
    ttl: float
    released: bool = False
    superseded_by: int = 0  # the generation of the run that took the lease over (written by that run)

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        job = f", Ray job {self.ray_job}" if self.ray_job else ""
        return f"run {self.run_id} on host {self.host}, pid {self.pid}{job}, started {started}"


def this_process(ttl: float, ray_job: str = "") -> Holder:
    """A holder record for the calling process (generation 0 until it acquires one)."""
    now = time.time()
    me = psutil.Process()
    return Holder(0, uuid.uuid4().hex[:12], socket.gethostname(), me.pid, me.create_time(), ray_job, now, now, ttl)


def _process_gone(holder: Holder) -> bool:
    try:
        return abs(psutil.Process(holder.pid).create_time() - holder.pid_started) > 1.0
    except psutil.Error:
        return True


def why_free(holder: Holder, now: float, host: str, process_gone: Callable[[Holder], bool] = _process_gone) -> str:
    """Why the holder no longer holds its generation, or "" while it does."""
    if holder.released:
        return "released"
    if holder.host == host and process_gone(holder):
        return f"its process {holder.pid} on this host is gone"
    silent = now - holder.heartbeat_at
    if silent > holder.ttl:
        return f"no heartbeat for {silent:.0f} s (lease ttl {holder.ttl:.0f} s)"
    return ""


class Lease:
    """The lease this run holds on one output location."""

    def __init__(self, loc: Location, holder: Holder, took_over: str = ""):
        self.loc = loc
        self.holder = holder
        self.took_over = took_over  # a message when the lease was taken from a holder that died
        self._file = SharedJson(loc, self._path(loc, holder.generation), holder.generation)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _path(loc: Location, generation: int) -> str:
        return loc.join(LEASE_DIR, f"{generation:08d}.json")

    @classmethod
    def current(cls, loc: Location) -> Holder | None:
        """The highest generation's holder. A file that cannot be parsed yet is read again (it is being written)."""
        found = generations(loc)
        if not found:
            return None
        path = cls._path(loc, found[-1])
        for attempt in range(5):
            try:
                data = read_json(loc, path)
                if data is not None:
                    return Holder(**data)
            except (ValueError, TypeError):
                pass
            time.sleep(0.2 * (attempt + 1))
        raise LeaseHeld(f"output {loc.uri}: its lease file {loc.display(path)} cannot be read; "
                        "remove it if no run writes this output")

    @classmethod
    def acquire(cls, loc: Location, me: Holder, clock: Callable[[], float] = time.time) -> "Lease":
        """Take the output's lease, or raise LeaseHeld naming the live holder.

        `clock` gives the time of day by which the current holder's heartbeat is judged and this one's stamped (a
        test passes a later one rather than wait for a ttl to pass)."""
        while True:
            current = cls.current(loc)
            took_over = ""
            if current is not None:
                why = why_free(current, clock(), me.host)
                if not why:
                    raise LeaseHeld(
                        f"output {loc.uri} is being written by another run ({current.describe()}, last heartbeat "
                        f"{clock() - current.heartbeat_at:.0f} s ago). Refusing to write it too: wait for that "
                        f"run to end, or choose another --output. A run that died is taken over once its lease "
                        f"expires ({current.ttl:.0f} s without a heartbeat).")
                if not current.released:
                    took_over = f"took over the output's lease from {current.describe()}: {why}"
            mine = replace(me, generation=(current.generation if current else 0) + 1, heartbeat_at=clock())
            if create_json(loc, cls._path(loc, mine.generation), asdict(mine), mine.generation):
                lease = cls(loc, mine, took_over)
                if took_over:  # the former holder's conditional writes fail from now on
                    write_json(loc, cls._path(loc, current.generation),
                               asdict(replace(current, superseded_by=mine.generation)), mine.generation)
                for old in generations(loc):
                    if old < mine.generation - 1:
                        delete(loc, cls._path(loc, old))
                return lease
            # Another run created that generation first: look again (it now holds the lease, or died at once).

    def heartbeat(self, released: bool = False) -> bool:
        """Refresh the heartbeat (and mark the lease released); False, `lost` set and nothing written, once a newer
        generation has taken the lease."""
        mine = replace(self.holder, heartbeat_at=time.time(), released=released)
        try:
            if self._file.write(asdict(mine), check=self._fence):
                self.holder = mine
            else:
                self._fence()  # refused: the run that took over rewrote this file; else the next beat writes again
        except LeaseLost:
            self.lost.set()
            return False
        return True

    def _fence(self) -> None:
        check_fence(self.loc, self.holder.generation, "the lease's heartbeat")

    def check(self) -> None:
        """Raise LeaseLost, naming the run that took over, when a newer generation exists: one listing.

        Called by the driver right before it changes the output: after a pause (SIGSTOP, a frozen node) the heartbeat
        thread may not have run yet, so `lost` alone would let the first write through.
        """
        newest = generations(self.loc)
        if not newest or newest[-1] <= self.holder.generation:
            return
        self.lost.set()
        self._stop.set()
        try:
            data = read_json(self.loc, self._path(self.loc, newest[-1]))
            taker = Holder(**data).describe() if data else "a run whose lease file is gone"
        except (OSError, ValueError, TypeError):
            taker = f"the run of lease file {self.loc.display(self._path(self.loc, newest[-1]))}"
        raise LeaseLost(
            f"another run took over output {self.loc.uri} while this run was paused or cut off past its "
            f"{self.holder.ttl:.0f} s lease: {taker} holds generation {newest[-1]} of the output's lease (this "
            f"run, {self.holder.run_id}, held generation {self.holder.generation}). Nothing more was written by "
            "this run: the output, its manifest and _SUCCESS are that run's. Check that run's result; rerun only "
            "if it failed.")

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.holder.ttl / 4):
                try:
                    if not self.heartbeat():
                        return
                except OSError:
                    pass  # a failed heartbeat is retried; only the expiry makes it matter

        self._thread = threading.Thread(target=beat, name="shardscore-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """End the lease: the next run on this output takes it without waiting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.lost.is_set():
            self.heartbeat(released=True)


def generations(loc: Location) -> list[int]:
    """The output's lease generations, sorted: one listing of the (small) lease folder."""
    lease_dir = Location(loc.fs, loc.join(LEASE_DIR), loc.uri, loc.endpoint)
    found = []
    for rel, _ in list_files(lease_dir, recursive=False):
        stem = rel.removesuffix(".json")
        if stem.isdigit():
            found.append(int(stem))
    return sorted(found)


def check_fence(loc: Location, generation: int, what: str) -> None:
    """Raise LeaseLost when the output's lease has a generation newer than `generation` (the writer's run's).

    A worker calls it right before it moves a shard's file into place and again right before it writes the shard's
    commit record, so a worker of a superseded run neither publishes nor records once the takeover is visible in a
    listing of the lease folder. What it guarantees: no write that starts after the new holder created its lease
    file. The window it leaves is check-then-act: a worker paused between the check and the move (or the record
    write) and resumed after the takeover still lands that one write. What closes it: the new holder's final
    `folder.ParquetFolder.verify` compares every file with its own results' size and mtime before `_SUCCESS`, so
    a late file before it fails the run; a late record (of the old run_id and generation) is never taken as the new holder's
    (`ray_worker.committed_this_run` compares both), and a rerun's `commit.reconcile` finds its size and mtime
    not matching the file there and scores the shard again. A late file after `_SUCCESS` is seen by the next run
    likewise (the record no longer matches it); until then `_SUCCESS` stands over it.
    """
    if not generation:
        return  # no lease (a direct call of the scoring core)
    found = generations(loc)
    if found and found[-1] > generation:
        raise LeaseLost(f"{what}: not written, another run took over output {loc.uri} (lease generation "
                        f"{found[-1]}; this run held {generation}); this run writes nothing more there")


def holder_gone(loc: Location, generation: int, host: str) -> bool:
    """Whether an older generation's holder no longer holds it (its lease file gone, released, expired or dead)."""
    try:
        data = read_json(loc, Lease._path(loc, generation))
        return data is None or bool(why_free(Holder(**data), time.time(), host))
    except (ValueError, TypeError):
        return True


def ray_job_id() -> str:
    """The Ray job submission id of this driver, when it was started by the Jobs API (a RayJob's jobId).

    Ray's JobSupervisor._get_driver_env_vars passes the job's metadata, which holds `job_submission_id`, to the
    entrypoint in RAY_JOB_CONFIG_JSON_ENV_VAR.
    """
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
        return str((config.get("metadata") or {}).get("job_submission_id") or "")
    except ValueError:
        return ""
