"""Batch scoring of one shard: stream its rows, score them, write the predictions, commit. Knows nothing of Ray.

Memory stays bounded by the batch size: rows are read batch by batch (only the columns the model needs plus
the key columns), and each batch's predictions are appended to the output file as a row group.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .commit import OutputStore, ShardResult
from .errors import ShardError
from .model import Scorer
from .pipeline import BackgroundWriter, prefetch
from .planning import Shard
from .storage import Location, StorageOptions, resolve, stamp, write_atomic

#: Errors decoding a shard that mean "this shard's data is bad": retrying cannot help.
DATA_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


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

    def input(self) -> Location:
        return resolve(self.input_uri, self.storage)

    def output(self) -> OutputStore:
        return OutputStore(resolve(self.output_uri, self.storage))


class ReadError(Exception):
    """Reading the shard's input failed (as opposed to the model or the output): `cause` says how."""

    def __init__(self, cause: BaseException, first_row: int):
        super().__init__(str(cause))
        self.cause = cause
        self.first_row = first_row


def schema_text(schema: pa.Schema) -> str:
    """A schema's columns and types, the form predictions are compared in (metadata and nullability aside)."""
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def schema_difference(expected: str, actual: str) -> str:
    """Which columns differ between two schema_text forms, named with both types."""
    def columns(text: str) -> dict[str, str]:
        return dict(part.split(": ", 1) for part in text.split(", ") if part)

    want, got = columns(expected), columns(actual)
    diffs = [f"column {name!r} is {got[name]} here but {want[name]} in the others"
             for name in want if name in got and got[name] != want[name]]
    diffs += [f"column {name!r} is missing here" for name in want if name not in got]
    diffs += [f"column {name!r} is extra here" for name in got if name not in want]
    return "; ".join(diffs) or f"{actual} instead of {expected}"


def _read_columns(scorer: Scorer, job: ScoringJob, schema: pa.Schema, shard: Shard) -> list[str] | None:
    if scorer.columns is None:
        return None  # the model declared nothing: give it every column, like the Ray example
    wanted = list(dict.fromkeys([*scorer.columns, *job.key_columns]))
    missing = [c for c in wanted if schema.get_field_index(c) < 0]
    if missing:
        raise ShardError(shard.shard_id, shard.path, f"missing column(s) {missing}; the file has {schema.names}")
    return wanted


def _batches(parquet: pq.ParquetFile, shard: Shard, job: ScoringJob, columns: list[str] | None) -> Iterator[pa.Table]:
    """The shard's rows as tables of at most batch_size rows, widened where the plan said; read errors wrapped."""
    casts = {name: t for name, t in job.casts if columns is None or name in columns}
    rows = 0
    batches = parquet.iter_batches(batch_size=job.batch_size, row_groups=shard.row_groups, columns=columns,
                                   use_threads=False)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, *DATA_ERRORS) as exc:
            raise ReadError(exc, rows) from exc
        table = pa.Table.from_batches([batch])
        for name, target in casts.items():
            idx = table.schema.get_field_index(name)
            if idx >= 0 and not table.schema.field(idx).type.equals(target):
                table = table.set_column(idx, name, table.column(idx).cast(target))
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


def score_shard(shard: Shard, scorer: Scorer, job: ScoringJob, worker: dict[str, Any],
                on_batch: Callable[[int], None] | None = None, expected_schema: str = "",
                before_publish: Callable[[], None] | None = None) -> ShardResult:
    """Score one shard end to end and commit it.

    Raises ShardError for the shard's own faults (its data, or the model on its rows); OSError for input or
    output that could not be reached, which may pass on a retry. `expected_schema` is the output's prediction
    schema when it is already fixed: a model that returns another one fails the shard before anything is written.
    """
    started = time.time()
    in_loc, store = job.input(), job.output()
    out_path = store.data_path(shard)
    rows_in = rows_out = 0
    first_batch = 0.0
    predictions_schema = ""
    digest = hashlib.sha256()

    def fail(reason: str) -> ShardError:
        return ShardError(shard.shard_id, shard.path, reason)

    def write(out: pa.NativeFile) -> None:
        nonlocal rows_in, rows_out, predictions_schema, digest, first_batch
        sink = _HashingSink(out)
        digest = sink.sha256
        try:
            f = in_loc.fs.open_input_file(shard.path)
        except OSError as exc:
            raise ReadError(exc, 0) from exc
        with f:
            try:
                parquet = pq.ParquetFile(f)
            except (OSError, *DATA_ERRORS) as exc:
                raise ReadError(exc, 0) from exc
            columns = _read_columns(scorer, job, parquet.schema_arrow, shard)
            writer: pq.ParquetWriter | None = None
            behind: BackgroundWriter | None = None
            batches = _batches(parquet, shard, job, columns)
            if job.overlap:
                batches = prefetch(batches)
            try:
                for table in batches:
                    last = rows_in + table.num_rows - 1
                    try:
                        predictions = scorer(table)
                    except Exception as exc:  # the user's model failed on these rows: the shard's own fault
                        raise fail(f"the model failed on rows {rows_in}..{last}: {type(exc).__name__}: {exc}") from exc
                    except SystemExit as exc:  # not the worker's end: Ray would let it end the worker process
                        code = "" if exc.code is None else repr(exc.code)
                        raise fail(f"the model called sys.exit({code}) while scoring rows {rows_in}..{last}") from None
                    predictions = _with_keys(predictions, table, job.key_columns, shard)
                    if writer is None:
                        predictions_schema = schema_text(predictions.schema)
                        if expected_schema and predictions_schema != expected_schema:
                            raise fail("the model's predictions have another schema than the rest of the output's: "
                                       + schema_difference(expected_schema, predictions_schema)
                                       + ". A model must return the same columns and types for every batch")
                        writer = pq.ParquetWriter(sink, predictions.schema, compression=job.compression)
                        if job.overlap:
                            behind = BackgroundWriter(writer.write_table)
                    elif not predictions.schema.equals(writer.schema):
                        try:
                            predictions = predictions.cast(writer.schema)
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                            raise fail(f"the model's predictions for rows {rows_in}..{last} have another schema "
                                       "than for the rows before: " + schema_difference(
                                           predictions_schema, schema_text(predictions.schema))) from exc
                    if behind is not None:
                        behind.submit(predictions)
                    else:
                        writer.write_table(predictions)
                    rows_in += table.num_rows
                    rows_out += predictions.num_rows
                    if on_batch:
                        on_batch(table.num_rows)
                    if not first_batch:
                        first_batch = time.time() - started
                if behind is not None:
                    behind.close()
            finally:
                if hasattr(batches, "close"):
                    batches.close()  # a reader thread must be done before its file closes
                if behind is not None:
                    behind.stop()  # and a writer thread before its writer closes
                if writer is not None:
                    writer.close()
        if rows_in == 0:
            raise fail("empty shard: it has no rows to score")

    try:
        write_atomic(store.loc, out_path, write, before_publish)
    except ReadError as exc:
        cause = exc.cause
        where = f"reading rows from {exc.first_row}" if exc.first_row else "reading it"
        if isinstance(cause, DATA_ERRORS) or in_loc.is_local:  # a local file that fails to decode is its data
            raise fail(f"unreadable data ({where}): {type(cause).__name__}: {cause}") from cause
        raise cause from None  # an object store that did not answer: worth another attempt
    size, mtime_ns = stamp(store.loc.fs.get_file_info(out_path))
    result = ShardResult(
        shard_id=shard.shard_id, status="committed", input_path=in_loc.display(shard.path),
        input_fingerprint=shard.fingerprint, model_identity=job.model_identity,
        output_options=job.output_options, output=shard.output_relpath, rows_in=rows_in, rows_out=rows_out,
        seconds=round(time.time() - started, 4), attempt_started_at=started, worker=worker,
        output_size=size, output_mtime_ns=mtime_ns, output_sha256=digest.hexdigest(),
        prediction_schema=predictions_schema, run_id=job.run_id, first_batch_seconds=round(first_batch, 4),
    )
    store.commit(result)
    return result


def commit_empty(shard: Shard, job: ScoringJob, input_display: str) -> ShardResult:
    """A zero-row shard (Spark writes such files): committed with no output file, since there is nothing to score."""
    result = ShardResult(shard_id=shard.shard_id, status="committed", input_path=input_display,
                         input_fingerprint=shard.fingerprint, model_identity=job.model_identity,
                         output_options=job.output_options, run_id=job.run_id, reason="zero rows: no output file")
    job.output().commit(result)
    return result


def failed(shard_id: str, path: str, reason: str, worker: dict[str, Any] | None = None) -> ShardResult:
    return ShardResult(shard_id=shard_id, status="failed", input_path=path, reason=reason, worker=worker or {})
