"""The model contract: how a `module:factory` spec becomes a scorer that maps Arrow batches to Arrow predictions.

A factory returns a callable on a batch. It may declare, as attributes of what it returns:
- `batch_format`: "pandas" (default, as in the Ray example), "pyarrow" or "numpy" (a dict of arrays);
- `columns`: the input columns it needs (default: all), so shards read only those. Every batch of every file has
  its columns in one order: the declared ones in the order declared, then the key columns; without a declaration,
  the plan's reference schema (the most common file's columns and order), whatever each file's own order;
- `pandas_backend`: "numpy" (default: NumPy-backed frames, which code written for pandas 2 expects) or "pyarrow";
- `prepare(device)`: called once per worker before its first batch (a torch model moves to the device here);
- `fingerprint`: a string that changes when the model's weights do (folded into the model identity);
- `check_input(schema)`: called with the input's Arrow schema before anything is scored; a ValueError refuses the
  input (an MLflow model's signature is checked here).
A plain function that declares nothing, such as the Ray example's `load_model()`, works unchanged.
A pandas answer is matched to the batch's rows by its index (pandas aligns by label): one in another order is put
back in the batch's; one whose index is not a permutation of the batch's (or of 0..n-1) is refused (`_in_batch_order`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import json
import os
import site
import socket
import sys
from dataclasses import dataclass, field
from functools import cache, cached_property
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


#: Per factory module: the modules of the user's project that importing it brought in (see `model_sources`).
_IMPORTED_WITH: dict[str, list[str]] = {}


@cache
def _installed_dirs() -> tuple[str, ...]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages()}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _package_files(module_name: str) -> list[str]:
    """The source files the identity covers for the factory's own code.

    A factory module inside a package: every .py file of its top-level package, so that a change to a sibling
    module it imports (`from .net import Net`) changes the identity. shardscore's own shipped models are the
    exception: shardscore.models and the model contract, not the whole job (a new progress line must not make
    every output look scored by another model). A top-level module: its own file.
    """
    if module_name.startswith("shardscore."):
        root = os.path.dirname(os.path.abspath(__file__))
        return [os.path.join(root, "model.py"), *_tree(os.path.join(root, "models"))]
    top = sys.modules.get(module_name.split(".", 1)[0])
    paths = list(getattr(top, "__path__", None) or [])
    if not paths:
        source = getattr(top, "__file__", None)
        return [source] if source else []
    return [f for p in sorted(paths) for f in _tree(p)]


def _tree(folder: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith(".py"))


def model_sources(module_name: str) -> list[str]:
    """Every source file whose change changes the model identity: the factory's package (`_package_files`) and the
    modules of the user's project (outside the Python installation, shardscore aside) that importing it loaded."""
    files = set(_package_files(module_name))
    for name in _IMPORTED_WITH.get(module_name, []):
        source = _project_source(name, sys.modules.get(name))
        if source:
            files.add(source)
    return sorted(files)


def _sources_digest(module_name: str) -> str:
    return _files_digest(model_sources(module_name))


#: Per process: the digest of the factory's package when this process first looked (package_digest). First seen,
#: not re-read: a process runs the modules it imported, and a warm pool's actor keeps them from run to run.
_PACKAGE_SEEN: dict[str, str] = {}


def package_digest(module_name: str) -> str | None:
    """The digest of the factory's package as this process imported it (`_package_files`), or None where this
    process has not imported it (a worker that got a model whose code was pickled by value, or needs none of it)."""
    if module_name.split(".", 1)[0] not in sys.modules:
        return None
    if module_name not in _PACKAGE_SEEN:
        _PACKAGE_SEEN[module_name] = _files_digest(_package_files(module_name))
    return _PACKAGE_SEEN[module_name]


def _files_digest(paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                digest.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
        except OSError:
            continue
    return digest.hexdigest()[:16]


def source_digest(path: str) -> str:
    """The digest of one source file, as the commit record keeps it for a module the model loaded lazily."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _project_source(name: str, module: Any) -> str | None:
    """The module's source file when it is the user's project's (outside the Python installation, shardscore
    aside), else None."""
    if name == "shardscore" or name.startswith("shardscore."):
        return None
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py") or os.path.realpath(source).startswith(_installed_dirs()):
        return None
    return source


#: Per worker process: module name -> the digest of its source when this process first saw it loaded ("" when it
#: is not the project's). First seen, not re-read: the process runs the code it imported, whatever the file is now.
_SEEN: dict[str, str] = {}
_LAST: list[Any] = [None, {}]  # the last call's key and answer (loaded_sources)


def loaded_sources(scorer: "Scorer") -> dict[str, str]:
    """The project's modules loaded in this process that the model identity does not cover, by name, each with the
    digest of its source (`source_digest`).

    Called after a shard's first batch: a module the model imports inside its function (not when the factory is
    imported) is loaded by then, and is outside `model_sources`. The commit record keeps them, so that a rerun can
    tell an edit (`current_sources`). A process that served another model before may report that model's modules
    too: a change to them then also makes this model's shards stale, which errs on the safe side.
    """
    top = scorer.spec.target.partition(":")[0].split(".")[0]
    covered = set(scorer.covered_modules)
    # Once per new import, not per shard: a walk of sys.modules (thousands of names) cost a tiny shard a third of
    # a millisecond. sys.modules is a dict, so a new import is its last key: the same count and last name mean
    # nothing was imported since.
    key = (top, tuple(sorted(covered)), len(sys.modules), next(reversed(sys.modules)))
    if _LAST[0] == key:
        return dict(_LAST[1])
    found: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        if name == top or name.startswith(top + ".") or name in covered:
            continue
        if name not in _SEEN:
            source = _project_source(name, module)
            try:
                _SEEN[name] = source_digest(source) if source else ""
            except OSError:
                _SEEN[name] = ""
        if _SEEN[name]:
            found[name] = _SEEN[name]
    _LAST[:] = [key, found]
    return dict(found)


def _module_file(name: str) -> str | None:
    """Where `name`'s source is on this process's sys.path, found without importing anything.

    importlib.util.find_spec would import a dotted name's parent packages (running the project's code in the
    driver); importlib.machinery.PathFinder.find_spec looks up one level at a time in the given folders only.
    """
    spec = None
    search: list[str] | None = None
    for part in name.split("."):
        if spec is not None and search is None:
            return None  # a plain module has no submodules
        spec = importlib.machinery.PathFinder.find_spec(part, search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations) if spec.submodule_search_locations is not None else None
    return spec.origin if spec is not None and spec.has_location else None


def current_sources(names: set[str]) -> dict[str, str | None]:
    """For each module a commit record lists as lazily loaded: the digest of its source as found now by name (so
    paths may differ between driver and workers, e.g. with Ray's runtime_env working_dir), None when it is gone."""
    found: dict[str, str | None] = {}
    for name in sorted(names):
        path = _module_file(name)
        try:
            found[name] = source_digest(path) if path else None
        except OSError:
            found[name] = None
    return found


def _to_table(result: Any, num_rows: int, index: Any = None) -> pa.Table:
    """The model's answer as a table whose rows are the batch's, in its order. `index` is the pandas index of the
    batch the model got (None: a RangeIndex, as a pandas answer to an Arrow or NumPy batch is compared with)."""
    # pandas is imported only by models that use it (it costs workers half a second to start).
    pd = sys.modules.get("pandas")
    if isinstance(result, pa.RecordBatch):
        result = pa.Table.from_batches([result])
    if pd is not None and isinstance(result, (pd.Series, pd.DataFrame)):
        positions = pd.RangeIndex(num_rows)
        result = _in_batch_order(result, positions if index is None else index, positions)
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


def _in_batch_order(result: Any, batch_index: Any, positions: Any) -> Any:
    """A pandas answer in the batch's row order.

    pandas aligns by label, and the model may have reordered its rows (sort_values, sample(frac=1), a merge), while
    the answer is written by position (from_pandas(preserve_index=False)). An index that is a permutation of the
    batch's is put back in the batch's order, and so is one of the `positions` 0..n-1 (pd.Series(array) answers a
    batch whose index came from the file's pandas metadata); any other index (other labels, duplicates) is refused.
    """
    if len(result) != len(batch_index):
        return result  # a wrong row count, which _to_table names
    for labels in (batch_index, positions):
        if result.index.equals(labels):
            return result
        if result.index.is_unique and labels.is_unique:
            where = result.index.get_indexer(labels)
            if (where >= 0).all():
                return result.iloc[where]
    foreign = result.index[~result.index.isin(batch_index)]
    twice = result.index[result.index.duplicated()]
    what = [f"labels the batch does not have: {_labels(foreign)}"] if len(foreign) else []
    what += [f"duplicate labels: {_labels(twice)}"] if len(twice) else []
    what += [] if batch_index.is_unique else ["the batch's own index has duplicates"]
    nor = "" if batch_index.equals(positions) else f" nor of the positions {_labels(positions)}"
    raise BatchError(f"the answer's index {_labels(result.index)} is not a permutation of the batch's "
                     f"{_labels(batch_index)}{nor} ({'; '.join(what)}), so its rows cannot be matched to the "
                     "batch's. Return the rows in the batch's order: with the batch's index, or reset_index(drop=True) "
                     "when they are in its order already, or as an array")


def _labels(index: Any, shown: int = 5) -> str:
    return str(index[:shown].tolist())[:-1] + (", ...]" if len(index) > shown else "]")


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
        # The project modules `model_sources` covers beyond the factory's package, by name (see loaded_sources).
        self.covered_modules: tuple[str, ...] = tuple(_IMPORTED_WITH.get(spec.target.partition(":")[0], ()))
        # The factory's package as the driver imported it (package_digest): a worker compares its own (check_code).
        self.code_digest = package_digest(spec.target.partition(":")[0])

    def check_code(self) -> None:
        """Refuse to score in a process that imported other files of the factory's package than the driver did.

        The model is pickled by reference to its module, so each worker runs the code its own process imported: a
        warm pool's actor that imported an older version, another image on the workers than on the head, or a
        runtime_env zip re-uploaded under the URI some nodes had already unpacked (Ray keeps a package by its URI:
        ray/_private/runtime_env/packaging.py, download_and_unpack_package) would score with other code than the
        model identity names.
        """
        module = self.spec.target.partition(":")[0]
        here = package_digest(module)
        if self.code_digest and here and here != self.code_digest:
            files = _package_files(module)
            where = os.path.dirname(files[0]) if files else "?"
            raise ModelError(f"--model {self.spec.target}: this worker's copy of the code ({where}) differs from the "
                             "driver's, so it would score with other code than the run's model identity names. "
                             "A warm --pool keeps the code its actors imported: give a new version another pool name. "
                             "Give the head and the workers the same image, and ship code in a runtime_env zip under "
                             "a new name for each version (`shardscore package`): Ray keeps a zip by its URI on the "
                             "nodes that unpacked it")

    @cached_property
    def identity(self) -> str:
        """Changes when the spec, the model's source (`model_sources`) or its declared `fingerprint` change."""
        module = self.spec.target.partition(":")[0]
        parts = [self.spec.target, json.dumps(self.spec.args, sort_keys=True, default=str),
                 _sources_digest(module), str(getattr(self.model, "fingerprint", ""))]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]

    @property
    def has_device(self) -> bool:
        """Whether the model places itself on a device (declares prepare): its scorer overlaps reads and writes."""
        return callable(getattr(self.model, "prepare", None))

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

    def check_input(self, schema: pa.Schema) -> None:
        """The model's own check of the input's schema (its `check_input`), where it declares one."""
        hook = getattr(self.model, "check_input", None)
        if callable(hook):
            hook(schema)

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
        batch = self._to_batch(table)
        index = batch.index if self.batch_format == "pandas" else None  # taken before the model may set another
        return _to_table(self.model(batch), table.num_rows, index)


def load(spec: ModelSpec) -> Scorer:
    """Import the factory and build the model. Errors name the spec and what went wrong."""
    module_name, _, attr = spec.target.partition(":")
    before = set(sys.modules)
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
    loaded = sorted(name for name in set(sys.modules) - before if not name.startswith("shardscore"))
    if module_name not in _IMPORTED_WITH or loaded:
        _IMPORTED_WITH[module_name] = sorted(set(_IMPORTED_WITH.get(module_name, [])) | set(loaded))
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
