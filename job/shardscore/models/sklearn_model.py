"""A scikit-learn estimator or pipeline saved with joblib.dump or pickle: `--model
shardscore.models.sklearn_model:load_model --model-arg path=model.joblib [--model-arg method=predict_proba]`.

The model gets a pandas DataFrame of the features it was fitted on, by name (a pipeline's ColumnTransformer selects
by name too); a model fitted on an array names them with `columns=a,b,c`, in training order. Outputs:
`prediction` (predict), one `proba_<class>` per class (predict_proba), `decision` or one `decision_<class>` per
class (decision_function), one `transform_<feature>` per output feature (transform); `output=` renames the prefix.

Unpickling runs code from the file, as joblib.load and pickle.load always do: load only files you trust.
"""

from __future__ import annotations

import io
from typing import Any

from .artifact import Artifact, feature_columns, library, named, read

METHODS = ("predict", "predict_proba", "decision_function", "transform")
OUTPUTS = {"predict": "prediction", "predict_proba": "proba", "decision_function": "decision",
           "transform": "transform"}


class SklearnModel:
    """A pandas batch of the model's features in, its method's answer out as named columns."""

    batch_format = "pandas"

    def __init__(self, estimator: Any, columns: list[str], method: str, output: str, fingerprint: str):
        self.estimator, self.columns, self.method = estimator, columns, method
        self.output, self.fingerprint = output, fingerprint
        # Fitted on an array: it gets one (sklearn warns on every call of a model fitted without names otherwise).
        self._by_name = getattr(estimator, "feature_names_in_", None) is not None
        self._labels = self._output_labels()

    def _output_labels(self) -> list[Any] | None:
        if self.method in ("predict_proba", "decision_function"):
            return list(getattr(self.estimator, "classes_", [])) or None
        if self.method == "transform" and hasattr(self.estimator, "get_feature_names_out"):
            try:
                return list(self.estimator.get_feature_names_out())
            except Exception:  # not every transformer can name its outputs (sklearn raises several types)
                return None
        return None

    def __call__(self, batch: Any) -> dict[str, Any]:
        features = batch[self.columns] if self._by_name else batch[self.columns].to_numpy()
        values = getattr(self.estimator, self.method)(features)
        if isinstance(values, list):
            raise ValueError(f"{self.method} answered one array per output (a multi-output estimator); "
                             "shardscore writes one per model: score each output with its own estimator")
        return named(values, self.output, self._labels)


def _estimator(artifact: Artifact) -> Any:
    joblib = library("joblib", "sklearn")
    try:
        return joblib.load(io.BytesIO(artifact.blob))
    except Exception as exc:  # a corrupt or foreign file fails in many ways inside pickle
        raise ValueError(f"model file {artifact.source} is not a model saved by joblib.dump or pickle.dump "
                         f"({type(exc).__name__}: {exc})") from exc


def load_model(path: str | None = None, method: str = "predict", columns: list[str] | str | None = None,
               output: str | None = None) -> SklearnModel:
    """path: the joblib or pickle file; method: predict, predict_proba, decision_function or transform;
    columns: the input columns, for a model fitted on an array; output: the output column (or prefix) name."""
    library("sklearn", "sklearn")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    artifact = read(path)
    estimator = _estimator(artifact)
    if not callable(getattr(estimator, method, None)):
        offered = [m for m in METHODS if callable(getattr(estimator, m, None))]
        raise ValueError(f"model file {artifact.source} holds a {type(estimator).__name__}, which has no {method}() "
                         f"(it offers: {', '.join(offered) or 'none of ' + ', '.join(METHODS)})")
    trained = getattr(estimator, "feature_names_in_", None)
    features = feature_columns(None if trained is None else [str(n) for n in trained], columns,
                               getattr(estimator, "n_features_in_", None), artifact.source)
    return SklearnModel(estimator, features, method, output or OUTPUTS[method], artifact.digest)
