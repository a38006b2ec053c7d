"""What each run changed in its output: the run records kept under `_shardscore/runs/` (Output.record_run), and
how `shardscore runs` shows them, so that a consumer of a growing output (--incremental) can read what is new since
the run it last read. Knows nothing of Ray.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # not at run time: `shardscore runs` and --help need no pyarrow
    from .commit import Reconciliation, ShardResult


def run_records(manifest: dict[str, Any], rec: Reconciliation, results: list[ShardResult],
                recorded: set[str]) -> list[dict[str, Any]]:
    """The records this run writes: its own (none when it changed nothing), after one for each earlier run whose
    shards it found committed but which left no record (`recorded`: the ids of the runs that did; a run killed
    before its end leaves none), so that a reader of the records misses no shard."""
    unrecorded: dict[str, list[ShardResult]] = {}
    for r in rec.done:
        if r.run_id and r.run_id not in recorded:
            unrecorded.setdefault(r.run_id, []).append(r)
    ours = run_record(manifest, rec, results)
    return [*(_unrecorded(run_id, shards, manifest) for run_id, shards in unrecorded.items()),
            *([ours] if ours else [])]


def _unrecorded(run_id: str, shards: list[ShardResult], by: dict[str, Any]) -> dict[str, Any]:
    """The record of a run that ended without writing its own: what its commit records tell."""
    return {"run_id": run_id, "status": f"ended without its record (killed?); recorded by run {by['run_id']}",
            "started_at": min((r.attempt_started_at for r in shards if r.attempt_started_at), default=0.0),
            "finished_at": max(r.attempt_started_at + r.seconds for r in shards), "logical_time": None,
            "input": by["input"], "output": by["output"], "model_identity": shards[0].model_identity,
            "added": _shards(shards), "replaced": [], "removed": [], "failed": [],
            "rows_added": sum(r.rows_out for r in shards)}


def _shards(results: list[ShardResult]) -> list[dict[str, Any]]:
    """Shards as a record lists them: in shard order, not in the order they happened to finish."""
    return [{"shard_id": r.shard_id, "output": r.output, "rows": r.rows_out, "rows_rejected": r.rows_rejected,
             "rejected": r.rejected} for r in sorted(results, key=lambda r: r.shard_id)]


def run_record(manifest: dict[str, Any], rec: Reconciliation, results: list[ShardResult]) -> dict[str, Any] | None:
    """The run's record, from its manifest, what the reconciliation redid or removed, and this run's results; None
    when the run changed nothing in the output."""
    redone = {s.shard_id for s, _, _ in [*rec.stale, *rec.damaged]}
    committed = [r for r in results if r.committed]
    if not (committed or rec.orphans or redone):
        return None

    return {
        "run_id": manifest["run_id"], "status": manifest["status"], "started_at": manifest["started_at"],
        "finished_at": manifest["finished_at"], "logical_time": manifest.get("logical_time"),
        "input": manifest["input"], "output": manifest["output"], "model_identity": manifest["model"]["identity"],
        "added": _shards([r for r in committed if r.shard_id not in redone]),
        "replaced": _shards([r for r in committed if r.shard_id in redone]),
        "removed": sorted(r.shard_id for r in rec.orphans),
        "failed": sorted(r.shard_id for r in results if not r.committed),
        "rows_added": sum(r.rows_out for r in committed),
    }


def since(records: list[dict[str, Any]], run_id: str | None) -> list[dict[str, Any]]:
    """The records after the run `run_id` (all without one). An unknown run id is an error naming the known ones."""
    if run_id is None:
        return records
    ids = [r["run_id"] for r in records]
    if run_id not in ids:
        raise ValueError(f"--since {run_id}: no run of that id in this output (its runs: {', '.join(ids) or 'none'})")
    return records[ids.index(run_id) + 1:]


def line(record: dict[str, Any]) -> str:
    """One run, as `shardscore runs` prints it."""
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["finished_at"]))
    logical = f", logical time {record['logical_time']}" if record.get("logical_time") else ""
    parts = [f"{len(record['added'])} shard(s) added", f"{len(record['replaced'])} replaced",
             f"{len(record['removed'])} removed"] + ([f"{len(record['failed'])} failed"] if record["failed"] else [])
    return (f"{finished}  run {record['run_id']}  {record['status']}{logical}: {', '.join(parts)}; "
            f"{record['rows_added']:,} rows written")
