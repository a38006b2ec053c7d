"""Batch scoring of one shard: stream its rows, score them, write the predictions, commit. Knows nothing of Ray.

Memory stays bounded by the batch size: rows are read batch by batch (only the columns the model needs plus
the key columns), and each batch's predictions are appended to the output file as a row group.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema_rule
from .commit import ShardResult, ShardStatus
from .errors import InputChanged, PartitionColumnClash, ShardError
from .lease import check_fence
from .model import BatchError, Scorer, loaded_sources
from .output import FOLDER, Output, open_output
from .pipeline import BackgroundWriter, prefetch
from .planning import INT96_UNIT, Footer, Shard, file_stamp, footer_of, partition_clashes, read_footer, widen_table
from .quarantine import Isolator, OverBudget, Part, Rejections, budget, call_cap, merged
from .storage import Location, StorageOptions, resolve, stamp, write_atomic
from .watchdog import Watch

#: Errors decoding a shard that mean "this shard's data is bad": retrying cannot help.
DATA_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)

#: Predictions held back while a column is all null in every batch so far (its type unknown), at most this much.
PENDING_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ScoringJob:
    """What every shard of a run shares (small and picklable: sent with each task)."""

    input_uri: str
    output_uri: str
    storage: StorageOptions
    model_identity: str
    output_options: str
    key_columns: tuple[str, ...] = ()
    batch_size: int = 65536
    compression: str = "zstd"
    casts: tuple[tuple[str, pa.DataType], ...] = ()  # input columns widened to one type across files
    run_id: str = ""
    overlap: bool = False  # read ahead and write behind in threads while the model scores (pipeline.py)
    partition_keys: tuple[tuple[str, str], ...] = ()  # (key, a folder naming it): planning.partition_keys
    columns: tuple[str, ...] = ()  # the columns every batch gives the model, in this order (run.model_columns)
    lease_generation: int = 0  # the run's generation of the output's lease: fences its publishes (check_fence)
    max_bad_rows: float = 0  # rows per shard the model may fail on (quarantine.budget); 0: the first fails the shard
    batch_timeout: float = 0  # seconds a model call may take before its worker process ends (watchdog.py); 0: no bound
    output_kind: str = FOLDER  # a folder's files, or a table's (output.open_output)

    def input(self) -> Location:
        return resolve(self.input_uri, self.storage)

    def output(self) -> Output:
        return open_output(resolve(self.output_uri, self.storage), self.lease_generation, self.output_kind)

    def fence(self, loc: Location, what: str) -> None:
        """Raise LeaseLost when another run has taken the output's lease over: one listing of the lease folder."""
        check_fence(loc, self.lease_generation, what)


class ReadError(Exception):
    """Reading the shard's input failed (as opposed to the model or the output): `cause` says how."""

    def __init__(self, cause: BaseException, first_row: int):
        super().__init__(str(cause))
        self.cause = cause
        self.first_row = first_row


def _read_columns(scorer: Scorer, job: ScoringJob, schema: pa.Schema, shard: Shard) -> list[str] | None:
    """The columns to read, in the order the model gets them: the job's (the same for every file, whatever its own
    order), else the model's declared ones and the keys; None (every column, in the file's order) without either."""
    if job.columns:
        wanted = list(job.columns)
    elif scorer.columns is not None:
        wanted = list(dict.fromkeys([*scorer.columns, *job.key_columns]))
    else:
        return None
    missing = [c for c in wanted if schema.get_field_index(c) < 0]
    if missing:
        raise ShardError(shard.shard_id, shard.path, f"missing column(s) {missing}; the file has {schema.names}")
    return wanted


def _batches(parquet: pq.ParquetFile, shard: Shard, job: ScoringJob, columns: list[str] | None) -> Iterator[pa.Table]:
    """The shard's rows as tables of at most batch_size rows, widened where the plan said; read errors wrapped."""
    casts = {name: t for name, t in job.casts if columns is None or name in columns}
    rows = 0
    # In the order of `columns`, not the file's: ParquetFile._get_column_indices maps each name in turn to its
    # leaf indices, and the reader returns the fields in that order (tests/test_batch_integrity.py).
    batches = parquet.iter_batches(batch_size=job.batch_size, row_groups=shard.row_groups, columns=columns,
                                   use_threads=False)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, *DATA_ERRORS) as exc:
            raise ReadError(exc, rows) from exc
        try:
            table = widen_table(pa.Table.from_batches([batch]), casts, rows)
        except ValueError as exc:  # a value the plan's wider type cannot hold: this shard's data
            raise ShardError(shard.shard_id, shard.path, str(exc)) from exc
        rows += table.num_rows
        yield table


def _with_keys(predictions: pa.Table, batch: pa.Table, key_columns: tuple[str, ...], shard: Shard) -> pa.Table:
    for i, name in enumerate(key_columns):
        if name in predictions.column_names:
            raise ShardError(shard.shard_id, shard.path,
                             f"the model returned a column {name!r}, which --key-columns also writes: rename the "
                             "model's column or leave it out of --key-columns")
        predictions = predictions.add_column(i, name, batch.column(name))
    return predictions


RERUN = "the input changed while the run was going; rerun to score the new version"


def _changed(display: str, planned: str, now: str, how: str) -> InputChanged:
    return InputChanged(f"input file {display} {how}: fingerprint {planned} when planned, {now} now: {RERUN}")


def _fingerprint_now(loc: Location, path: str) -> str:
    """The file's fingerprint as planning would compute it now (for the message only), or what prevents it."""
    try:
        return read_footer(loc, path, loc.fs.get_file_info(path).mtime_ns).fingerprint
    except FileNotFoundError:
        return "none (the file is gone)"
    except (ValueError, OSError) as exc:
        return f"none ({exc})"


def open_planned(loc: Location, shard: Shard) -> tuple[pa.NativeFile, Footer]:
    """Open the shard's file and check that it is the planned one: the same fingerprint (computed by
    planning.footer_of, as planning did) and the planned rows in the shard's row groups. Raises InputChanged if not,
    ReadError when the file cannot be read."""
    display = loc.display(shard.path)
    try:
        f = loc.fs.open_input_file(shard.path)
    except FileNotFoundError as exc:
        raise _changed(display, shard.fingerprint, "none", "is gone since the run planned it") from exc
    except OSError as exc:
        raise ReadError(exc, 0) from exc
    try:
        footer = footer_of(loc, f, lambda: loc.fs.get_file_info(shard.path).mtime_ns)
    except ValueError as exc:  # planning read this footer fine: the file was replaced by one that is not Parquet
        f.close()
        raise _changed(display, shard.fingerprint, f"none ({exc})", "was replaced since the run planned it") from exc
    except OSError as exc:
        f.close()
        raise ReadError(exc, 0) from exc
    md = footer.metadata
    groups = shard.row_groups if shard.row_groups is not None else range(md.num_row_groups)
    rows = sum(md.row_group(i).num_rows for i in groups if i < md.num_row_groups)
    if footer.fingerprint != shard.fingerprint or max(groups, default=-1) >= md.num_row_groups \
            or rows != shard.num_rows:
        f.close()
        rows_now = f" (its row groups hold {rows} rows, {shard.num_rows} planned)" if rows != shard.num_rows else ""
        raise _changed(display, shard.fingerprint, footer.fingerprint,
                       "was replaced since the run planned it" + rows_now)
    return f, footer


def check_unchanged(loc: Location, shard: Shard, footer: Footer) -> None:
    """After the shard's last batch, before its output is published: the file must still be the one opened.

    A rewrite during the read is otherwise unseen: pyarrow reads a file in ranged reads, and on S3 each is a GET
    of the key alone, not pinned to the version that was opened (ObjectInputFile::ReadAt -> GetObjectRange in
    arrow's s3fs.cc sets bucket, key and range only), so the batches can come from two versions.
    """
    try:
        now = file_stamp(loc, shard.path)
    except FileNotFoundError:
        now = None
    if now != (footer.size, footer.version):
        raise _changed(loc.display(shard.path), footer.fingerprint, _fingerprint_now(loc, shard.path),
                       "changed while this shard was reading it")


def refuse_partition_columns(predictions: pa.Table, job: ScoringJob, shard: Shard) -> None:
    """A prediction column named like a partition key of the output's folders stops the run
    (planning.partition_clashes says what readers make of it); the key columns were checked before the run."""
    model_columns = [c for c in predictions.column_names if c not in job.key_columns]
    clashes = partition_clashes(model_columns, dict(job.partition_keys))
    if clashes:
        column, folder = clashes[0]
        raise PartitionColumnClash(
            f"the model returns a column {column!r}, named like the partition key of the input's folder {folder} "
            f"(shard {shard.shard_id}): the output keeps that folder, and readers would take the column for the "
            "partition key (pyarrow and pandas refuse to read such an output, DuckDB returns the folder's value "
            "in place of the predictions). Rename the model's column")


class _HashingSink:
    """A file-like sink that counts and hashes what the Parquet writer writes through it."""

    def __init__(self, out: pa.NativeFile):
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += len(memoryview(data))
        return self._out.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True  # the stream itself is closed by write_atomic


def _rows(first: int, table: pa.Table) -> str:
    return f"{first}..{first + table.num_rows - 1}"


def _known_types(tables: list[pa.Table], names: list[str]) -> dict[str, pa.DataType]:
    """Each column's type as the first table in which it is not all null shows it (schema_rule.undetermined)."""
    types: dict[str, pa.DataType] = {}
    for table in tables:
        types.update({name: column.type for name, column in zip(table.column_names, table.columns, strict=True)
                      if name in names and name not in types and not schema_rule.undetermined(column)})
    return types


class _PredictionsFile:
    """The shard's predictions file, its schema fixed once and every batch conformed to it (schema_rule.conform).

    The schema is the output's (`expected`, from the shards committed before) when known. Otherwise the first type
    each column shows fixes it: a column all null in a batch says nothing of its type, so such batches wait (at most
    PENDING_BYTES of them; past that, or at the shard's end, an all-null column keeps the type it came with).
    """

    def __init__(self, sink: _HashingSink, job: ScoringJob, expected: str, fail: Callable[[str], ShardError]):
        self.sink, self.job, self.expected, self.fail = sink, job, expected, fail
        self.schema: pa.Schema | None = None
        self.origin = ""  # what fixed the schema, for the message of a batch that does not fit it
        self.pending: list[tuple[pa.Table, int]] = []  # (predictions, their first row) until the schema is fixed
        self.writer: pq.ParquetWriter | None = None
        self.behind: BackgroundWriter | None = None

    def add(self, predictions: pa.Table, first_row: int) -> None:
        self.pending.append((predictions, first_row))
        if self.schema is None:
            fixed = self._target(final=False)
            if fixed is None:
                return
            self._open(*fixed)
        self._flush()

    def _flush(self) -> None:
        for table, first in self.pending:
            self._write(table, _rows(first, table))
        self.pending.clear()

    def _target(self, final: bool) -> tuple[pa.Schema, str] | None:
        """The file's schema and what fixed it, once the batches seen tell every column's type (or `final`)."""
        first, tables = self.pending[0][0].schema, [table for table, _ in self.pending]
        if self.expected:
            try:
                like = first if schema_rule.schema_text(first) == self.expected else schema_rule.from_text(self.expected, first)
            except schema_rule.SchemaConflict as exc:
                raise self.fail(f"the model's predictions for rows {_rows(self.pending[0][1], tables[0])} do not "
                                f"fit the output's types (fixed by the output's other shards): {exc}") from None
            return like, "the output's other shards"
        types = _known_types(tables, first.names)
        if len(types) < len(first) and not final and sum(t.nbytes for t in tables) <= PENDING_BYTES:
            return None
        schema = pa.schema([f.with_type(types.get(f.name, f.type)) for f in first], metadata=first.metadata)
        return schema, f"rows {self.pending[0][1]}..{self.pending[-1][1] + tables[-1].num_rows - 1} of this shard"

    def _open(self, schema: pa.Schema, origin: str) -> None:
        self.schema, self.origin = schema, origin
        self.writer = pq.ParquetWriter(self.sink, schema, compression=self.job.compression)
        if self.job.overlap:
            self.behind = BackgroundWriter(self.writer.write_table)

    def _write(self, predictions: pa.Table, rows: str) -> None:
        assert self.schema is not None and self.writer is not None
        try:
            predictions = schema_rule.conform(predictions, self.schema)
        except schema_rule.SchemaConflict as exc:
            raise self.fail(f"the model's predictions for rows {rows} do not fit the output's types (fixed by "
                            f"{self.origin}): {exc}") from None
        if self.behind is not None:
            self.behind.submit(predictions)
        else:
            self.writer.write_table(predictions)

    def finish(self) -> str:
        """Write what still waits and wait for the writes; the file's prediction schema as schema_text."""
        if self.pending:
            fixed = self._target(final=True)
            assert fixed is not None  # a final target is always fixed
            self._open(*fixed)
            self._flush()
        if self.behind is not None:
            self.behind.close()
        return schema_rule.schema_text(self.schema) if self.schema is not None else ""

    def close(self) -> None:
        if self.behind is not None:
            self.behind.stop()  # a writer thread must be done before its writer closes
        if self.writer is not None:
            self.writer.close()


def _open_parquet(loc: Location, shard: Shard) -> tuple[pa.NativeFile, pq.ParquetFile, Footer]:
    """The shard's file, checked to be the planned one (`open_planned`), and its Parquet reader: with the footer
    already read (`metadata`: pyarrow reads no footer of its own, ParquetReader.open passes it to
    FileReaderBuilder) and INT96 timestamps in planning.INT96_UNIT, as planning read them."""
    f, footer = open_planned(loc, shard)
    try:
        return f, pq.ParquetFile(f, metadata=footer.metadata, coerce_int96_timestamp_unit=INT96_UNIT), footer
    except (OSError, *DATA_ERRORS) as exc:
        f.close()
        raise ReadError(exc, 0) from exc


def _call(scorer: Scorer, table: pa.Table, rows: str, fail: Callable[[str], ShardError]) -> pa.Table:
    """The model's predictions for `table`. An answer that cannot be used, or sys.exit, fails the shard whatever
    --max-bad-rows allows; any other exception is the model's on these rows, and propagates as it is."""
    try:
        return scorer(table)
    except BatchError as exc:  # an answer that cannot be used, whatever the model meant
        raise fail(f"the model's answer for rows {rows} cannot be used: {exc}") from exc
    except SystemExit as exc:  # not the worker's end: Ray would let it end the worker process
        code = "" if exc.code is None else repr(exc.code)
        raise fail(f"the model called sys.exit({code}) while scoring rows {rows}") from None


def first_predictions(shard: Shard, scorer: Scorer, job: ScoringJob, rows: int) -> pa.Table:
    """The model's predictions, keys included, for the shard's first `rows` rows, read and scored as a worker reads
    and scores them: the columns the output's files would hold (table_fit compares them with a table's)."""
    f, parquet, _ = _open_parquet(job.input(), shard)
    with f:
        columns = _read_columns(scorer, job, parquet.schema_arrow, shard)
        batches = _batches(parquet, shard, replace(job, batch_size=rows), columns)
        try:
            table = next(batches)
        finally:
            batches.close()

    def fail(reason: str) -> ShardError:
        return ShardError(shard.shard_id, shard.path, reason)

    return _with_keys(_call(scorer, table, _rows(0, table), fail), table, job.key_columns, shard)


@dataclass
class Written:
    """What a shard's predictions file holds once written."""

    rows_in: int = 0
    rows_out: int = 0
    prediction_schema: str = ""  # as schema_rule.schema_text
    sha256: str = ""  # of the file's bytes
    first_batch_seconds: float = 0.0  # from the shard's start to its first batch scored
    loaded_sources: dict[str, str] = field(default_factory=dict)  # model.loaded_sources after the first batch
    rejected: pa.Table | None = None  # the rows the model failed on, within the budget (quarantine.Rejections)


class ShardWriter:
    """Writes one shard's predictions file, as storage.write_atomic's `write`: reads the shard batch by batch
    (checked to be the planned file), scores each batch, appends the predictions, and checks before the file is
    published that the input did not change meanwhile. `written` says what the file holds. With a --max-bad-rows
    budget, a batch the model raises on is bisected (quarantine.Isolator): its other rows are written, the failing
    ones kept in `written.rejected`. With --batch-timeout (`watch`), every model call is bounded (watchdog.py)."""

    def __init__(self, shard: Shard, scorer: Scorer, job: ScoringJob, expected_schema: str = "",
                 on_batch: Callable[[int], None] | None = None, watch: Watch | None = None):
        self.shard, self.scorer, self.job = shard, scorer, job
        self.expected_schema, self.on_batch, self.watch = expected_schema, on_batch, watch
        self.input = job.input()
        self.started = time.time()
        self.written = Written()
        self.isolator: Isolator | None = None
        self.first_row = 0  # the shard's first row's position in the input file

    def fail(self, reason: str) -> ShardError:
        return ShardError(self.shard.shard_id, self.shard.path, reason)

    def __call__(self, out: pa.NativeFile) -> None:
        sink = _HashingSink(out)
        f, parquet, footer = _open_parquet(self.input, self.shard)
        with f:
            columns = _read_columns(self.scorer, self.job, parquet.schema_arrow, self.shard)
            self._isolate(footer)
            self._write_batches(_batches(parquet, self.shard, self.job, columns),
                                _PredictionsFile(sink, self.job, self.expected_schema, self.fail))
        if self.written.rows_in == 0:
            raise self.fail("empty shard: it has no rows to score")
        if self.isolator is not None and self.isolator.rejections:
            if not self.written.rows_out:  # no predictions file can be written, and few bad rows this is not
                raise self.fail(f"the model failed on every one of its {self.written.rows_in} rows (the first, input "
                                f"row {self.first_row}: {self.isolator.rejections.messages[0]})")
            self.written.rejected = self.isolator.rejections.table()
        check_unchanged(self.input, self.shard, footer)
        self.written.sha256 = sink.sha256.hexdigest()

    def _write_batches(self, batches: Iterator[pa.Table], output: _PredictionsFile) -> None:
        if self.job.overlap:
            batches = prefetch(batches)
        try:
            for table in batches:
                self._score(table, output)
            self.written.prediction_schema = output.finish()
        finally:
            if hasattr(batches, "close"):
                batches.close()  # a reader thread must be done before its file closes
            output.close()

    def _isolate(self, footer: Footer) -> None:
        """With a budget (--max-bad-rows), the bisection that isolates the rows the model fails on."""
        groups, md = self.shard.row_groups, footer.metadata
        self.first_row = sum(md.row_group(i).num_rows for i in range(groups[0])) if groups else 0
        if not self.job.max_bad_rows:
            return
        allowed = budget(self.job.max_bad_rows, self.shard.num_rows)
        text = f"--max-bad-rows {self.job.max_bad_rows:g}" + (
            f" ({allowed:,} of this shard's {self.shard.num_rows:,} rows)" if self.job.max_bad_rows < 1 else "")
        self.isolator = Isolator(self._model, Rejections(self.shard.relpath, self.job.key_columns), allowed=allowed,
                                 budget_text=text, cap=call_cap(self.job.batch_size, allowed))

    def _model(self, table: pa.Table, row: int) -> pa.Table:
        """The model's answer for `table`, whose first row is input row `row`: `_call`, watched by --batch-timeout."""
        rows = _rows(row - self.first_row, table)
        if self.watch is None:
            return _call(self.scorer, table, rows, self.fail)
        with self.watch.call(row, table.num_rows, f"shard {self.shard.shard_id}"):
            return _call(self.scorer, table, rows, self.fail)

    def _predictions(self, table: pa.Table) -> list[Part]:
        """The batch's predictions: whole, or (when the model raised and a budget allows) bisected into the runs
        of rows it could score, each with its offset in the batch."""
        row = self.first_row + self.written.rows_in
        try:
            return [(0, table, self._model(table, row))]
        except ShardError:
            raise
        except Exception as exc:  # the model's error on some of these rows: the shard's, or find them
            if self.isolator is None:  # strict (--max-bad-rows 0): the shard's own fault
                raise self.fail(f"the model failed on rows {_rows(self.written.rows_in, table)}: "
                                f"{type(exc).__name__}: {exc}") from exc
            try:
                return merged(self.isolator.score(table, row, exc))
            except OverBudget as over:
                raise self.fail(str(over)) from None

    def _score(self, table: pa.Table, output: _PredictionsFile) -> None:
        written = self.written
        for offset, rows, predictions in self._predictions(table):
            predictions = _with_keys(predictions, rows, self.job.key_columns, self.shard)
            if not written.rows_out:  # the first predictions: what the model answers is known now
                refuse_partition_columns(predictions, self.job, self.shard)
            output.add(predictions, written.rows_in + offset)
            written.rows_out += predictions.num_rows
        if not written.rows_in:  # the first batch: what the model loads is known now
            written.loaded_sources = loaded_sources(self.scorer)
        written.rows_in += table.num_rows
        if self.on_batch:
            self.on_batch(table.num_rows)
        written.first_batch_seconds = written.first_batch_seconds or time.time() - self.started


def score_shard(shard: Shard, scorer: Scorer, job: ScoringJob, worker: dict[str, Any],
                on_batch: Callable[[int], None] | None = None, expected_schema: str = "",
                before_publish: Callable[[], None] | None = None, watch: Watch | None = None) -> ShardResult:
    """Score one shard end to end and commit it.

    Raises ShardError for the shard's own faults (its data, or the model on its rows); OSError for input or
    output that could not be reached, which may pass on a retry; LeaseLost when another run took the output over
    (checked right before the file is moved into place and before the commit record is written: lease.check_fence).
    `expected_schema` is the output's prediction schema when it is already fixed: predictions are cast to it where
    they widen into it without loss (schema_rule), and a model that returns anything else fails the shard before
    anything is written.
    """
    output = job.output()
    out_path = output.data_path(shard)
    writer = ShardWriter(shard, scorer, job, expected_schema, on_batch, watch)

    def publish() -> None:
        job.fence(output.loc, f"shard {shard.shard_id}'s file {output.loc.display(out_path)}")
        if before_publish is not None:
            before_publish()

    try:
        write_atomic(output.loc, out_path, writer, publish, job.lease_generation)
    except ReadError as exc:
        cause = exc.cause
        where = f"reading rows from {exc.first_row}" if exc.first_row else "reading it"
        if isinstance(cause, DATA_ERRORS) or writer.input.is_local:  # a local file that fails to decode is its data
            raise writer.fail(f"unreadable data ({where}): {type(cause).__name__}: {cause}") from cause
        raise cause from None  # an object store that did not answer: worth another attempt
    rejected = _write_rejected(shard, job, output, writer.written.rejected)
    return _commit(shard, job, output, writer, worker, rejected)


def _write_rejected(shard: Shard, job: ScoringJob, output: Output, table: pa.Table | None) -> dict[str, Any]:
    """The shard's quarantine file, written as its predictions are (atomically, fenced by the lease) and after
    them, before the commit record: a crash between leaves no record, and the rerun rewrites both. Its fields of
    the commit record (none when no row was rejected)."""
    if table is None:
        return {}
    path = output.rejected_path(shard)
    hashed: list[_HashingSink] = []

    def write(out: pa.NativeFile) -> None:
        hashed.append(_HashingSink(out))
        with pq.ParquetWriter(hashed[0], table.schema, compression=job.compression) as parquet:
            parquet.write_table(table)

    write_atomic(output.loc, path, write,
                 lambda: job.fence(output.loc, f"shard {shard.shard_id}'s rejected rows {output.loc.display(path)}"),
                 job.lease_generation)
    size, mtime_ns = stamp(output.loc.fs.get_file_info(path))
    return {"rows_rejected": table.num_rows, "rejected": shard.rejected_relpath, "rejected_size": size,
            "rejected_mtime_ns": mtime_ns, "rejected_sha256": hashed[0].sha256.hexdigest()}


def _commit(shard: Shard, job: ScoringJob, output: Output, writer: ShardWriter, worker: dict[str, Any],
            rejected: dict[str, Any]) -> ShardResult:
    """The shard's commit record, written once its files are in place."""
    size, mtime_ns = stamp(output.loc.fs.get_file_info(output.data_path(shard)))
    w = writer.written
    result = ShardResult(
        shard_id=shard.shard_id, status=ShardStatus.COMMITTED, input_path=writer.input.display(shard.path),
        input_fingerprint=shard.fingerprint, model_identity=job.model_identity,
        output_options=job.output_options, output=output.data_relpath(shard), rows_in=w.rows_in, rows_out=w.rows_out,
        seconds=round(time.time() - writer.started, 4), attempt_started_at=writer.started, worker=worker,
        output_size=size, output_mtime_ns=mtime_ns, output_sha256=w.sha256,
        prediction_schema=w.prediction_schema, run_id=job.run_id, first_batch_seconds=round(w.first_batch_seconds, 4),
        loaded_sources=w.loaded_sources, lease_generation=job.lease_generation, **rejected,
    )
    job.fence(output.loc, f"shard {shard.shard_id}'s commit record")
    output.commit(result)
    return result


def commit_empty(shard: Shard, job: ScoringJob, input_display: str) -> ShardResult:
    """A zero-row shard (Spark writes such files): committed with no output file, since there is nothing to score."""
    result = ShardResult(shard_id=shard.shard_id, status=ShardStatus.COMMITTED, input_path=input_display,
                         input_fingerprint=shard.fingerprint, model_identity=job.model_identity,
                         output_options=job.output_options, run_id=job.run_id, reason="zero rows: no output file",
                         lease_generation=job.lease_generation)
    job.output().commit(result)
    return result
