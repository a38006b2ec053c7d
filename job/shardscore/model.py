"""The model contract: how a `module:factory` spec becomes a scorer that maps Arrow batches to Arrow predictions.

A factory returns a callable on a batch. It may declare, as attributes of what it returns:
- `batch_format`: "pandas" (default, as in the Ray example), "pyarrow" or "numpy" (a dict of arrays);
- `columns`: the input columns it needs (default: all), so shards read only those;
- `pandas_backend`: "numpy" (default: NumPy-backed frames, which code written for pandas 2 expects) or "pyarrow";
- `prepare(device)`: called once per worker before its first batch (a torch model moves to the device here);
- `fingerprint`: a string that changes when the model's weights do (folded into the model identity).
A plain function that declares nothing, such as the Ray example's `load_model()`, works unchanged.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from .errors import ConfigError, DeviceError, ModelError

BATCH_FORMATS = ("pandas", "pyarrow", "numpy")
PANDAS_BACKENDS = ("numpy", "pyarrow")
PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class ModelSpec:
    """What to load: `package.module:factory` and keyword arguments for the factory."""

    target: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, _, attr = self.target.partition(":")
        if not module or not attr:
            raise ConfigError(f"--model {self.target!r}: expected 'package.module:factory'")


class BatchError(ValueError):
    """The model's answer for a batch cannot be used (wrong row count, unsupported type)."""


def _source_digest(obj: Any) -> str:
    """A digest of the file that defines obj, so that editing the model's code changes the model identity."""
    try:
        source_file = inspect.getsourcefile(obj)
        with open(source_file, "rb") as f:  # type: ignore[arg-type]
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except (TypeError, OSError):
        return ""


def _to_table(result: Any, num_rows: int) -> pa.Table:
    # pandas is imported only by models that use it (it costs workers half a second to start).
    pd = sys.modules.get("pandas")
    if isinstance(result, pa.RecordBatch):
        result = pa.Table.from_batches([result])
    if pd is not None and isinstance(result, pd.Series):
        result = result.to_frame(name=result.name if result.name is not None else PREDICTION_COLUMN)
    if pd is not None and isinstance(result, pd.DataFrame):
        table = pa.Table.from_pandas(result, preserve_index=False)
    elif isinstance(result, pa.Table):
        table = result
    elif isinstance(result, dict):
        table = pa.table({k: _column(v) for k, v in result.items()})
    elif isinstance(result, (np.ndarray, pa.Array, pa.ChunkedArray, list)):
        table = pa.table({PREDICTION_COLUMN: _column(result)})
    else:
        raise BatchError(f"the model returned {type(result).__name__}; expected a DataFrame, Series, "
                         "pyarrow Table, dict of arrays or an array")
    if table.num_rows != num_rows:
        raise BatchError(f"the model returned {table.num_rows} rows for a batch of {num_rows}")
    return table


def _column(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    array = np.asarray(values)
    if array.ndim == 2:  # one vector per row (e.g. class probabilities)
        return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
    return pa.array(array)


class Scorer:
    """A loaded model plus its declarations: Arrow table in, Arrow table of predictions out."""

    def __init__(self, spec: ModelSpec, model: Callable[[Any], Any]):
        self.spec = spec
        self.model = model
        self.batch_format: str = getattr(model, "batch_format", "pandas")
        columns = getattr(model, "columns", None)
        self.columns: list[str] | None = list(columns) if columns is not None else None
        self.pandas_backend: str = getattr(model, "pandas_backend", "numpy")
        if self.batch_format not in BATCH_FORMATS:
            raise ModelError(f"model {spec.target}: batch_format {self.batch_format!r} is not one of {BATCH_FORMATS}")
        if self.pandas_backend not in PANDAS_BACKENDS:
            raise ModelError(f"model {spec.target}: pandas_backend {self.pandas_backend!r} is not one of "
                             f"{PANDAS_BACKENDS}")
        self.device = "cpu"

    @cached_property
    def identity(self) -> str:
        """Changes when the spec, the factory's source file or the weights' fingerprint change."""
        module = self.spec.target.partition(":")[0]
        parts = [self.spec.target, json.dumps(self.spec.args, sort_keys=True, default=str),
                 _source_digest(importlib.import_module(module)), str(getattr(self.model, "fingerprint", ""))]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]

    def prepare(self, device: str) -> None:
        """Place the model on its device, once per worker.

        Only models with a `prepare` hook have a device to choose; for the others 'auto' is the CPU without
        importing torch (seconds of worker start-up), while an explicit 'cuda' is still checked.
        """
        hook = getattr(self.model, "prepare", None)
        if callable(hook) or device == "cuda":
            self.device = resolve_device(device)
        if callable(hook):
            hook(self.device)

    def _to_batch(self, table: pa.Table) -> Any:
        if self.batch_format == "pyarrow":
            return table
        if self.batch_format == "numpy":
            return {name: col.to_numpy() for name, col in zip(table.column_names, table.columns, strict=True)}
        if self.pandas_backend == "pyarrow":
            import pandas as pd

            return table.to_pandas(types_mapper=pd.ArrowDtype)
        return table.to_pandas()

    def __call__(self, table: pa.Table) -> pa.Table:
        return _to_table(self.model(self._to_batch(table)), table.num_rows)


def load(spec: ModelSpec) -> Scorer:
    """Import the factory and build the model. Errors name the spec and what went wrong."""
    module_name, _, attr = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"--model {spec.target}: cannot import module {module_name!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelError(f"--model {spec.target}: module {module_name!r} has no callable {attr!r}")
    try:
        model = factory(**spec.args)
    except TypeError as exc:
        raise ModelError(f"--model {spec.target}: the factory rejected the model arguments "
                         f"{sorted(spec.args)} ({exc})") from exc
    except Exception as exc:  # the user's factory: any failure is a model error, reported with its cause
        raise ModelError(f"--model {spec.target}: the factory failed: {type(exc).__name__}: {exc}") from exc
    if not callable(model):
        raise ModelError(f"--model {spec.target}: the factory returned {type(model).__name__}, not a callable")
    return Scorer(spec, model)


def resolve_device(requested: str) -> str:
    """'cpu' or 'cuda' for this process. Asking for CUDA where there is none is an error, never a CPU fallback."""
    if requested == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError as exc:
        if requested == "cuda":
            raise DeviceError("--device cuda: PyTorch is not installed on this worker, so CUDA cannot be used") from exc
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceError(f"--device cuda: no CUDA device on worker {socket.gethostname()} "
                          f"(torch.cuda.is_available() is False, CUDA_VISIBLE_DEVICES="
                          f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    return "cpu"
