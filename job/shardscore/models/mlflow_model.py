"""An MLflow model through its pyfunc flavor: `--model shardscore.models.mlflow_model:load_model
--model-arg uri=models:/fraud@champion`, or `models:/name/3`, `runs:/<run id>/model`, a logged model's
`models:/m-<id>`, or an artifact URI.

The tracking and registry servers are MLflow's own settings (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI and the
credentials MLflow reads). The driver resolves an alias to its version once, downloads that version's files and
checks the model's signature against the input's schema with MLflow's own rules before anything is scored; the
workers get the files (not the tracking server) and load the pyfunc from them. The model identity holds the
registered name and version and the digest of the files: an alias moved to another version is another model, so a
rerun refuses the output scored by the old one, or re-scores it with --overwrite.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

import numpy as np

from .artifact import files_digest, library, named, unpack

#: models:/<name>/<version> and models:/<name>@<alias> (MLflow's model registry URIs).
REGISTERED = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?")


def _registered(uri: str) -> tuple[str, str] | None:
    """(name, version) of a registry URI, the alias resolved now; None for runs:/ and artifact URIs."""
    found = REGISTERED.fullmatch(uri)
    if not found:  # runs:/, an artifact URI, or MLflow 3's logged-model URI (models:/m-<id>)
        return None
    import mlflow
    from mlflow import MlflowClient

    name, version, alias = found["name"], found["version"], found["alias"]
    client = MlflowClient()
    try:
        found_version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(
            name, version)
    except Exception as exc:  # MlflowException, or the HTTP client's own errors for an unreachable server
        raise ValueError(f"uri={uri}: not found in the model registry at {mlflow.get_registry_uri()} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})") from None
    return name, str(found_version.version)


def _download(uri: str) -> dict[str, bytes]:
    import mlflow

    folder = tempfile.mkdtemp(prefix="shardscore-mlflow-")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        files = {}
        for root, _, names in os.walk(local):
            for name in names:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, local)] = f.read()
    except Exception as exc:  # MlflowException, OSError, the HTTP client's errors
        raise ValueError(f"uri={uri}: the model's files cannot be downloaded ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]})") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if "MLmodel" not in files:
        raise ValueError(f"uri={uri} is not an MLflow model (no MLmodel file among {', '.join(sorted(files)[:8])})")
    return files


class MlflowModel:
    """A pandas batch of the signature's columns in, the pyfunc's predictions out. Pickles as the model's files;
    each worker loads the pyfunc from them once."""

    batch_format = "pandas"

    def __init__(self, uri: str, files: dict[str, bytes], registered: tuple[str, str] | None, output: str):
        self.uri, self._files, self.registered, self.output = uri, files, registered, output
        meta = self._meta()
        inputs = meta.signature.inputs if meta.signature is not None else None
        self._schema = inputs if inputs is not None and inputs.has_input_names() else None
        self.columns = inputs.input_names() if self._schema is not None else None
        where = f"{registered[0]} version {registered[1]}" if registered else uri
        self.fingerprint = f"{where} {files_digest(files)}"
        self._pyfunc: Any = None

    def _meta(self) -> Any:
        import yaml
        from mlflow.models import Model

        return Model.from_dict(yaml.safe_load(self._files["MLmodel"]))  # as Model.load does once the file is read

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pyfunc": None}

    def check_input(self, schema: Any) -> None:
        """The signature against the input's columns, with MLflow's own rules (mlflow.models.validate_schema, what
        pyfunc's predict enforces), on no rows: a type MLflow would refuse is named before anything is scored."""
        if self._schema is None or schema is None:
            return
        from mlflow.models import validate_schema

        empty = schema.empty_table().select([n for n in self.columns if n in schema.names]).to_pandas()
        try:
            validate_schema(empty, self._schema)
        except Exception as exc:  # MlflowException
            raise ValueError(f"the input does not fit the signature of {self.uri}: {str(exc)[:500]}") from None

    def __call__(self, batch: Any) -> dict[str, Any]:
        if self._pyfunc is None:
            import mlflow.pyfunc

            self._pyfunc = mlflow.pyfunc.load_model(unpack(self._files, "shardscore-mlflow-"))
        import pandas as pd

        answer = self._pyfunc.predict(batch)
        if isinstance(answer, pd.DataFrame):
            return {str(c): answer[c].to_numpy() for c in answer.columns}
        if isinstance(answer, pd.Series):
            answer = answer.to_numpy()
        return named(np.asarray(answer), self.output)


def load_model(uri: str | None = None, output: str = "prediction") -> MlflowModel:
    """uri: models:/<name>/<version>, models:/<name>@<alias>, runs:/<run id>/<path> or an artifact URI;
    output: the prediction column's name where the model answers one array."""
    library("mlflow", "mlflow")
    if not uri:
        raise ValueError("give the model: --model-arg uri=models:/<name>@<alias> (or /<version>, runs:/, a path)")
    registered = _registered(uri)
    files = _download(f"models:/{registered[0]}/{registered[1]}" if registered else uri)
    return MlflowModel(uri, files, registered, output)
