"""An ONNX model run by ONNX Runtime: `--model shardscore.models.onnx_model:load_model --model-arg path=model.onnx`.

Inputs, matched to the graph's by name: each graph input named like an input column gets that column (as a vector,
or a one-wide matrix, as the graph declares). A graph with one input whose name is not a column (a feature matrix,
as converters from scikit-learn or PyTorch write) gets `columns=a,b,c` stacked in that order. Outputs: every tensor
output of the graph (or `outputs=x,y`), each one column named like it (`<name>_<i>` for one per class or target);
other outputs (a ZipMap's sequence of maps) are left out. `device=cuda` runs on the CUDA execution provider and
fails clearly where ONNX Runtime has none.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from .artifact import library, matrix, named, read, split

#: ONNX Runtime's tensor types and the NumPy types fed to them.
DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _provider(device: str) -> str:
    """The execution provider for `device`, which this ONNX Runtime build must have (a build lists what it was
    built with, whether or not the machine has the device: onnxruntime.get_available_providers)."""
    ort = library("onnxruntime", "onnx")
    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"device={device}: this ONNX Runtime has no {provider} (it has "
                           f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
    return provider


def _session(blob: bytes, device: str, source: str) -> Any:
    ort = library("onnxruntime", "onnx")
    provider = _provider(device)
    options = ort.SessionOptions()
    # One thread per CPU the task holds: Ray sets OMP_NUM_THREADS to it where unset (_raylet.pyx, execute_task ->
    # ray/_private/utils.py, set_omp_num_threads_if_unset); ONNX Runtime would otherwise use every core.
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    try:
        session = ort.InferenceSession(blob, sess_options=options, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ValueError(f"model file {source} is not an ONNX model ONNX Runtime loads ({type(exc).__name__}: "
                         f"{str(exc)[:300]})") from exc
    if session.get_providers()[0] != provider:  # ONNX Runtime falls back to the CPU with only a warning
        raise RuntimeError(f"device={device}: ONNX Runtime could not use {provider} on {socket.gethostname()} "
                           f"(it runs on {session.get_providers()[0]}): no usable GPU here?")
    return session


class OnnxModel:
    """NumPy batches in, the graph's tensor outputs out. Pickles as the file's bytes: the session is rebuilt on
    each worker (an InferenceSession cannot be pickled)."""

    batch_format = "numpy"

    def __init__(self, blob: bytes, source: str, feeds: dict[str, tuple[list[str], Any, int]], outputs: list[str],
                 device: str, fingerprint: str):
        self._blob, self._source, self._feeds, self._outputs = blob, source, feeds, outputs
        self.device, self.fingerprint = device, fingerprint
        self.columns = list(dict.fromkeys(c for cols, _, _ in feeds.values() for c in cols))
        self._session: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}

    def _feed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, (columns, dtype, rank) in self._feeds.items():
            if len(columns) > 1 or rank == 2:
                feed[name] = matrix(batch, columns, dtype)
            else:
                feed[name] = np.asarray(batch[columns[0]], dtype=dtype)
        return feed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            self._session = _session(self._blob, self.device, self._source)
        answers = self._session.run(self._outputs, self._feed(batch))
        columns: dict[str, np.ndarray] = {}
        for name, values in zip(self._outputs, answers, strict=True):
            values = np.asarray(values)
            columns.update(named(values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values, name))
        return columns


def _feeds(session: Any, given: list[str], source: str) -> dict[str, tuple[list[str], Any, int]]:
    """Per graph input: the columns it gets, the NumPy type and its rank."""
    inputs = session.get_inputs()
    for i in inputs:
        if i.type not in DTYPES:
            raise ValueError(f"model file {source}: graph input {i.name!r} is a {i.type}; shardscore feeds "
                             f"{', '.join(DTYPES)}")
    if given:
        if len(inputs) != 1:
            raise ValueError(f"model file {source}: columns= feeds a graph with one input, and this one has "
                             f"{len(inputs)}: {', '.join(i.name for i in inputs)} (they are fed by name)")
        width = inputs[0].shape[-1] if len(inputs[0].shape) == 2 else None
        if isinstance(width, int) and width != len(given):
            raise ValueError(f"model file {source}: graph input {inputs[0].name!r} takes {width} features, and "
                             f"columns= names {len(given)}: {','.join(given)}")
        return {inputs[0].name: (given, DTYPES[inputs[0].type], 2)}
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[-1] != 1:
        raise ValueError(f"model file {source}: graph input {inputs[0].name!r} takes a matrix of features; name "
                         "the input columns that make it, in order: --model-arg columns=a,b,c")
    return {i.name: ([i.name], DTYPES[i.type], len(i.shape)) for i in inputs}


def load_model(path: str | None = None, columns: list[str] | str | None = None,
               outputs: list[str] | str | None = None, device: str = "cpu") -> OnnxModel:
    """path: the .onnx file; columns: the input columns stacked into a graph's single feature-matrix input;
    outputs: the graph outputs to write (default: every tensor output); device: cpu or cuda."""
    if device not in PROVIDERS:
        raise ValueError(f"device={device!r} is not one of {', '.join(PROVIDERS)}")
    _provider(device)  # the build must have it; the device itself is the worker's
    artifact = read(path)
    session = _session(artifact.blob, "cpu", artifact.source)  # checked here, before Ray starts; built per worker
    tensors = [o.name for o in session.get_outputs() if o.type.startswith("tensor(")]
    wanted = split(outputs) or tensors
    unknown = [o for o in wanted if o not in tensors]
    if unknown or not wanted:
        raise ValueError(f"model file {artifact.source}: outputs {unknown or '(none)'} are not among its tensor "
                         f"outputs {tensors}")
    return OnnxModel(artifact.blob, artifact.source, _feeds(session, split(columns), artifact.source), wanted,
                     device, artifact.digest)
