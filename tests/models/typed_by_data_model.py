"""A model whose prediction type is chosen by the data: each batch's `kind` column (its first row) names the type.

`kind` is an Arrow type name ("int64", "int32", "bool", "float", "double"), "null" (Arrow's null type, what pandas
gives for a column of None) or "nan" (a double column of nothing but nulls, what a pandas Series of NaN becomes).
The values are the batch's `v` column cast to that type, so a test reads back exactly what each batch returned.
"""

import pyarrow as pa


class TypedByDataModel:
    batch_format = "pyarrow"
    columns = ["kind", "v"]

    def __call__(self, batch: pa.Table) -> pa.Table:
        kind = batch.column("kind")[0].as_py()
        n = batch.num_rows
        if kind == "null":
            return pa.table({"prediction": pa.nulls(n)})
        if kind == "nan":
            return pa.table({"prediction": pa.array([None] * n, pa.float64())})
        return pa.table({"prediction": batch.column("v").cast(pa.type_for_alias(kind))})


def load_model():
    return TypedByDataModel()
