"""Batch scoring of one shard: stream its rows, score them, write the predictions, commit. Knows nothing of Ray.

Memory stays bounded by the batch size: rows are read batch by batch (only the columns the model needs plus
the key columns), and each batch's predictions are appended to the output file as a row group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from .commit import OutputStore, ShardResult
from .errors import ShardError
from .model import Scorer
from .planning import Shard
from .storage import Location, StorageOptions, resolve, write_atomic

#: Errors reading a shard that mean "this shard's data is bad": retrying cannot help. Anything else (OSError
#: from a flaky object store, a killed worker) propagates so that the Ray layer retries it.
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

    def input(self) -> Location:
        return resolve(self.input_uri, self.storage)

    def output(self) -> OutputStore:
        return OutputStore(resolve(self.output_uri, self.storage))


def _read_columns(scorer: Scorer, job: ScoringJob, schema: pa.Schema, shard: Shard) -> list[str] | None:
    if scorer.columns is None:
        return None  # the model declared nothing: give it every column, like the Ray example
    wanted = list(dict.fromkeys([*scorer.columns, *job.key_columns]))
    missing = [c for c in wanted if schema.get_field_index(c) < 0]
    if missing:
        raise ShardError(shard.shard_id, shard.path, f"missing column(s) {missing}; the file has {schema.names}")
    return wanted


def _with_keys(predictions: pa.Table, batch: pa.Table, key_columns: tuple[str, ...]) -> pa.Table:
    for i, name in enumerate(key_columns):
        if name in predictions.column_names:
            predictions = predictions.drop_columns([name])
        predictions = predictions.add_column(i, name, batch.column(name))
    return predictions


def score_shard(shard: Shard, scorer: Scorer, job: ScoringJob, worker: dict[str, Any],
                on_batch: Callable[[int], None] | None = None) -> ShardResult:
    """Score one shard end to end and commit it. Raises ShardError for the shard's own faults."""
    started = time.time()
    in_loc, store = job.input(), job.output()
    out_path = store.data_path(shard)
    rows_in = rows_out = 0

    def write(sink: pa.NativeFile) -> None:
        nonlocal rows_in, rows_out
        with in_loc.fs.open_input_file(shard.path) as f:
            parquet = pq.ParquetFile(f)
            columns = _read_columns(scorer, job, parquet.schema_arrow, shard)
            writer: pq.ParquetWriter | None = None
            try:
                for batch in parquet.iter_batches(batch_size=job.batch_size, row_groups=shard.row_groups,
                                                  columns=columns, use_threads=False):
                    table = pa.Table.from_batches([batch])
                    try:
                        predictions = scorer(table)
                    except Exception as exc:  # the user's model failed on these rows: the shard's own fault
                        raise ShardError(shard.shard_id, shard.path,
                                         f"the model failed on rows {rows_in}..{rows_in + table.num_rows - 1}: "
                                         f"{type(exc).__name__}: {exc}") from exc
                    predictions = _with_keys(predictions, table, job.key_columns)
                    if writer is None:
                        writer = pq.ParquetWriter(sink, predictions.schema, compression=job.compression)
                    elif not predictions.schema.equals(writer.schema):
                        predictions = predictions.cast(writer.schema)
                    writer.write_table(predictions)
                    rows_in += table.num_rows
                    rows_out += predictions.num_rows
                    if on_batch:
                        on_batch(table.num_rows)
            finally:
                if writer is not None:
                    writer.close()
        if rows_in == 0:
            raise ShardError(shard.shard_id, shard.path, "empty shard: it has no rows to score")

    try:
        write_atomic(store.loc, out_path, write)
    except ShardError:
        raise
    except DATA_ERRORS as exc:
        raise ShardError(shard.shard_id, shard.path, f"unreadable data: {type(exc).__name__}: {exc}") from exc
    result = ShardResult(
        shard_id=shard.shard_id, status="committed", input_path=in_loc.display(shard.path),
        input_fingerprint=shard.fingerprint, model_identity=job.model_identity,
        output_options=job.output_options, output=shard.output_relpath, rows_in=rows_in, rows_out=rows_out,
        seconds=round(time.time() - started, 4), attempt_started_at=started, worker=worker,
    )
    store.commit(result)
    return result


def failed(shard_id: str, path: str, reason: str, worker: dict[str, Any] | None = None) -> ShardResult:
    return ShardResult(shard_id=shard_id, status="failed", input_path=path, reason=reason, worker=worker or {})
