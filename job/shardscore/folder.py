"""The first kind of output: a folder of Parquet files, one per shard, published by `_SUCCESS`.

Layout:
    <relpath>.parquet              one predictions file per shard (input's relative path, so partitions survive)
    _rejected/<relpath>.pq         the rows the model failed on within --max-bad-rows, per shard (quarantine.py)
    _shardscore/commits/<id>.json  one commit record per shard, written after its data file is in place
    _shardscore/run.json           the run's identity: model, output options, versions
    _shardscore/runs/<t>-<id>.json what each run that changed the output added, replaced and removed (runlog.py)
    _shardscore/lease/             the output's lease (lease.py)
    _manifest.json, _SUCCESS       written last, when every shard is committed or accounted for
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.fs as pafs

from .commit import Reconciliation, ShardResult, file_problem, reconcile
from .lease import holder_gone
from .planning import REJECTED_DIR, Shard
from .schema_rule import SchemaGate
from .storage import Location, delete, list_files, read_json, temp_generation, write_json

META_DIR = "_shardscore"
COMMITS_DIR = f"{META_DIR}/commits"
RUN_RECORD = f"{META_DIR}/run.json"
RUNS_DIR = f"{META_DIR}/runs"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


class ParquetFolder:
    """The commit protocol's files under one output folder (local or on an object store): output.Output."""

    def __init__(self, loc: Location, generation: int = 0):
        self.loc = loc
        self.generation = generation

    def data_relpath(self, shard: Shard) -> str:
        return shard.output_relpath

    def data_path(self, shard: Shard) -> str:
        return self.loc.join(self.data_relpath(shard))

    def rejected_path(self, shard: Shard) -> str:
        return self.loc.join(shard.rejected_relpath)

    def _record_path(self, shard_id: str) -> str:
        return self.loc.join(COMMITS_DIR, hashlib.sha256(shard_id.encode()).hexdigest()[:32] + ".json")

    def commit(self, result: ShardResult) -> None:
        write_json(self.loc, self._record_path(result.shard_id), result.to_dict(), self.generation)

    def record(self, shard_id: str) -> ShardResult | None:
        data = read_json(self.loc, self._record_path(shard_id))
        return ShardResult.from_dict(data) if data else None

    def committed(self, threads: int = 16) -> dict[str, ShardResult]:
        commits = Location(self.loc.fs, self.loc.join(COMMITS_DIR), self.loc.uri)
        paths = [i.path for rel, i in list_files(commits, recursive=False) if rel.endswith(".json")]
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
            records = [r for r in pool.map(lambda p: read_json(self.loc, p), paths) if r]
        return {r["shard_id"]: ShardResult.from_dict(r) for r in records}

    def reconcile(self, shards: list[Shard], committed: dict[str, ShardResult], model_identity: str,
                  output_options: str, overwrite: bool, sources: dict[str, str | None],
                  incremental: bool = False) -> Reconciliation:
        """commit.reconcile against this folder's records and its listing (foreign files refused, damaged ones
        redone)."""
        return reconcile(shards, committed, model_identity, output_options, overwrite, self.listing(), sources,
                         incremental)

    def forget(self, result: ShardResult) -> None:
        """The record first, then the data: never a data file that looks committed."""
        self.forget_record(result)
        for relpath in (result.output, result.rejected):
            if relpath:
                self.discard(relpath)

    def forget_record(self, result: ShardResult) -> None:
        delete(self.loc, self._record_path(result.shard_id))

    def discard(self, relpath: str) -> None:
        """A file of the output that no record names (a leftover quarantine file)."""
        delete(self.loc, self.loc.join(relpath))

    def published(self) -> bool:
        return self.loc.fs.get_file_info(self.loc.join(SUCCESS)).type == pafs.FileType.File

    def unpublish(self) -> None:
        """Remove _SUCCESS just before the output changes, so a reader who waits for it never sees a mix of runs.

        Called by whoever is about to change a file of the output (the driver before it removes a stale shard, a
        worker before it publishes a shard's file): a run that changes nothing leaves a good output as it was.
        """
        delete(self.loc, self.loc.join(SUCCESS))

    def start(self, run_record: dict[str, Any]) -> None:
        write_json(self.loc, self.loc.join(RUN_RECORD), run_record, self.generation)

    def listing(self) -> dict[str, pafs.FileInfo]:
        """Every visible file of the output, and every quarantine file under REJECTED_DIR (hidden from readers),
        by relative path: two listings, no reads."""
        rejected = Location(self.loc.fs, self.loc.join(REJECTED_DIR), self.loc.uri)
        return {**dict(list_files(self.loc)), **{f"{REJECTED_DIR}/{rel}": info for rel, info in list_files(rejected)}}

    def verify(self, committed: list[ShardResult]) -> list[str]:
        """What makes the folder's files differ from the committed shards: one listing, no reads."""
        listing = self.listing()
        problems = [f"shard {r.shard_id}: {why}" for r in committed if (why := file_problem(r, listing))]
        expected = {r.output for r in committed if r.output} | {r.rejected for r in committed if r.rejected}
        problems += [f"file {rel} is in the output but in no shard of the manifest" for rel in sorted(listing)
                     if rel not in expected]
        return problems + SchemaGate.problems(committed)

    def same_as_published(self, manifest: dict[str, Any]) -> bool:
        previous = read_json(self.loc, self.loc.join(MANIFEST)) or {}
        return ({s["shard_id"]: s.get("output_mtime_ns") for s in previous.get("shards", [])}
                == {s["shard_id"]: s.get("output_mtime_ns") for s in manifest["shards"]})

    def publish(self, manifest: dict[str, Any], success: bool) -> None:
        write_json(self.loc, self.loc.join(MANIFEST), manifest, self.generation)
        if success:
            write_json(self.loc, self.loc.join(SUCCESS), {"shards": manifest["totals"]["shards"]}, self.generation)

    def record_run(self, record: dict[str, Any]) -> None:
        """`_shardscore/runs/<started, UTC>-<run id>.json`: named so that the listing's order is the runs' order."""
        started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(record["started_at"]))
        write_json(self.loc, self.loc.join(f"{RUNS_DIR}/{started}-{record['run_id']}.json"), record, self.generation)

    def runs(self) -> list[dict[str, Any]]:
        return [record for _, path in self._run_files() if (record := read_json(self.loc, path))]

    def recorded_runs(self) -> set[str]:
        """From the names alone: one listing, no reads."""
        return {rel.removesuffix(".json").rsplit("-", 1)[-1] for rel, _ in self._run_files()}

    def _run_files(self) -> list[tuple[str, str]]:
        runs = Location(self.loc.fs, self.loc.join(RUNS_DIR), self.loc.uri)
        return sorted((rel, i.path) for rel, i in list_files(runs, recursive=False) if rel.endswith(".json"))

    def remove_temporaries(self, host: str) -> None:
        """Temporary files of writers killed mid-write (hidden names; readers never saw them): this run's own (its
        `generation`), untagged ones, and those of older lease generations whose holder is gone (`lease.holder_gone`,
        asked from `host`). A newer generation's are another run's files in flight: never touched, also when this
        run's check passed just before that run took over."""
        generation, gone = self.generation, {}  # gone: an older generation -> its holder is gone
        selector = pafs.FileSelector(self.loc.path, recursive=True, allow_not_found=True)
        for entry in self.loc.fs.get_file_info(selector):
            found = temp_generation(entry.base_name)
            if found is None or found > generation:
                continue
            if 0 < found < generation and found not in gone:
                gone[found] = holder_gone(self.loc, found, host)
            if found in (0, generation) or gone[found]:
                delete(self.loc, entry.path)  # quietly: on an output that stopped taking writes the next run does
