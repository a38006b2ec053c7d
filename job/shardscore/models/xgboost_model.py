"""An XGBoost Booster in its native formats, JSON or UBJSON as `Booster.save_model` (and `XGBModel.save_model`)
write them: `--model shardscore.models.xgboost_model:load_model --model-arg path=model.ubj`.

The booster predicts in place on the features it was trained on (by name where it was trained on a DataFrame;
`columns=a,b,c` in training order where it was trained on an array), nulls as missing values. One column
`prediction` (`output=` renames it), or one per class or target (`prediction_<i>`) where the model gives several.
`device=cuda` predicts on the worker's GPU; `output_margin=true` gives the raw margin instead of the transformed value.
"""

from __future__ import annotations

from typing import Any

from .artifact import feature_columns, library, matrix, named, read

DEVICES = ("cpu", "cuda")


class XGBoostModel:
    """NumPy batches of the model's features in, its predictions out."""

    batch_format = "numpy"

    def __init__(self, booster: Any, columns: list[str], output: str, device: str, margin: bool, fingerprint: str):
        self.booster, self.columns, self.output = booster, columns, output
        self.device, self.margin, self.fingerprint = device, margin, fingerprint
        self._placed = False

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not self._placed:  # on the worker: the driver that loaded it may have no GPU
            self.booster.set_param({"device": self.device})
            self._placed = True
        values = self.booster.inplace_predict(matrix(batch, self.columns),
                                              predict_type="margin" if self.margin else "value")
        return named(values, self.output)


def load_model(path: str | None = None, columns: list[str] | str | None = None, output: str = "prediction",
               device: str = "cpu", output_margin: bool = False) -> XGBoostModel:
    """path: the model file (.json or .ubj); columns: the input columns, for a model trained on an array;
    output: the prediction column's name; device: cpu or cuda; output_margin: the untransformed margin."""
    xgb = library("xgboost", "xgboost")
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {', '.join(DEVICES)}")
    artifact = read(path)
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(artifact.blob))
    except xgb.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model file {artifact.source} is not an XGBoost model saved by save_model as JSON or "
                         f"UBJSON ({first})") from exc
    features = feature_columns(booster.feature_names, columns, booster.num_features(), artifact.source)
    return XGBoostModel(booster, features, output, device, bool(output_margin), artifact.digest)
