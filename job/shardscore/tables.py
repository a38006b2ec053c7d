"""What the two table formats share: the handle a table output commits through (iceberg.IcebergTable,
delta.DeltaTarget), where shardscore's own data files lie in a table, and the commit's retry against other writers.

A table output's rows that shardscore owns are those of the data files under `<table location>/data/shardscore-*/`
(one folder per lease generation): each run's commit makes them exactly the run's committed shards' files, in one
table commit tagged with the run; other writers' files are never touched.

A table is partitioned by identity on columns that the input's Hive folders give (`date=2026-12-01/`): the data
files do not hold those columns, and each file's partition values come from its folders, as for a Hive table
migrated to Iceberg (identity partition values are projected from metadata: pyiceberg's
_get_column_projection_values, Iceberg Java's PartitionUtil.constantsMap) or any Delta table (partitionValues).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

from .errors import ConfigError
from .planning import partition_keys
from .schema_rule import SchemaGate

#: The folder of the table's location that holds shardscore's data files, one subfolder per lease generation.
OWN_DATA = "data/shardscore-"
#: How many times a commit that lost a race with another writer of the table is recomputed and tried again.
COMMIT_TRIES = 5
T = TypeVar("T")


class TableUnavailable(OSError):
    """The table's commit did not happen: the run's shards stay committed, and a rerun commits them (an OSError,
    as an output that stopped taking writes: run.Run._publish)."""


class TableHandle(Protocol):
    """The driver's handle on the table a run commits to, found before Ray starts (a bad name, an unknown or
    unreachable catalog or store is an option error, exit 2)."""

    location: str  # the table's root, where workers write the data files (under OWN_DATA) and shardscore's records
    partition_columns: tuple[str, ...]  # identity partitions filled from each file's folders (an existing table's)

    def plan_partitions(self, asked: bool, relpaths: list[str]) -> None:
        """Fix `partition_columns` for the run's input (`partitioning`); ConfigError where the input cannot fill them."""

    def schema_gate(self) -> SchemaGate:
        """The existing table's columns as the run's prediction schema (an empty gate when there is no table)."""

    def describe(self) -> str:
        """What `plan` says of the table."""

    def commit(self, relpaths: list[str], properties: dict[str, str], generation: int) -> int | None:
        """Make the files at `relpaths` (relative to `location`) exactly the table's shardscore data files, in one
        table commit tagged with `properties` and the writing run's lease `generation`; creates the table when
        absent. Returns the new version (snapshot id), or None when the table held exactly these files already."""

    def manifest_entry(self) -> dict[str, Any]:
        """What the manifest's `table` says of the table as last read: its name or location, and its version."""


def retried_commit(attempt: Callable[[int], T], lost: tuple[type[Exception], ...], uri: str) -> T:
    """`attempt(n)` until it does not lose a race with another writer (an exception of `lost`), at most COMMIT_TRIES
    times, each recomputing the commit from the table as it is then; any other failure of the catalog or the store
    is TableUnavailable (exit 1, the rerun commits)."""
    last: Exception | None = None
    for n in range(COMMIT_TRIES):
        try:
            return attempt(n)
        except lost as exc:
            last = exc
        except TableUnavailable:
            raise
        except Exception as exc:  # the catalog's database or server, or the store, did not take it
            raise TableUnavailable(f"{uri}: the table's commit failed ({type(exc).__name__}: {exc})") from exc
    raise TableUnavailable(f"{uri}: the table's commit lost to other writers {COMMIT_TRIES} times in a row "
                           f"({last})") from last


def partition_values(relpath: str) -> dict[str, str | None]:
    """The Hive folders of a file's path, `key=value`, each value unescaped as Hive and Spark escape it (`%3A`);
    Hive's `__HIVE_DEFAULT_PARTITION__` is null."""
    values: dict[str, str | None] = {}
    for folder in relpath.split("/")[:-1]:
        key, eq, value = folder.partition("=")
        if eq and key:
            values[key] = None if value == HIVE_NULL else unquote(value)
    return values


#: The folder value Hive and Spark write for a null partition value.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def partitioning(existing: tuple[str, ...] | None, asked: bool, relpaths: list[str], option: str) -> tuple[str, ...]:
    """The identity partition columns a run's commit fills from each file's folders: an existing table's own
    (`existing`), or for a table the run creates the input's Hive folder keys when `asked` (--partition-table), else
    none. ConfigError, naming the file, where an input file lies in no folder for one of them."""
    keys = tuple(partition_keys(relpaths))
    if existing is None and asked and not keys:
        raise ConfigError(f"--partition-table: the input has no Hive folders (<key>=<value>/) to partition {option} by")
    columns = existing if existing is not None else keys if asked else ()
    for rel in relpaths:
        missing = [c for c in columns if c not in partition_values(rel)]
        if missing:
            raise ConfigError(f"{option}: the table is partitioned by {', '.join(columns)}, but input file {rel} lies in "
                              f"no {missing[0]}=<value> folder, which would give its rows their value")
    return columns


def partitioned_text(columns: tuple[str, ...]) -> str:
    """What `plan` adds to a table's description: its partition columns, if any."""
    return f", partitioned by {', '.join(columns)}" if columns else ""
