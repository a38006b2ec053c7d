"""What the two table formats share: the handle a table output commits through (iceberg.IcebergTable,
delta.DeltaTarget), where shardscore's own data files lie in a table, and the commit's retry against other writers.

A table output's rows that shardscore owns are those of the data files under `<table location>/data/shardscore-*/`
(one folder per lease generation): each run's commit makes them exactly the run's committed shards' files, in one
table commit tagged with the run; other writers' files are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

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
