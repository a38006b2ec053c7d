"""The second kind of output: a table (Iceberg or Delta), published by one table commit per run (output.Output).

Workers write exactly as into a folder (a Parquet file per shard, atomically and fenced by the lease, then its commit
record), with the files under the table's location:
    data/shardscore-<generation>/<relpath>.parquet   the shard's predictions: a file per run that wrote it, never
                                                     rewritten once written, since a snapshot may name it
    _rejected/, _shardscore/, _manifest.json, _SUCCESS   as in a folder (folder.py): no snapshot names them
`publish` makes the table's shardscore files exactly the committed shards' (tables.TableHandle.commit) before it
writes `_SUCCESS`: readers of the table see the previous snapshot until then, and this run's rows all at once after.
A file that no record names any more (a shard redone) is left in place: an older snapshot may still read it, and
the table's own maintenance (expire snapshots, remove orphan files) removes it.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.fs as pafs

from .commit import Reconciliation, ShardResult, file_problem, reconcile
from .folder import ParquetFolder
from .planning import REJECTED_DIR, Shard
from .schema_rule import SchemaGate
from .storage import Location, list_files
from .tables import OWN_DATA, TableHandle


class TableOutput(ParquetFolder):
    """A table's files, records and lease under its location. `table` is the table's handle, which only the driver
    has (workers write files and records, never a table commit)."""

    def __init__(self, loc: Location, generation: int = 0, table: TableHandle | None = None):
        super().__init__(loc, generation)
        self.table = table

    def data_relpath(self, shard: Shard) -> str:
        return f"{OWN_DATA}{self.generation}/{shard.output_relpath}"

    def forget(self, result: ShardResult) -> None:
        """The record, and the quarantine file; the predictions file stays for the snapshots that name it."""
        self.forget_record(result)
        if result.rejected:
            self.discard(result.rejected)

    def listing(self) -> dict[str, pafs.FileInfo]:
        """The quarantine files, and shardscore's data files: other files under the table's location are the
        table's (its metadata, other writers' data), never a foreign file in shardscore's way, and not listed."""
        found: dict[str, pafs.FileInfo] = {}
        top = pafs.FileSelector(self.loc.join("data"), recursive=False, allow_not_found=True)
        for entry in self.loc.fs.get_file_info(top):  # one level, then only shardscore's folders: not every file
            folder = f"data/{entry.base_name}"
            if entry.type == pafs.FileType.Directory and folder.startswith(OWN_DATA):
                own = Location(self.loc.fs, self.loc.join(folder), self.loc.uri)
                found.update({f"{folder}/{rel}": info for rel, info in list_files(own)})
        rejected = Location(self.loc.fs, self.loc.join(REJECTED_DIR), self.loc.uri)
        return {**found, **{f"{REJECTED_DIR}/{rel}": info for rel, info in list_files(rejected)}}

    def reconcile(self, shards: list[Shard], committed: dict[str, ShardResult], model_identity: str,
                  output_options: str, overwrite: bool, sources: dict[str, str | None],
                  incremental: bool = False) -> Reconciliation:
        """commit.reconcile against the records and the files they name: older runs' data files, which snapshots
        may still read, are not foreign."""
        named = {r.output for r in committed.values() if r.output}
        listing = {rel: info for rel, info in self.listing().items()
                   if rel in named or rel.startswith(REJECTED_DIR + "/")}
        return reconcile(shards, committed, model_identity, output_options, overwrite, listing, sources, incremental)

    def verify(self, committed: list[ShardResult]) -> list[str]:
        """Each committed shard's files as committed (one listing, no reads), one prediction schema."""
        listing = self.listing()
        problems = [f"shard {r.shard_id}: {why}" for r in committed if (why := file_problem(r, listing))]
        return problems + SchemaGate.problems(committed)

    def publish(self, manifest: dict[str, Any], success: bool) -> None:
        """The table's commit of exactly the committed shards' files, then the manifest and `_SUCCESS` as a
        folder's; a run that did not succeed commits nothing to the table."""
        if success:
            assert self.table is not None, "only the driver publishes"
            files = [s["output"] for s in manifest["shards"] if s["status"] == "committed" and s.get("output")]
            started = time.monotonic()
            version = self.table.commit(files, {"shardscore.run-id": manifest["run_id"],
                                                "shardscore.model-identity": manifest["model"]["identity"],
                                                "shardscore.shards": str(len(files))}, self.generation)
            manifest["table"] = {**self.table.manifest_entry(), "committed_now": version is not None,
                                 "commit_seconds": round(time.monotonic() - started, 3)}
        super().publish(manifest, success)
