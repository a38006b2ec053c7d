"""What the shipped loaders share: a model file's bytes from any location shardscore reads, the library a loader
needs (an optional extra of the package), the feature columns a model reads, and its outputs named as columns.

Every error is raised from the factory, which `model.load` reports as `--model ...: the factory failed: ...` and
the CLI ends with exit 2 before anything is scored.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import numpy as np


def library(module: str, extra: str) -> ModuleType:
    """`module`, or an ImportError that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this loader needs the {module.split('.')[0]} package, which is not installed here: "
                          f"pip install 'shardscore[{extra}]' ({exc})") from exc


def installed(module: str, extra: str) -> None:
    """Check that `module` is installed without importing it (some take a second to import: the driver only
    checks; the workers import)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(f"this loader needs the {module} package, which is not installed here: "
                          f"pip install 'shardscore[{extra}]'")


@dataclass(frozen=True)
class Artifact:
    """A model file as read: where it came from and its bytes."""

    source: str
    blob: bytes

    @property
    def digest(self) -> str:
        """The model's fingerprint: a changed file changes the model identity, as changed code does."""
        return hashlib.sha256(self.blob).hexdigest()[:20]


def read(source: str | None) -> Artifact:
    """The file at `source` (a local path, s3://, or any location pyarrow reads), read whole."""
    from .. import storage

    if not source:
        raise ValueError("give the model file: --model-arg path=<file>")
    loc = storage.resolve(source)
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return Artifact(source, f.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {source} does not exist") from None
    except OSError as exc:
        raise OSError(f"model file {source} cannot be read ({exc})") from None


def files_digest(files: dict[str, bytes]) -> str:
    """The fingerprint of a model saved as several files (a directory): their names and contents."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:20]


def unpack(files: dict[str, bytes], prefix: str) -> str:
    """The files written into a new local folder (removed when the process exits), for libraries that load a
    directory: each worker unpacks the bytes it was sent once."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    for name, blob in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
    return folder


def split(columns: Sequence[str] | str | None) -> list[str]:
    """`a,b,c` (a --model-arg) or a list, as a list."""
    if columns is None:
        return []
    return [c for c in columns.split(",") if c] if isinstance(columns, str) else list(columns)


def feature_columns(trained: Sequence[str] | None, given: Sequence[str] | str | None, count: int | None,
                    source: str) -> list[str]:
    """The input columns the model reads, in its training order.

    `trained`: the names the model was fitted with (a DataFrame's columns), which the input must have. `given`: the
    `columns` model argument, needed where the model was fitted on an array and knows only how many features it
    takes; given beside trained names, it must equal them (the model reads by position).
    """
    names = split(given)
    if trained is not None and names and names != list(trained):
        raise ValueError(f"{source}: columns={','.join(names)} are not the features the model was trained on, in "
                         f"their order: {','.join(trained)}")
    if trained is not None:
        return list(trained)
    if not names:
        raise ValueError(f"{source}: the model was trained without feature names; name the input columns it reads, "
                         "in training order: --model-arg columns=a,b,c")
    if count is not None and len(names) != count:
        raise ValueError(f"{source}: the model takes {count} features, and columns= names {len(names)}: "
                         f"{','.join(names)}")
    return names


def named(values: Any, output: str, labels: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """A model's answer as columns: one array is `output`; one row of k values per input row is k columns
    `output_<label>` (a class, a feature name, or else the position)."""
    values = np.asarray(values)
    if values.ndim == 1:
        return {output: values}
    if values.ndim != 2:
        raise ValueError(f"the model answered an array of shape {values.shape}; expected one or two dimensions")
    width = values.shape[1]
    if labels is None or len(labels) != width:
        labels = range(width)
    return {f"{output}_{label}": values[:, i] for i, label in enumerate(labels)}


def matrix(batch: dict[str, np.ndarray], columns: Sequence[str], dtype: type = np.float64) -> np.ndarray:
    """A NumPy batch's feature columns as one row-major matrix, in the model's column order (nulls are NaN, which
    the tree libraries take as missing values)."""
    return np.stack([np.asarray(batch[c], dtype=dtype) for c in columns], axis=1)
