"""The rule predictions meet against a table's columns (schema_rule.misfit): lossless widening fits; anything else
is named column by column with both types."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shardscore.schema_rule import misfit

WHERE = "the table"


@pytest.mark.parametrize("predictions, expected, said", [
    (pa.table({"id": pa.array([1], pa.int32()), "p": pa.array([0.5], pa.float32())}), "id: int64, p: double", ""),
    (pa.table({"id": pa.array([1], pa.int64()), "p": pa.nulls(1)}), "id: int64, p: double", ""),
    (pa.table({"id": pa.array([1], pa.int64()), "p": pa.array([0.5])}), "id: int32, p: double",
     "column 'id' is int64 in the predictions but int32 in the table"),
    (pa.table({"id": pa.array([1], pa.int64()), "p": pa.array([0.5])}), "id: int64, q: double",
     "column 'q' (double) of the table is not among the predictions' columns; column 'p' (double) of the predictions "
     "is not in the table"),
    (pa.table({"p": pa.array([0.5]), "id": pa.array([1], pa.int64())}), "id: int64, p: double",
     "the columns are ['p', 'id'] in the predictions but ['id', 'p'] in the table, in another order"),
])
def test_what_fits_a_tables_columns_and_how_a_misfit_is_named(predictions, expected, said):
    assert misfit(predictions, expected, WHERE) == said
