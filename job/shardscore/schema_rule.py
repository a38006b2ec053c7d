"""The one rule for prediction types: a batch's or a shard's type may only widen, without loss, into the type the
output already has (int32 into int64, float32 into float64, string into large_string); never narrow (int64 into
int32, float64 into float32) or change kind (int into bool). A column that is all null (Arrow's null type, or every
value null) fits any type. The lossless pairs themselves are planning.widen's, the rule for input columns.
"""

from __future__ import annotations

import pyarrow as pa

from .planning import widen

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
    """The schema whose scoring.schema_text is `text`, its types rebuilt from `like` where they read the same and
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
