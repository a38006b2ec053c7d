"""A LightGBM Booster in its native text format, as `Booster.save_model` (and `LGBMModel.booster_.save_model`)
write it: `--model shardscore.models.lightgbm_model:load_model --model-arg path=model.txt`.

The booster predicts on the features it was trained on, by name (LightGBM names a model trained on an array
`Column_0`, `Column_1`...: give `columns=a,b,c` in training order then), nulls as missing values. One column
`prediction` (`output=` renames it), or one per class (`prediction_<i>`) for a multiclass model; `raw_score=true`
gives the raw scores.
"""

from __future__ import annotations

import re
from typing import Any

from .artifact import feature_columns, library, matrix, named, read

#: The names LightGBM gives features it was not given names for (Dataset: "Column_" + index).
UNNAMED = re.compile(r"Column_\d+")


class LightGBMModel:
    """NumPy batches of the model's features in, its predictions out."""

    batch_format = "numpy"

    def __init__(self, booster: Any, columns: list[str], output: str, raw_score: bool, fingerprint: str):
        self.booster, self.columns, self.output = booster, columns, output
        self.raw_score, self.fingerprint = raw_score, fingerprint

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        # Its OpenMP threads: Ray sets OMP_NUM_THREADS to the task's CPUs where unset, as a task or an actor's
        # creation starts (_raylet.pyx, execute_task -> ray/_private/utils.py, set_omp_num_threads_if_unset).
        return named(self.booster.predict(matrix(batch, self.columns), raw_score=self.raw_score), self.output)


def load_model(path: str | None = None, columns: list[str] | str | None = None, output: str = "prediction",
               raw_score: bool = False) -> LightGBMModel:
    """path: the model's text file; columns: the input columns, for a model trained on an array; output: the
    prediction column's name; raw_score: the raw scores instead of the transformed values."""
    lgb = library("lightgbm", "lightgbm")
    artifact = read(path)
    try:
        booster = lgb.Booster(model_str=artifact.blob.decode("utf-8"))
    except (UnicodeDecodeError, lgb.basic.LightGBMError) as exc:
        raise ValueError(f"model file {artifact.source} is not a LightGBM model saved by save_model as text "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    names = booster.feature_name()
    trained = None if all(UNNAMED.fullmatch(n) for n in names) else names
    features = feature_columns(trained, columns, booster.num_feature(), artifact.source)
    return LightGBMModel(booster, features, output, bool(raw_score), artifact.digest)
