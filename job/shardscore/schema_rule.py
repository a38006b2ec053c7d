"""The one rule for prediction schemas. The first shard committed to an output fixes its columns and types
(`SchemaGate`); every later batch and shard must have them. A batch's or a shard's type may only widen, without
loss, into the type the output has (int32 into int64, float32 into float64, string into large_string); never narrow
(int64 into int32, float64 into float32) or change kind (int into bool). A column that is all null (Arrow's null
type, or every value null) fits any type. The lossless pairs themselves are planning.widen's, the rule for input
columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from .planning import widen

if TYPE_CHECKING:
    from .commit import ShardResult

ADVICE = ("A model must return the same columns and types for every batch and shard; only a lossless widening of "
          "the type the output has is cast (int32 into int64, float32 into float64)")


class SchemaConflict(ValueError):
    """Predictions whose columns or types do not fit the output's: the message names the column and both types."""


def fits(actual: pa.DataType, target: pa.DataType) -> bool:
    """Whether values of type `actual` convert to `target` without loss."""
    wider = widen(actual, target)
    return pa.types.is_null(actual) or (wider is not None and wider.equals(target))


def undetermined(column: pa.ChunkedArray) -> bool:
    """A column that says nothing of its type: every value null (a zero-row column included)."""
    return column.null_count == len(column)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s types, each column cast losslessly (all-null columns become nulls of the type).

    Raises SchemaConflict, naming the column and both types, when a column's type does not fit or the columns
    are not the same names in the same order.
    """
    if table.column_names != schema.names:
        raise SchemaConflict(f"columns {table.column_names} here but {schema.names} in the others. {ADVICE}")
    columns = []
    for name, column, field in zip(table.column_names, table.columns, schema, strict=True):
        if column.type.equals(field.type):
            columns.append(column)
        elif undetermined(column):
            columns.append(pa.nulls(len(column), field.type))
        elif fits(column.type, field.type):
            columns.append(column.cast(field.type))
        else:
            raise SchemaConflict(f"column {name!r} is {column.type} here but {field.type} in the others. {ADVICE}")
    return pa.Table.from_arrays(columns, schema=schema)


def from_text(text: str, like: pa.Schema) -> pa.Schema:
    """The schema whose schema_text is `text`, its types rebuilt from `like` where they read the same and
    from pyarrow's type aliases (pyarrow.type_for_alias) otherwise; raises SchemaConflict for a type that neither
    gives (a nested or time-zoned type that differs from the batch's: only the same type fits then)."""
    fields = []
    for part in filter(None, text.split(", ")):
        name, _, type_text = part.partition(": ")
        idx = like.get_field_index(name)
        if idx >= 0 and str(like.field(idx).type) == type_text:
            fields.append(pa.field(name, like.field(idx).type))
            continue
        try:
            fields.append(pa.field(name, pa.type_for_alias(type_text)))
        except ValueError:
            got = like.field(idx).type if idx >= 0 else "missing"
            raise SchemaConflict(f"column {name!r} is {got} here but {type_text} in the others. {ADVICE}") from None
    return pa.schema(fields)


def schema_text(schema: pa.Schema) -> str:
    """A schema's columns and types, the form predictions are compared in (metadata and nullability aside)."""
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _columns(text: str) -> dict[str, str]:
    """A schema_text's columns: name -> type as text."""
    return dict(part.split(": ", 1) for part in text.split(", ") if part)


def schema_difference(expected: str, actual: str) -> str:
    """Which columns differ between two schema_text forms, named with both types."""
    want, got = _columns(expected), _columns(actual)
    diffs = [f"column {name!r} is {got[name]} here but {want[name]} in the others"
             for name in want if name in got and got[name] != want[name]]
    diffs += [f"column {name!r} is missing here" for name in want if name not in got]
    diffs += [f"column {name!r} is extra here" for name in got if name not in want]
    return "; ".join(diffs) or f"{actual} instead of {expected}"


@dataclass
class SchemaGate:
    """The output's prediction schema (as schema_text) and what fixed it.

    The driver keeps one for the run, started from the shards already committed, or else from the table the output
    is (an existing Iceberg table's schema: iceberg.IcebergTable.schema_gate); each worker keeps one for its
    bundle. Shards scored while it is fixed are conformed to it in the worker (scoring's predictions file); a
    shard of the first wave, scored before any was committed, is checked here.
    """

    text: str = ""
    fixed_by: str = ""  # what fixed it: "shard <id>", or the table the output is ("the Iceberg table ns.t")

    @classmethod
    def of(cls, results: "list[ShardResult]") -> "SchemaGate":
        """The gate fixed by the first of these results that wrote predictions."""
        gate = cls()
        for result in results:
            if gate.text:
                break
            gate.admit(result)
        return gate

    def admit(self, result: "ShardResult") -> str | None:
        """Why the committed `result` breaks the output's schema, or None (the first one with predictions fixes it)."""
        if not (result.committed and result.output and result.prediction_schema):
            return None
        if not self.text:
            self.text, self.fixed_by = result.prediction_schema, f"shard {result.shard_id}"
            return None
        if result.prediction_schema == self.text:
            return None
        return (f"the model's predictions have another schema than those of {self.fixed_by}: "
                + schema_difference(self.text, result.prediction_schema)
                + ". A model must return the same columns and types for every shard")

    @staticmethod
    def problems(committed: "list[ShardResult]") -> list[str]:
        """The verification's view: committed shards of more than one prediction schema."""
        schemas = {r.prediction_schema for r in committed if r.prediction_schema}
        if len(schemas) > 1:
            return ["the committed shards have different prediction schemas: " + " | ".join(sorted(schemas))]
        return []


def misfit(predictions: pa.Table, expected: str, where: str) -> str:
    """Why `predictions` do not fit the columns `expected` (a schema_text) of `where` under the rule above (conform),
    naming each column at fault with both types; "" when they fit."""
    try:
        conform(predictions, from_text(expected, predictions.schema))
        return ""
    except SchemaConflict:
        pass
    want, diffs = _columns(expected), []
    for name, type_text in want.items():
        if name not in predictions.column_names:
            diffs.append(f"column {name!r} ({type_text}) of {where} is not among the predictions' columns")
            continue
        column = predictions.select([name])
        try:
            conform(column, from_text(f"{name}: {type_text}", column.schema))
        except SchemaConflict:
            diffs.append(f"column {name!r} is {column.schema.field(0).type} in the predictions but {type_text} in "
                         f"{where}")
    diffs += [f"column {field.name!r} ({field.type}) of the predictions is not in {where}"
              for field in predictions.schema if field.name not in want]
    return "; ".join(diffs) or (f"the columns are {predictions.column_names} in the predictions but {list(want)} in "
                                f"{where}, in another order")
