"""Delta Lake tables, via delta-rs (the `deltalake` package): `--output delta+<location>` (DeltaTarget) and
`--input delta+<location>[@<version>]` (DeltaSource), where the location is a local path or an s3:// URI.

A Delta table is its location: no catalog. Its log (`_delta_log/`) says which Parquet files are the table at each
version; a commit adds and removes files in one new log entry, which delta-rs writes only if that version is still
free (put-if-absent: on S3 a conditional PUT, which the S3 server must honour). The run's commit is such an entry: it
adds the run's files under tables.OWN_DATA that the table lacks and removes the ones there that the run no longer
names, with the run in its commit info and a `txn` action (app id `shardscore`, version the run's lease generation),
so that a run superseded by a newer one never commits over it. Other writers' files are never touched.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import ConfigError, InputError
from .schema_rule import SchemaGate, schema_text
from .storage import Location, StorageOptions, require_credentials, resolve
from .tables import (OWN_DATA, TableUnavailable, partition_values, partitioned_text, partitioning,
                     retried_commit)

if TYPE_CHECKING:
    from deltalake import DeltaTable

SCHEME = "delta+"
#: The `txn` app id of shardscore's commits: its version is the committing run's lease generation.
APP_ID = "shardscore"


def is_delta(uri: str) -> bool:
    return uri.startswith(SCHEME)


def storage_options(loc: Location) -> dict[str, str]:
    """delta-rs's options for the location's store. Credentials and the region come from the standard AWS variables,
    which delta-rs reads itself (object_store's AmazonS3Builder::from_env), as pyarrow does; the endpoint is
    shardscore's. Commits use conditional PUTs (`aws_conditional_put=etag`) instead of a lock table."""
    if loc.is_local:
        return {}
    options = {"aws_conditional_put": "etag", "max_retries": "2", "retry_timeout": "20 seconds"}
    if loc.endpoint:
        options.update(aws_endpoint_url=loc.endpoint, aws_allow_http=str(loc.endpoint.startswith("http://")).lower())
    return options


def _open(loc: Location, uri: str, option: str, version: int | None = None) -> "DeltaTable | None":
    """The table at `loc` (at `version`), None where there is none."""
    try:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError
    except ImportError as exc:
        raise ConfigError(f"{option} {uri}: Delta tables need deltalake: pip install 'shardscore[delta]' ({exc})") from exc
    try:
        return DeltaTable(loc.uri, version=version, storage_options=storage_options(loc))
    except TableNotFoundError:
        return None
    except Exception as exc:  # a store that does not answer, a log that cannot be read, a version it lacks
        raise ConfigError(f"{option} {uri}: the Delta table cannot be read ({type(exc).__name__}: {exc})") from exc


def _location(uri: str, option: str, storage: StorageOptions) -> Location:
    rest = uri[len(SCHEME):]
    if not rest or "://" in rest and not rest.startswith(("s3://", "file://")):
        raise ConfigError(f"{option} {uri}: not a Delta table's location; the form is delta+<local path>, "
                          "delta+file://<path> or delta+s3://<bucket>/<path>")
    loc = resolve(rest, storage)
    require_credentials(loc, f"{option} {uri}")
    return loc


class DeltaTarget:
    """The Delta table a run commits to (a tables.TableHandle), existing or created by the run's commit."""

    def __init__(self, uri: str, storage: StorageOptions):
        self.uri = uri
        self.loc = _location(uri, "--output", storage)
        self.location = self.loc.uri
        self.table = _open(self.loc, uri, "--output")
        if self.table is None:
            self._refuse_foreign_files()
        self.partition_columns: tuple[str, ...] = self._table_partitions() or ()

    def _table_partitions(self) -> tuple[str, ...] | None:
        """The existing table's partition columns (Delta's are identity on their values); None without a table."""
        return tuple(self.table.metadata().partition_columns) if self.table is not None else None

    def plan_partitions(self, asked: bool, relpaths: list[str]) -> None:
        self.partition_columns = partitioning(self._table_partitions(), asked, relpaths, f"--output {self.uri}")

    def _refuse_foreign_files(self) -> None:
        """A location with visible files but no Delta log is someone's folder, not a table to create there."""
        try:
            entries = self.loc.fs.get_file_info(pafs.FileSelector(self.loc.path, allow_not_found=True))
        except OSError as exc:
            raise ConfigError(f"--output {self.uri}: the location cannot be listed ({exc})") from exc
        visible = sorted(e.base_name for e in entries if not e.base_name.startswith(("_", ".")))
        if visible and visible != ["data"]:
            raise ConfigError(f"--output {self.uri}: {self.location} holds files ({', '.join(visible[:3])}) but no Delta "
                              "table (_delta_log): give an empty location or a Delta table's")

    def schema_gate(self) -> SchemaGate:
        """The existing table's columns as the run's prediction schema, as for an Iceberg table (schema_rule)."""
        if self.table is None:
            return SchemaGate()
        schema = pa.schema(self.table.schema().to_arrow())
        files = pa.schema([f for f in schema if f.name not in self.partition_columns])  # the rest is in the log
        return SchemaGate(schema_text(files), f"the Delta table {self.location}")

    def version(self) -> int | None:
        return self.table.version() if self.table is not None else None

    def describe(self) -> str:
        if self.table is None:
            return f"Delta table at {self.location}: absent, the run creates it{partitioned_text(self.partition_columns)}"
        return f"Delta table at {self.location}: version {self.version()}{partitioned_text(self.partition_columns)}"

    def manifest_entry(self) -> dict[str, Any]:
        return {"format": "delta", "location": self.location, "version": self.version()}

    def commit(self, relpaths: list[str], properties: dict[str, str], generation: int) -> int | None:
        """One log entry that makes `relpaths` exactly the table's shardscore files (creating the table with the first
        file's schema when absent); None when it held them already. A commit that lost the version to another
        writer (delta-rs's CommitFailedError, after its own conflict checks and retries) is recomputed."""
        from deltalake.exceptions import CommitFailedError

        def attempt(n: int) -> int | None:
            if n:
                self.table = _open(self.loc, self.uri, "--output")
            return self._commit_once(sorted(relpaths), properties, generation)

        return retried_commit(attempt, (CommitFailedError,), self.uri)

    def _commit_once(self, relpaths: list[str], properties: dict[str, str], generation: int) -> int | None:
        from deltalake.schema import Schema
        from deltalake.transaction import CommitProperties, RemoveAction, Transaction, create_table_with_add_actions

        commit = CommitProperties(custom_metadata=properties, app_transactions=[Transaction(APP_ID, generation)])
        if self.table is None:
            if not relpaths:
                return None  # a run of zero-row shards only: nothing to create the table with
            columns = [*self._read_schema(relpaths[0]), *(pa.field(c, pa.string()) for c in self.partition_columns)]
            create_table_with_add_actions(self.location, Schema.from_arrow(pa.schema(columns)),
                                          self._add_actions(relpaths), mode="append",
                                          partition_by=list(self.partition_columns) or None,
                                          storage_options=storage_options(self.loc), commit_properties=commit)
        else:
            newer = self.table.transaction_version(APP_ID)
            if newer is not None and newer > generation:
                raise TableUnavailable(f"{self.uri}: a newer shardscore run (lease generation {newer}) has committed "
                                       f"to the table since this one (generation {generation}) took the output: "
                                       "this run's commit is refused")
            current, wanted = self._own_files(), set(relpaths)
            added = [rel for rel in relpaths if rel not in current]
            now = int(time.time() * 1000)
            removed = [RemoveAction(rel, True, now, size, {}) for rel, size in current.items() if rel not in wanted]
            if not added and not removed:
                return None
            self.table.create_write_transaction([*self._add_actions(added), *removed], mode="append",
                                                schema=self.table.schema(), commit_properties=commit)
        self.table = _open(self.loc, self.uri, "--output")
        return self.version()

    def _read_schema(self, relpath: str) -> pa.Schema:
        with self.loc.fs.open_input_file(self.loc.join(relpath)) as stream:
            return pq.read_schema(stream)

    def _add_actions(self, relpaths: list[str]) -> list[Any]:
        """Each file's add action: its size and mtime from one listing, its row count from its footer (the
        `numRecords` statistic readers count by), footers read in threads for object stores."""
        from deltalake.transaction import AddAction

        infos = self.loc.fs.get_file_info([self.loc.join(rel) for rel in relpaths])

        def rows(rel: str) -> int:
            with self.loc.fs.open_input_file(self.loc.join(rel)) as stream:
                return pq.read_metadata(stream).num_rows

        with ThreadPoolExecutor(max_workers=16) as pool:
            counts = list(pool.map(rows, relpaths))
        return [AddAction(rel, info.size, {c: partition_values(rel)[c] for c in self.partition_columns},
                          int(info.mtime.timestamp() * 1000) if info.mtime else 0, True, json.dumps({"numRecords": n}))
                for rel, info, n in zip(relpaths, infos, counts, strict=True)]

    def _own_files(self) -> dict[str, int]:
        """The table's current files that shardscore wrote (under OWN_DATA): relative path -> size."""
        actions = pa.table(self.table.get_add_actions(flatten=True))
        return {rel: size for path, size in zip(actions.column("path").to_pylist(),
                                                actions.column("size_bytes").to_pylist(), strict=True)
                if (rel := unquote(path)).startswith(OWN_DATA)}


class DeltaSource:
    """A table as `--input delta+<location>[@<version>]`: the Parquet files of one version (the latest unless named),
    which are the shards' files. Delta never changes a data file, so a newer version's new files are new shards and
    its removed ones orphans, as for a folder whose files came and went (commit.reconcile). Refused: deletion vectors
    and column mapping (the files alone would not give the table's rows or columns), files outside the location."""

    def __init__(self, uri: str, storage: StorageOptions):
        self.uri = uri
        base, at, wanted = uri.rpartition("@") if "@" in uri else (uri, "", "")
        if at and not wanted.isdigit():
            raise InputError(f"--input {uri}: {wanted!r} is not a version of the table (a number)")
        self.loc = _location(base, "--input", storage)
        self.location = self.loc.uri
        table = _open(self.loc, uri, "--input", int(wanted) if wanted else None)
        if table is None:
            raise InputError(f"--input {uri}: {self.location} holds no Delta table (no _delta_log)")
        self.version = table.version()
        self.files = self._data_files(table)

    def manifest_entry(self) -> dict[str, Any]:
        return {"format": "delta", "location": self.location, "version": self.version}

    def _data_files(self, table: "DeltaTable") -> frozenset[str]:
        where = f"--input {self.uri}: version {self.version}"
        mapping = table.metadata().configuration.get("delta.columnMapping.mode") or "none"
        if mapping != "none":
            raise InputError(f"{where} uses column mapping ({mapping}): its files' column names are not the table's; "
                             "not supported")
        if "deletionVectors" in (table.protocol().reader_features or []):
            deleted = pa.table(table.deletion_vectors())
            if deleted.num_rows:
                raise InputError(f"{where} has deletion vectors on {deleted.num_rows} file(s) (row-level deletes): not "
                                 "supported yet; compact the table first (OPTIMIZE, or REORG TABLE ... APPLY (PURGE))")
        files = set()
        for path in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist():
            rel = unquote(path)
            if "://" in rel or rel.startswith("/"):
                raise InputError(f"{where}'s data file {rel} lies outside the table's location: not supported")
            files.add(rel)
        if not files:
            raise InputError(f"--input {self.uri}: version {self.version} has no data files")
        return frozenset(files)
