"""The commit protocol's records and rules: a shard's outcome (also its commit record), and what a rerun keeps.

A shard counts as done only when its commit record exists and names the same input fingerprint, model and
output options, and its file is as committed. The data file is published atomically before its record, so a crash
anywhere leaves either no commit (the shard is redone, its deterministic output rewritten in place: no duplicates)
or a complete one (skipped: no gaps). Where records and files live is the output's business (output.py).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.fs as pafs

from .errors import OutputError, StaleOutputError
from .planning import REJECTED_DIR, Shard
from .storage import stamp


class ShardStatus(str, enum.Enum):
    """How a shard ended. A str enum: commit records and manifests hold its value ("committed", "failed")."""

    COMMITTED = "committed"
    FAILED = "failed"


@dataclass
class ShardResult:
    """What happened to one shard. Committed results are also the commit record, stored as JSON."""

    shard_id: str
    status: ShardStatus
    input_path: str = ""
    input_fingerprint: str = ""
    model_identity: str = ""
    output_options: str = ""
    output: str = ""  # relative to the output root
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0
    reason: str = ""
    attempt_started_at: float = 0.0
    worker: dict[str, Any] = field(default_factory=dict)
    # What identifies the written file: a rerun compares a listing's size and mtime with these (no re-read).
    output_size: int = 0
    output_mtime_ns: int = 0
    output_sha256: str = ""  # of the file's bytes, computed while writing it
    prediction_schema: str = ""  # the predictions' columns and types (see schema_rule.schema_text)
    run_id: str = ""
    lease_generation: int = 0  # the writing run's generation of the output's lease (lease.check_fence)
    first_batch_seconds: float = 0.0  # from the shard's start to its first batch scored
    # Project modules the model loaded while scoring, beyond the model identity's sources: name -> source digest
    # (model.loaded_sources); a rerun re-digests them (model.current_sources) and recomputes the shard on a change.
    loaded_sources: dict[str, str] = field(default_factory=dict)
    # The rows the model failed on within --max-bad-rows (rows_in = rows_out + rows_rejected), and their
    # quarantine file (relative to the output root, "" when none), identified as the predictions file is.
    rows_rejected: int = 0
    rejected: str = ""
    rejected_size: int = 0
    rejected_mtime_ns: int = 0
    rejected_sha256: str = ""
    # A failed shard's whole error, traceback included (logs.error_text): the driver writes it to the shard's log
    # file (logs.write_logs); never into a record or the manifest (to_dict leaves it out).
    traceback: str = ""

    def __post_init__(self) -> None:
        self.status = ShardStatus(self.status)

    @property
    def committed(self) -> bool:
        return self.status is ShardStatus.COMMITTED

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "status": self.status.value}
        del data["traceback"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardResult":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def failed(shard_id: str, path: str, reason: str, worker: dict[str, Any] | None = None,
           traceback: str = "") -> ShardResult:
    return ShardResult(shard_id=shard_id, status=ShardStatus.FAILED, input_path=path, reason=reason,
                       worker=worker or {}, traceback=traceback)


def options_identity(key_columns: list[str]) -> str:
    """The output options that change what a shard's file holds."""
    return hashlib.sha256(",".join(key_columns).encode()).hexdigest()[:12]


@dataclass
class Reconciliation:
    todo: list[Shard]
    done: list[ShardResult]
    stale: list[tuple[Shard, ShardResult, str]]  # recomputed (with overwrite) or refused
    orphans: list[ShardResult]  # committed shards whose input is gone
    damaged: list[tuple[Shard, ShardResult, str]] = field(default_factory=list)  # file missing or changed: redone
    # Quarantine files of shards that are scored again or have no record (a crash before it): removed before
    # scoring, so that a shard that now rejects no row leaves none behind.
    leftovers: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """Whether the driver must change the output before scoring (remove stale, orphaned or damaged shards)."""
        return bool(self.stale or self.orphans or self.damaged or self.leftovers)


def reconcile(shards: list[Shard], committed: dict[str, ShardResult], model_identity: str,
              output_options: str, overwrite: bool,
              listing: dict[str, pafs.FileInfo] | None = None,
              sources: dict[str, str | None] | None = None, incremental: bool = False) -> Reconciliation:
    """Decide per shard: skip (committed, current and its file intact), redo (stale or damaged), or do.

    Refuses to mix output of another input or model unless overwriting. `incremental` (one output that follows a
    growing input) takes the input's own changes as they come: a changed file's shards are redone and a deleted
    file's removed, while another model or other options are still refused. `listing` (the output's files) is what
    each commit record's file is checked against; foreign files, which a reader of the output would take for
    predictions, are refused. `sources` are the digests now of the modules the records list as lazily loaded by
    the model (model.current_sources): a changed or vanished one makes a shard stale.
    """
    todo: list[Shard] = []
    done: list[ShardResult] = []
    stale: list[tuple[Shard, ShardResult, str]] = []
    damaged: list[tuple[Shard, ShardResult, str]] = []
    planned = {s.shard_id for s in shards}
    for shard in shards:
        record = committed.get(shard.shard_id)
        if record is None or not record.committed:
            todo.append(shard)
            continue
        why = _staleness(shard, record, model_identity, output_options, sources or {})
        broken = file_problem(record, listing) if listing is not None else None
        if why:
            stale.append((shard, record, why))
        elif broken:
            damaged.append((shard, record, broken))
        else:
            done.append(record)
    orphans = [r for sid, r in sorted(committed.items()) if sid not in planned]
    leftovers: list[str] = []
    if listing is not None:
        _refuse_foreign_files(listing, shards, committed)
        kept = {r.rejected for r in done}
        leftovers = [rel for rel in sorted(listing) if rel.startswith(REJECTED_DIR + "/") and rel not in kept]
    refused: list[tuple[Shard, ShardResult, str]] = []
    for shard, record, why in stale:  # incremental takes a changed input file as it comes, not another model
        otherwise = _scored_otherwise(record, model_identity, output_options, sources or {})
        if not incremental or otherwise:
            refused.append((shard, record, otherwise if incremental else why))
    refused_orphans = [] if incremental else orphans
    if (refused or refused_orphans) and not overwrite:
        by_file: dict[str, list[str]] = {}
        for s in shards:
            by_file.setdefault(s.relpath, []).append(s.shard_id)
        lines = [f"  shard {s.shard_id}: {why}" for s, _, why in refused[:10]]
        lines += [f"  shard {r.shard_id}: {_orphan_reason(r, by_file)}" for r in refused_orphans[:10]]
        more = len(refused) + len(refused_orphans) - len(lines)
        raise StaleOutputError(
            "the output already holds predictions that do not match this run:\n" + "\n".join(lines)
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nRefusing to mix them. Rerun with --overwrite to recompute them, or choose another --output."
        )
    todo.extend(s for s, _, _ in stale)
    todo.extend(s for s, _, _ in damaged)
    return Reconciliation(todo, done, stale, orphans, damaged, leftovers)


def file_problem(record: ShardResult, listing: dict[str, pafs.FileInfo]) -> str | None:
    """What is wrong with a committed shard's files (predictions, and quarantine when it has one) according to a
    listing, or None when they are as committed."""
    if not record.output:
        return None  # a zero-row shard: committed without a file
    return (_stamp_problem("output file", record.output, record.output_size, record.output_mtime_ns, listing)
            or (record.rejected and _stamp_problem("file of rejected rows", record.rejected, record.rejected_size,
                                                   record.rejected_mtime_ns, listing)) or None)


def _stamp_problem(what: str, relpath: str, size: int, mtime_ns: int,
                   listing: dict[str, pafs.FileInfo]) -> str | None:
    info = listing.get(relpath)
    if info is None:
        return f"its {what} {relpath} is missing"
    size_now, mtime_now = stamp(info)
    if mtime_ns and (size_now, mtime_now) != (size, mtime_ns):
        return f"its {what} {relpath} changed since it was committed ({size} bytes -> {size_now} bytes, or rewritten)"
    return None


def _refuse_foreign_files(listing: dict[str, pafs.FileInfo], shards: list[Shard],
                          committed: dict[str, ShardResult]) -> None:
    ours = ({s.output_relpath for s in shards} | {s.rejected_relpath for s in shards}
            | {r.output for r in committed.values() if r.output} | {r.rejected for r in committed.values() if r.rejected})
    foreign = sorted(rel for rel in listing if rel not in ours)
    if foreign:
        raise OutputError(
            f"the output holds {len(foreign)} file(s) that no shard of this input wrote, which every reader of "
            f"the output would take for predictions (or, under {REJECTED_DIR}/, for rows the model failed on): "
            f"{', '.join(foreign[:5])}"
            + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            + ". Move them away, or choose another --output."
        )


def _orphan_reason(record: ShardResult, shards_by_file: dict[str, list[str]]) -> str:
    relpath = record.shard_id.split("#", 1)[0]
    now = shards_by_file.get(relpath)
    if now:
        return (f"the shard layout changed: {relpath} is now planned as {', '.join(now[:4])}"
                + (" ..." if len(now) > 4 else "") + " (was --max-rows-per-shard changed?)")
    return "its input file is gone from the input"


def _staleness(shard: Shard, record: ShardResult, model_identity: str, output_options: str,
               sources: dict[str, str | None]) -> str | None:
    if record.input_fingerprint != shard.fingerprint:
        return (f"input file {shard.relpath} changed since it was scored "
                f"(fingerprint {record.input_fingerprint} -> {shard.fingerprint})")
    return _scored_otherwise(record, model_identity, output_options, sources)


def _scored_otherwise(record: ShardResult, model_identity: str, output_options: str,
                      sources: dict[str, str | None]) -> str | None:
    """Why a record was scored by another model or with other options than this run's, or None."""
    if record.model_identity != model_identity:
        return f"scored by another model (identity {record.model_identity}, now {model_identity})"
    if record.output_options != output_options:
        return "scored with other output options (--key-columns changed)"
    for name, digest in sorted(record.loaded_sources.items()):
        if name in sources and sources[name] != digest:
            return f"model source {name} changed since it was scored" + (
                "" if sources[name] else " (it is no longer found on the driver's Python path)")
    return None


class SourceLedger:
    """The lazily loaded model sources of one run's committed shards: the first shard to report a module fixes its
    digest, and a later shard that reports another one was scored by other code (two nodes with different copies
    of the project), which the run must not pass silently."""

    def __init__(self, done: list[ShardResult]):
        self._first: dict[str, tuple[str, str]] = {}  # module -> (digest, shard id)
        for record in done:
            self.conflict(record)

    def conflict(self, result: ShardResult) -> str | None:
        """Why `result` disagrees with the shards recorded before it, or None (then its modules are recorded)."""
        for name, digest in sorted(result.loaded_sources.items()):
            first, by = self._first.get(name, (digest, result.shard_id))
            if first != digest:
                return (f"the model's source {name} differs from the one shard {by} was scored with (digest {digest}, "
                        f"there {first}): the workers run different code for the model. Give every node the same "
                        "copy of the project and rerun")
        for name, digest in result.loaded_sources.items():
            self._first.setdefault(name, (digest, result.shard_id))
        return None
