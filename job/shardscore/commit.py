"""The commit protocol: how a shard's output becomes durable, and how a rerun knows what is already done.

Layout of an output location:
    <relpath>.parquet              one predictions file per shard (input's relative path, so partitions survive)
    _shardscore/commits/<id>.json  one commit record per shard, written after its data file is in place
    _shardscore/run.json           the run's identity: model, output options, versions
    _manifest.json, _SUCCESS       written last, when every shard is committed or accounted for

A shard counts as done only when its commit record exists and names the same input fingerprint, model and
output options. The data file is written atomically first, so a crash anywhere leaves either no commit (the
shard is redone, its deterministic output rewritten in place: no duplicates) or a complete one (skipped: no gaps).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.fs as pafs

from .errors import OutputError, StaleOutputError
from .planning import Shard
from .storage import Location, delete, list_files, read_json, stamp, write_json

META_DIR = "_shardscore"
COMMITS_DIR = f"{META_DIR}/commits"
RUN_RECORD = f"{META_DIR}/run.json"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


@dataclass
class ShardResult:
    """What happened to one shard. Committed results are also the commit record, stored as JSON."""

    shard_id: str
    status: str  # "committed" | "failed"
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
    prediction_schema: str = ""  # the predictions' columns and types (see scoring.schema_text)
    run_id: str = ""
    lease_generation: int = 0  # the writing run's generation of the output's lease (lease.check_fence)
    first_batch_seconds: float = 0.0  # from the shard's start to its first batch scored
    # Project modules the model loaded while scoring, beyond the model identity's sources: name -> source digest
    # (model.loaded_sources); a rerun re-digests them (model.current_sources) and recomputes the shard on a change.
    loaded_sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardResult":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def options_identity(key_columns: list[str]) -> str:
    """The output options that change what a shard's file holds."""
    return hashlib.sha256(",".join(key_columns).encode()).hexdigest()[:12]


class OutputStore:
    """Reads and writes the commit protocol's files under one output location."""

    def __init__(self, loc: Location, generation: int = 0):
        self.loc = loc
        self.generation = generation  # the writing run's lease generation: tags its temporary files

    def data_path(self, shard: Shard) -> str:
        return self.loc.join(shard.output_relpath)

    def commit_path(self, shard_id: str) -> str:
        return self.loc.join(COMMITS_DIR, hashlib.sha256(shard_id.encode()).hexdigest()[:32] + ".json")

    def commit(self, result: ShardResult) -> None:
        write_json(self.loc, self.commit_path(result.shard_id), result.to_dict(), self.generation)

    def committed(self, threads: int = 16) -> dict[str, ShardResult]:
        """Every commit record under the output, by shard id."""
        commits = Location(self.loc.fs, self.loc.join(COMMITS_DIR), self.loc.uri)
        paths = [i.path for rel, i in list_files(commits, recursive=False) if rel.endswith(".json")]
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
            records = [r for r in pool.map(lambda p: read_json(self.loc, p), paths) if r]
        return {r["shard_id"]: ShardResult.from_dict(r) for r in records}

    def uncommit(self, shard_id: str) -> None:
        """Withdraw a shard's commit record (before recomputing it), so a crash cannot leave a stale one."""
        delete(self.loc, self.commit_path(shard_id))

    def forget(self, result: ShardResult) -> None:
        """Remove a shard's commit record first, then its data: never a data file that looks committed."""
        delete(self.loc, self.commit_path(result.shard_id))
        if result.output:
            delete(self.loc, self.loc.join(result.output))

    def withdraw_success(self) -> None:
        """Remove _SUCCESS just before the output changes, so a reader who waits for it never sees a mix of runs.

        Called by whoever is about to change a file of the output (the driver before it removes a stale shard, a
        worker before it publishes a shard's file): a run that changes nothing leaves a good output as it was.
        """
        delete(self.loc, self.loc.join(SUCCESS))

    def succeeded_before(self) -> bool:
        return self.loc.fs.get_file_info(self.loc.join(SUCCESS)).type == pafs.FileType.File

    def start(self, run_record: dict[str, Any]) -> None:
        write_json(self.loc, self.loc.join(RUN_RECORD), run_record, self.generation)

    def finish(self, manifest: dict[str, Any], success: bool) -> None:
        write_json(self.loc, self.loc.join(MANIFEST), manifest, self.generation)
        if success:
            write_json(self.loc, self.loc.join(SUCCESS), {"shards": manifest["totals"]["shards"]}, self.generation)

    def listing(self) -> dict[str, pafs.FileInfo]:
        """Every visible file of the output by relative path: one listing, no reads."""
        return dict(list_files(self.loc))


@dataclass
class Reconciliation:
    todo: list[Shard]
    done: list[ShardResult]
    stale: list[tuple[Shard, ShardResult, str]]  # recomputed (with overwrite) or refused
    orphans: list[ShardResult]  # committed shards whose input is gone
    damaged: list[tuple[Shard, ShardResult, str]] = field(default_factory=list)  # file missing or changed: redone

    @property
    def changes(self) -> bool:
        """Whether the driver must change the output before scoring (remove stale, orphaned or damaged shards)."""
        return bool(self.stale or self.orphans or self.damaged)


def reconcile(shards: list[Shard], committed: dict[str, ShardResult], model_identity: str,
              output_options: str, overwrite: bool,
              listing: dict[str, pafs.FileInfo] | None = None,
              sources: dict[str, str | None] | None = None) -> Reconciliation:
    """Decide per shard: skip (committed, current and its file intact), redo (stale or damaged), or do.

    Refuses to mix output of another input or model unless overwriting. `listing` (the output's files) is what
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
        if record is None or record.status != "committed":
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
    if listing is not None:
        _refuse_foreign_files(listing, shards, committed)
    if (stale or orphans) and not overwrite:
        by_file: dict[str, list[str]] = {}
        for s in shards:
            by_file.setdefault(s.relpath, []).append(s.shard_id)
        lines = [f"  shard {s.shard_id}: {why}" for s, _, why in stale[:10]]
        lines += [f"  shard {r.shard_id}: {_orphan_reason(r, by_file)}" for r in orphans[:10]]
        more = len(stale) + len(orphans) - len(lines)
        raise StaleOutputError(
            "the output already holds predictions that do not match this run:\n" + "\n".join(lines)
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nRefusing to mix them. Rerun with --overwrite to recompute them, or choose another --output."
        )
    todo.extend(s for s, _, _ in stale)
    todo.extend(s for s, _, _ in damaged)
    return Reconciliation(todo, done, stale, orphans, damaged)


def file_problem(record: ShardResult, listing: dict[str, pafs.FileInfo]) -> str | None:
    """What is wrong with a committed shard's file according to a listing, or None when it is as committed."""
    if not record.output:
        return None  # a zero-row shard: committed without a file
    info = listing.get(record.output)
    if info is None:
        return f"its output file {record.output} is missing"
    size, mtime_ns = stamp(info)
    if record.output_mtime_ns and (size, mtime_ns) != (record.output_size, record.output_mtime_ns):
        return (f"its output file {record.output} changed since it was committed "
                f"({record.output_size} bytes -> {size} bytes, or rewritten)")
    return None


def _refuse_foreign_files(listing: dict[str, pafs.FileInfo], shards: list[Shard],
                          committed: dict[str, ShardResult]) -> None:
    ours = {s.output_relpath for s in shards} | {r.output for r in committed.values() if r.output}
    foreign = sorted(rel for rel in listing if rel not in ours)
    if foreign:
        raise OutputError(
            f"the output holds {len(foreign)} file(s) that no shard of this input wrote, which every reader of "
            f"the output would take for predictions: {', '.join(foreign[:5])}"
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
