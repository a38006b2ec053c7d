"""Where a run's predictions go: the interface every kind of output implements, and the choice among them.

A run asks four things of its output, in this order (docs/design.md has the protocol):
- where a shard's file goes (`data_path`; workers write it atomically, fenced by the lease), and its rows the
  model failed on (`rejected_path`, the same way);
- how a shard commits (`commit` its record once the file is in place; `record` reads one back);
- how a rerun reconciles (`committed` records, `reconcile` them with the plan, `forget` what is redone, `discard`
  a quarantine file no record names);
- how a run is published (`unpublish` before the first change, `start`, `verify`, then `publish` once).
A folder of Parquet files with `_SUCCESS` (folder.py) is the first implementation. An Iceberg table
(table_output.py), Iceberg or Delta, is the second: its shards' files go under the table's data location, `commit` keeps the same
records, and `publish` makes one table commit of exactly the committed files, tagged with the run id, before
`_SUCCESS`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .commit import Reconciliation, ShardResult
from .folder import ParquetFolder
from .planning import Shard
from .storage import Location
from .table_output import TableOutput
from .tables import TableHandle

FOLDER, TABLE = "folder", "table"


class Output(Protocol):
    loc: Location  # the output's root: its lease lives there, and workers fence their writes against it
    generation: int  # the writing run's lease generation: tags its temporary files

    def data_relpath(self, shard: Shard) -> str:
        """Where the shard's predictions file is published, relative to `loc` (its commit record's `output`)."""

    def data_path(self, shard: Shard) -> str:
        """Where the shard's predictions file is published (a full path under `loc`)."""

    def rejected_path(self, shard: Shard) -> str:
        """Where the shard's quarantine file is published (a full path under `loc`): the rows the model failed on
        within --max-bad-rows, with the error (quarantine.py). Out of the predictions' readers' way: a table keeps
        it beside the table, never in its snapshots."""

    def commit(self, result: ShardResult) -> None:
        """Make a shard durable: its record, written once its file is in place."""

    def record(self, shard_id: str) -> ShardResult | None:
        """The shard's commit record, if it has one."""

    def committed(self) -> dict[str, ShardResult]:
        """Every commit record, by shard id."""

    def reconcile(self, shards: list[Shard], committed: dict[str, ShardResult], model_identity: str,
                  output_options: str, overwrite: bool, sources: dict[str, str | None],
                  incremental: bool = False) -> Reconciliation:
        """What a run must still do, given the output's `committed` records (commit.reconcile's rules)."""

    def forget(self, result: ShardResult) -> None:
        """Withdraw a committed shard: its record first, then its files (predictions, quarantine)."""

    def discard(self, relpath: str) -> None:
        """Remove a quarantine file that no current record names (`Reconciliation.leftovers`: a crash between the
        file and its record, or a shard scored again)."""

    def published(self) -> bool:
        """Whether readers are told the output is complete now."""

    def unpublish(self) -> None:
        """Stop telling readers the output is complete: called before whatever changes it first."""

    def start(self, run_record: dict[str, Any]) -> None:
        """Record who is writing: the run, its model and options."""

    def verify(self, committed: list[ShardResult]) -> list[str]:
        """What makes the output differ from these committed shards (nothing: it may be published)."""

    def same_as_published(self, manifest: dict[str, Any]) -> bool:
        """Whether the published run holds exactly the shards this manifest lists (then nothing need be written)."""

    def publish(self, manifest: dict[str, Any], success: bool) -> None:
        """Write the run's manifest and, when `success`, tell readers the output is complete."""

    def record_run(self, record: dict[str, Any]) -> None:
        """Keep what a run changed (runlog.run_record), beside those of earlier runs."""

    def runs(self) -> list[dict[str, Any]]:
        """Every run's record, oldest first."""

    def recorded_runs(self) -> set[str]:
        """The ids of the runs that left a record."""

    def remove_temporaries(self, host: str) -> None:
        """Remove files of writers killed mid-write that no run can still publish (`host`: this run's, to tell
        whether an older generation's holder is gone)."""


def open_output(loc: Location, generation: int = 0, kind: str = FOLDER, table: TableHandle | None = None) -> Output:
    """The output at `loc`: a folder of Parquet files, or the files of a table (whose handle `table` only the driver
    has)."""
    return TableOutput(loc, generation, table) if kind == TABLE else ParquetFolder(loc, generation)
