"""Row quarantine: the rows a model raises on, found by bisecting the batch it failed on, and the table they go to.

A model that raises on one row of a batch raises on the whole batch. Splitting the batch in halves and scoring each
finds the row in about 2*log2(batch) extra calls (two per level), while every other row is still scored once in the
predictions. The rejected rows, with the error and their position in the input file, become the shard's quarantine
file (`<output>/_rejected/<shard's output file>`, planning.Shard.rejected_relpath), committed with the shard.
Knows nothing of Ray, of the output, or of how a shard is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from .errors import ShardError

#: The quarantine file's own columns, around the --key-columns: (input_file, input_row, *keys, error_type, error).
INPUT_FILE, INPUT_ROW, ERROR_TYPE, ERROR = "input_file", "input_row", "error_type", "error"
OWN_COLUMNS = (INPUT_FILE, INPUT_ROW, ERROR_TYPE, ERROR)

#: An error message is kept up to this many characters: a budget of millions of rows must not hold megabytes each.
MESSAGE_CHARS = 2000


def budget(max_bad_rows: float, rows: int) -> int:
    """The rows of a shard of `rows` rows that may be rejected: a count as given, or a fraction (0 < f < 1) of the
    shard's rows, rounded down (a fraction never allows more than it says)."""
    if 0 < max_bad_rows < 1:
        return math.floor(max_bad_rows * rows)
    return int(max_bad_rows)


def call_cap(batch_size: int, allowed: int) -> int:
    """The most extra model calls a shard may spend isolating rows: what isolating one more row than its budget
    allows can take (two calls per level of the bisection), after which the shard fails anyway. A model that fails
    on batches rather than rows (out of memory above some size) is stopped by it instead of bisecting every batch."""
    return 2 * (math.ceil(math.log2(max(batch_size, 2))) + 1) * (allowed + 1)


class WholeBatch(Exception):
    """The model's error on a batch as a whole, not on some of its rows: they are rejected together, not split."""


class OverBudget(Exception):
    """The shard has more bad rows than its budget, or isolating them took more calls than the cap."""


@dataclass
class Rejections:
    """The rows rejected so far in one shard: positions, errors, and the key columns' values."""

    input_file: str
    key_columns: tuple[str, ...]
    rows: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    keys: list[pa.Table] = field(default_factory=list)  # one row each, the key columns

    def add(self, row: int, exc: BaseException, batch_row: pa.Table) -> None:
        self.rows.append(row)
        self.types.append(type(exc).__name__)
        self.messages.append(str(exc)[:MESSAGE_CHARS])
        self.keys.append(batch_row.select(list(self.key_columns)))

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        """The quarantine file's rows, in input order."""
        keys = pa.concat_tables(self.keys) if self.keys else pa.table({})
        columns = {INPUT_FILE: pa.array([self.input_file] * len(self), pa.string()),
                   INPUT_ROW: pa.array(self.rows, pa.int64())}
        columns.update({name: keys.column(name).combine_chunks() for name in self.key_columns})
        columns.update({ERROR_TYPE: pa.array(self.types, pa.string()), ERROR: pa.array(self.messages, pa.string())})
        return pa.table(columns)


Part = tuple[int, pa.Table, pa.Table]  # (first row within the batch, its input rows, their predictions)


def merged(parts: list[Part]) -> list[Part]:
    """Consecutive parts joined (across the rejected rows between them) where their predictions have one schema
    (pa.concat_tables copies nothing), so that a bisected batch is written as one row group, not one per part;
    parts of other types stay apart, each conformed to the file's schema as a batch is."""
    out: list[Part] = []
    for offset, rows, predictions in parts:
        if out and out[-1][2].schema.equals(predictions.schema):
            first, before, answered = out[-1]
            out[-1] = (first, pa.concat_tables([before, rows]), pa.concat_tables([answered, predictions]))
        else:
            out.append((offset, rows, predictions))
    return out


@dataclass
class Isolator:
    """Scores a batch the model failed on by bisection: `predict` on halves, down to single rows that fail.

    `predict` raises what the model raised for rows it cannot score; anything that must fail the shard whatever
    the budget (an answer that cannot be used, sys.exit) it raises as the caller's ShardError, which passes
    through. Deterministic: the same model on the same batch rejects the same rows, so a rerun finds the same set.
    """

    predict: Callable[[pa.Table, int], pa.Table]  # (rows, the input row of the first), as the model answers them
    rejections: Rejections
    allowed: int  # the shard's budget (`budget`)
    budget_text: str  # how the messages name it: "--max-bad-rows 0.001: 2 of this shard's 2,000 rows"
    cap: int  # the most extra calls for the shard (`call_cap`)
    calls: int = 0  # extra calls so far in this shard

    def score(self, batch: pa.Table, first_row: int, error: Exception) -> list[Part]:
        """The predictions of every row of `batch` (which starts at input row `first_row`) that the model can
        score, in order; the others rejected with their error. Raises OverBudget."""
        return self._split(batch, 0, first_row, error)

    def _split(self, batch: pa.Table, start: int, first_row: int, error: Exception) -> list[Part]:
        if batch.num_rows == 1 or isinstance(error, WholeBatch):
            for i in range(batch.num_rows):
                self._reject(first_row + start + i, error, batch.slice(i, 1))
            return []
        half = batch.num_rows // 2
        parts: list[Part] = []
        for offset, rows in ((start, batch.slice(0, half)), (start + half, batch.slice(half))):
            self._count_call(first_row + offset, rows.num_rows)
            try:
                parts.append((offset, rows, self.predict(rows, first_row + offset)))
            except (OverBudget, ShardError):
                raise
            except Exception as exc:  # the model's own error on these rows: split further
                parts += self._split(rows, offset, first_row, exc)
        return parts

    def _count_call(self, row: int, rows: int) -> None:
        self.calls += 1
        if self.calls > self.cap:
            raise OverBudget(f"isolating the rows the model fails on took more than {self.cap} extra model calls, "
                             f"the most {self.budget_text} allows (at rows {row}..{row + rows - 1} "
                             "of the input file): does the model fail on batches rather than on rows?")

    def _reject(self, row: int, error: Exception, batch_row: pa.Table) -> None:
        self.rejections.add(row, error, batch_row)
        if len(self.rejections) > self.allowed:
            raise OverBudget(f"the model failed on more rows than {self.budget_text} allows: "
                             f"{len(self.rejections)} rejected, the last input row {row}: "
                             f"{type(error).__name__}: {error}")

