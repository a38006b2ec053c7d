"""The pointer to the newest complete output (--latest-pointer), for consumers of per-tick folders: one small JSON
file naming the newest run folder whose run succeeded.

It is written only after that run's _SUCCESS, atomically (storage.write_json: a rename on local disks, one PUT on
object stores), and only forward: a run whose logical time (or, without one, start) is older than the one the
pointer names leaves it as it is, so a retried or backfilled old tick never moves it back. Two runs that finish
together take turns under a lease of the pointer's folder (lease.Lease, as an output's), so neither overwrites a
newer pointer with an older one. Knows nothing of Ray.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from .lease import Lease, LeaseHeld, this_process
from .storage import Location, read_json, write_json

#: How long a run waits for another run's turn at the pointer before it gives up.
WAIT = 120.0


def order(record: dict[str, Any]) -> str:
    """What orders pointers: the logical time, else the run's start, both as ISO 8601 in UTC."""
    started = datetime.fromtimestamp(record["started_at"], timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    return record.get("logical_time") or started


def pointer(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the pointer says of a run: its output, run id, logical time and when it started and finished."""
    return {"output": manifest["output"], "run_id": manifest["run_id"], "logical_time": manifest.get("logical_time"),
            "started_at": manifest["started_at"], "finished_at": manifest["finished_at"]}


def point(folder: Location, name: str, manifest: dict[str, Any], ttl: float,
          clock: Callable[[], float] = time.monotonic) -> str:
    """Point `folder`/`name` at the run of `manifest` unless it names a newer run already; what was done, in words."""
    lease = _take_turn(folder, ttl, clock)
    try:
        path = folder.join(name)
        current, mine = read_json(folder, path), pointer(manifest)
        if current and order(current) > order(mine):
            return (f"{folder.display(path)} kept: it names {current['output']} (logical time "
                    f"{current.get('logical_time') or 'none'}), newer than this run's {order(mine)}")
        lease.check()
        write_json(folder, path, mine, lease.holder.generation)
        return f"{folder.display(path)} now names {mine['output']}"
    finally:
        lease.release()


def _take_turn(folder: Location, ttl: float, clock: Callable[[], float]) -> Lease:
    deadline = clock() + WAIT
    while True:
        try:
            return Lease.acquire(folder, this_process(ttl))
        except LeaseHeld:
            if clock() > deadline:
                raise
            time.sleep(1.0)
