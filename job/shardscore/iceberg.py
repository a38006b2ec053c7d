"""The catalog's side of Iceberg tables, via pyiceberg: `--output iceberg://<catalog>/<namespace>.<table>`
(`IcebergTable`) and `--input iceberg://...[@<snapshot id>]` (`IcebergInput`).

The catalog is configured as pyiceberg configures it: `.pyiceberg.yaml`, or `PYICEBERG_CATALOG__<NAME>__URI`,
`__WAREHOUSE` and the rest (pyiceberg.catalog.load_catalog). This module knows where a table lives, which data
files a snapshot holds, and makes the one commit per run that turns the run's committed files into the table's
shardscore rows; the output's files, records and lease are table_output.py's, as a folder's are folder.py's.

A commit adds the run's files under tables.OWN_DATA that the table lacks and removes the files there that the run no
longer names (replaced by --overwrite, or of input files that are gone), in one snapshot whose summary names the
run. Other writers' files are never touched.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .errors import ConfigError, InputError
from .schema_rule import SchemaGate, schema_text
from .tables import OWN_DATA, partition_values, partitioned_text, partitioning, retried_commit

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.io import FileIO
    from pyiceberg.manifest import DataFile
    from pyiceberg.table.metadata import TableMetadata
    from pyiceberg.table import Table, Transaction

SCHEME = "iceberg://"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_table(uri: str) -> bool:
    return uri.startswith(SCHEME)


@dataclass(frozen=True)
class TableName:
    catalog: str
    namespace: str
    table: str

    @classmethod
    def parse(cls, uri: str, option: str = "--output") -> "TableName":
        """`iceberg://<catalog>/<namespace>.<table>`, each part a plain name; a dotted namespace is not supported."""
        catalog, _, rest = uri[len(SCHEME):].partition("/")
        namespace, _, table = rest.partition(".")
        bad = [part for part in (catalog, namespace, table) if not _NAME.fullmatch(part)]
        if bad:
            raise ConfigError(f"{option} {uri}: not a table name; the form is iceberg://<catalog>/<namespace>.<table>, "
                              "each a name of letters, digits and '_' (the catalog as pyiceberg's configuration "
                              f"names it: .pyiceberg.yaml or PYICEBERG_CATALOG__<NAME>__URI); {bad[0]!r} is not one")
        return cls(catalog, namespace, table)

    def __str__(self) -> str:
        return f"{self.namespace}.{self.table}"


class IcebergTable:
    """One table of a catalog, existing or to be created by the run's commit (a tables.TableHandle): found before
    Ray starts, so that an unknown or unreachable catalog, or a catalog with nowhere to put a new table, is an option
    error (exit 2)."""

    def __init__(self, uri: str):
        self.uri, self.name = uri, TableName.parse(uri)
        self.catalog = _load_catalog(self.name, uri)
        self.table = self._load()
        if self.table is not None:
            self.location = self.table.location().rstrip("/")
        else:
            warehouse = self.catalog.properties.get("warehouse", "")
            if not warehouse:
                raise ConfigError(f"--output {uri}: the table does not exist, and catalog {self.name.catalog!r} has no "
                                  "warehouse to create it in: set PYICEBERG_CATALOG__"
                                  f"{self.name.catalog.upper()}__WAREHOUSE (or create the table)")
            # Our choice, passed to create_table: the warehouse's <namespace>/<table>, as pyiceberg's SQL catalog
            # names it by default.
            self.location = f"{warehouse.rstrip('/')}/{self.name.namespace}/{self.name.table}"
        self.partition_columns: tuple[str, ...] = self._table_partitions() or ()

    def _table_partitions(self) -> tuple[str, ...] | None:
        """The existing table's partition columns (None without a table): identity partitions of string columns
        only, which a folder's value fills as it is; another transform or type is refused."""
        if self.table is None:
            return None
        from pyiceberg.transforms import IdentityTransform
        from pyiceberg.types import StringType

        schema, columns = self.table.schema(), []
        for field in self.table.spec().fields:
            source = schema.find_field(field.source_id)
            if not isinstance(field.transform, IdentityTransform) or not isinstance(source.field_type, StringType):
                raise ConfigError(f"--output {self.uri}: the table is partitioned by {field.name} ({field.transform} of "
                                  f"{source.name}, {source.field_type}); shardscore fills only identity partitions of "
                                  "string columns, from the input's Hive folders")
            columns.append(source.name)
        return tuple(columns)

    def plan_partitions(self, asked: bool, relpaths: list[str]) -> None:
        self.partition_columns = partitioning(self._table_partitions(), asked, relpaths, f"--output {self.uri}")

    def _load(self) -> "Table | None":
        return _load_table(self.catalog, self.name, self.uri, "--output")

    def schema_gate(self) -> SchemaGate:
        """The existing table's columns as the run's prediction schema: each shard's predictions (key columns
        included) are cast to it where they widen without loss, and a shard whose predictions do not fit fails
        naming the column and both types, before its file is written (schema_rule)."""
        if self.table is None:
            return SchemaGate()
        schema = self.table.schema().as_arrow()
        files = pa.schema([f for f in schema if f.name not in self.partition_columns])  # the rest from the folders
        return SchemaGate(schema_text(files), f"the Iceberg table {self.name}")

    def snapshot_id(self) -> int | None:
        """The table's current snapshot, as this handle last read it (None: no table, or no snapshot yet)."""
        snapshot = self.table.current_snapshot() if self.table is not None else None
        return snapshot.snapshot_id if snapshot else None

    def describe(self) -> str:
        """What `plan` says of the table."""
        partitioned = partitioned_text(self.partition_columns)
        if self.table is None:
            return (f"Iceberg table {self.name} (catalog {self.name.catalog}): absent, the run creates it at "
                    f"{self.location}{partitioned}")
        snapshot = self.snapshot_id()
        return (f"Iceberg table {self.name} (catalog {self.name.catalog}) at {self.location}: "
                + (f"snapshot {snapshot}" if snapshot else "no snapshot yet") + partitioned)

    def manifest_entry(self) -> dict[str, Any]:
        return {"name": str(self.name), "catalog": self.name.catalog, "snapshot_id": self.snapshot_id()}

    def commit(self, relpaths: list[str], properties: dict[str, str], generation: int) -> int | None:
        """Make `relpaths` exactly the table's shardscore data files, in one snapshot whose summary holds
        `properties` and the generation; creates the namespace and the table (with the first file's schema) when
        absent. Returns the new snapshot's id, or None when the table already held exactly these files (nothing is
        committed: a rerun after a commit whose run did not see it finish). A commit that loses a race with another
        writer (pyiceberg's CommitFailedException) is recomputed from the table as it is now."""
        from pyiceberg.exceptions import CommitFailedException

        files = sorted(f"{self.location}/{rel}" for rel in relpaths)
        summary = {**properties, "shardscore.generation": str(generation)}

        def attempt(n: int) -> int | None:
            if n:
                self.table = self._load()
            return self._commit_once(files, summary)

        return retried_commit(attempt, (CommitFailedException,), self.uri)

    def _commit_once(self, files: list[str], properties: dict[str, str]) -> int | None:
        if self.table is None and not files:
            return None  # a run of zero-row shards only: nothing to create the table with
        if self.table is None:
            self._create(files, properties)
        else:
            current, wanted = self._own_files(self.table), set(files)
            added = sorted(wanted - set(current))
            removed = [data_file for path, data_file in current.items() if path not in wanted]
            if not added and not removed:
                return None
            self._replace(self.table, added, removed, properties)
        self.table = self._load()
        return self.snapshot_id()

    def _replace(self, table: "Table", added: list[str], removed: list[Any], properties: dict[str, str]) -> None:
        with table.transaction() as tx:
            self._add(tx, table.io, added, removed, properties)

    def _create(self, files: list[str], properties: dict[str, str]) -> None:
        """Create the table (the first file's columns, then the partition columns) and add `files`, in one catalog
        commit (pyiceberg's create_table_transaction)."""
        import pyarrow.parquet as pq
        from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError
        from pyiceberg.io import load_file_io

        self.catalog.create_namespace_if_not_exists(self.name.namespace)
        io = load_file_io(self.catalog.properties, self.location)
        with io.new_input(files[0]).open() as stream:
            schema = pq.read_schema(stream)
        schema = pa.schema([*schema, *(pa.field(c, pa.string()) for c in self.partition_columns)])
        try:
            with self.catalog.create_table_transaction((self.name.namespace, self.name.table), schema,
                                                       location=self.location) as tx:
                self._partition(tx)
                self._add(tx, io, files, [], properties)
        except TableAlreadyExistsError as exc:  # another writer created it meanwhile: commit into it
            raise CommitFailedException(str(exc)) from exc

    def _partition(self, tx: "Transaction") -> None:
        """The new table's spec: an identity partition per partition column (none when unpartitioned)."""
        if not self.partition_columns:
            return
        with tx.update_spec() as spec:
            for column in self.partition_columns:
                spec.add_identity(column)

    def _add(self, tx: "Transaction", io: "FileIO", added: list[str], removed: list[Any],
             properties: dict[str, str]) -> None:
        """One snapshot in `tx`: an append when nothing is removed (what incremental readers follow), else an
        overwrite. The files carry no field ids, so the table maps them by name (as Transaction.add_files does)."""
        if tx.table_metadata.name_mapping() is None:
            tx.set_properties(**{"schema.name-mapping.default": tx.table_metadata.schema().name_mapping.model_dump_json()})
        with ThreadPoolExecutor(max_workers=16) as pool:  # a footer read per file: in threads, for object stores
            described = list(pool.map(lambda path: self._data_file(tx.table_metadata, io, path), added))
        update = tx.update_snapshot(snapshot_properties=properties)
        with (update.overwrite() if removed else update.fast_append()) as snapshot:
            for data_file in removed:
                snapshot.delete_data_file(data_file)
            for data_file in described:
                snapshot.append_data_file(data_file)

    def _data_file(self, metadata: "TableMetadata", io: "FileIO", path: str) -> "DataFile":
        """The file as the table's metadata describes it. Unpartitioned: pyiceberg's parquet_file_to_data_file, as
        Transaction.add_files describes files. Partitioned: that infers the partition from the partition columns'
        statistics, which our files lack (the columns are their folders), so the same statistics with the values of
        the file's folders (tables.partition_values)."""
        import pyarrow.parquet as pq
        from pyiceberg.io.pyarrow import (compute_statistics_plan, data_file_statistics_from_parquet_metadata,
                                          parquet_file_to_data_file, parquet_path_to_id_mapping)
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
        from pyiceberg.typedef import Record

        if not self.partition_columns:
            return parquet_file_to_data_file(io, metadata, path)
        schema, stream = metadata.schema(), io.new_input(path)
        with stream.open() as f:
            footer = pq.read_metadata(f)
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=footer, stats_columns=compute_statistics_plan(schema, metadata.properties),
            parquet_column_mapping=parquet_path_to_id_mapping(schema))
        values = partition_values(path[len(self.location) + 1:])
        partition = Record(*[values[schema.find_field(field.source_id).name] for field in metadata.spec().fields])
        return DataFile.from_args(content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET,
                                  partition=partition, file_size_in_bytes=len(stream), sort_order_id=None,
                                  spec_id=metadata.default_spec_id, equality_ids=None, key_metadata=None,
                                  **statistics.to_serialized_dict())

    def _own_files(self, table: "Table") -> dict[str, Any]:
        """The current snapshot's data files that shardscore wrote (under OWN_DATA), by path."""
        snapshot = table.current_snapshot()
        if snapshot is None:
            return {}
        prefix = f"{self.location}/{OWN_DATA}"
        return {entry.data_file.file_path: entry.data_file
                for manifest in snapshot.manifests(table.io)
                for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
                if entry.data_file.file_path.startswith(prefix)}


class IcebergInput:
    """A table as `--input iceberg://<catalog>/<namespace>.<table>[@<snapshot id>]`: the Parquet data files of one
    snapshot (the current one unless named), which are the shards' files. Iceberg never changes a data file, so a
    file's shards stay committed across snapshots; a newer snapshot's new files are new shards and its removed ones
    orphans, as for a folder whose files came and went (commit.reconcile)."""

    def __init__(self, uri: str):
        self.uri = uri
        base, _, wanted = uri.partition("@")
        self.name = TableName.parse(base, "--input")
        catalog = _load_catalog(self.name, uri, "--input")
        table = _load_table(catalog, self.name, uri, "--input")
        if table is None:
            raise InputError(f"--input {uri}: catalog {self.name.catalog!r} has no table {self.name}")
        snapshot = _snapshot(table, wanted, uri)
        self.snapshot_id = snapshot.snapshot_id
        self.location = table.location().rstrip("/")
        self.files = self._data_files(table)

    def manifest_entry(self) -> dict[str, Any]:
        return {"name": str(self.name), "catalog": self.name.catalog, "snapshot_id": self.snapshot_id}

    def _data_files(self, table: "Table") -> frozenset[str]:
        """The snapshot's data files, relative to the table's location; refused: row-level deletes (merge-on-read
        delete files, which a reader must apply), files outside the location, files that are not Parquet."""
        files = set()
        for task in table.scan(snapshot_id=self.snapshot_id).plan_files():
            path, where = task.file.file_path, f"--input {self.uri}: snapshot {self.snapshot_id}'s data file"
            if task.delete_files:
                raise InputError(f"{where} {path} has {len(task.delete_files)} delete file(s) (row-level deletes): "
                                 "not supported yet; compact the table first (Spark's rewrite_data_files)")
            if str(task.file.file_format).upper().rsplit(".", 1)[-1] != "PARQUET":
                raise InputError(f"{where} {path} is {task.file.file_format}, not Parquet")
            if not path.startswith(self.location + "/"):
                raise InputError(f"{where} {path} lies outside the table's location {self.location}: not supported")
            files.add(path[len(self.location) + 1:])
        if not files:
            raise InputError(f"--input {self.uri}: snapshot {self.snapshot_id} has no data files")
        return frozenset(files)


def _snapshot(table: "Table", wanted: str, uri: str) -> Any:
    if not wanted:
        snapshot = table.current_snapshot()
        if snapshot is None:
            raise InputError(f"--input {uri}: the table has no snapshot yet (no data)")
        return snapshot
    snapshot = table.snapshot_by_id(int(wanted)) if wanted.isdigit() else None
    if snapshot is None:
        known = ", ".join(str(s.snapshot_id) for s in table.snapshots()[-5:])
        raise InputError(f"--input {uri}: the table has no snapshot {wanted!r} (its latest: {known or 'none'})")
    return snapshot


def _load_table(catalog: "Catalog", name: TableName, uri: str, option: str) -> "Table | None":
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table((name.namespace, name.table))
    except NoSuchTableError:
        return None
    except Exception as exc:  # a catalog that does not answer: the driver's SQL or HTTP error, named
        raise ConfigError(f"{option} {uri}: catalog {name.catalog!r} cannot be read "
                          f"({type(exc).__name__}: {exc})") from exc


def _load_catalog(name: TableName, uri: str, option: str = "--output") -> "Catalog":
    try:
        from pyiceberg.catalog import load_catalog
    except ImportError as exc:
        raise ConfigError(f"{option} {uri}: Iceberg tables need pyiceberg: pip install 'shardscore[iceberg]' "
                          f"({exc})") from exc
    try:
        return load_catalog(name.catalog)
    except Exception as exc:  # pyiceberg's ValueError for a catalog it has no configuration of, a driver's error
        raise ConfigError(f"{option} {uri}: catalog {name.catalog!r} cannot be used ({type(exc).__name__}: {exc}); "
                          "pyiceberg reads it from .pyiceberg.yaml or PYICEBERG_CATALOG__"
                          f"{name.catalog.upper()}__URI and the rest") from exc
