"""A PyTorch model applied in batches under `torch.inference_mode()`.

Load either a TorchScript file (`path=model.pt`) or a state dict plus the module that holds it
(`state_dict=weights.pt module=package.module:Class`). The model pickles as its file bytes (TorchScript
modules cannot be pickled), so `ray.put` stores it once and each worker deserialises it once, then moves it
to its device once in `prepare()`.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import zipfile
from typing import Any

import numpy as np

#: Numeric features of the taxi schema used by the shipped example network.
TAXI_FEATURES = [
    "passenger_count", "trip_distance", "pickup_longitude", "pickup_latitude", "dropoff_longitude",
    "dropoff_latitude", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the PyTorch model needs torch: pip install 'shardscore[torch]'") from exc
    return torch


class TorchModel:
    """Numpy batches in, one prediction column out (or one column per output when `output` lists several)."""

    batch_format = "numpy"

    def __init__(self, blob: bytes, kind: str, columns: list[str], output: str,
                 module: str | None = None, module_args: dict[str, Any] | None = None):
        self._blob = blob
        self._kind = kind
        self.columns = list(columns)
        self.output = output
        self._module_path = module
        self._module_args = module_args or {}
        self.fingerprint = hashlib.sha256(blob).hexdigest()[:20]
        self._net = None
        self._device = "cpu"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_net"] = None  # rebuilt from the bytes where it is used
        return state

    def _build(self):
        torch = _torch()
        buffer = io.BytesIO(self._blob)
        if self._kind == "torchscript":
            net = torch.jit.load(buffer, map_location="cpu")
        else:
            module_name, _, cls_name = (self._module_path or "").partition(":")
            cls = getattr(importlib.import_module(module_name), cls_name)
            net = cls(**self._module_args)
            net.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=True))
        net.eval()
        return net

    def prepare(self, device: str) -> None:
        self._device = device
        self._net = self._build().to(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        if self._net is None:
            self.prepare(self._device)
        features = np.stack([np.asarray(batch[c], dtype=np.float32) for c in self.columns], axis=1)
        with torch.inference_mode():
            x = torch.from_numpy(features).to(self._device, non_blocking=True)
            y = self._net(x)
            out = y.float().cpu().numpy()
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return {self.output: out}


def load_model(path: str | None = None, state_dict: str | None = None, module: str | None = None,
               module_args: dict[str, Any] | None = None, columns: list[str] | str | None = None,
               output: str = "prediction") -> TorchModel:
    """path: a TorchScript file; or state_dict + module ('package.module:Class', built with module_args)."""
    if isinstance(columns, str):
        columns = [c for c in columns.split(",") if c]
    columns = columns or TAXI_FEATURES
    if bool(path) == bool(state_dict):
        raise ValueError("give exactly one of path (TorchScript) or state_dict (with module)")
    if state_dict and not module:
        raise ValueError("state_dict needs module='package.module:Class' to build the network")
    source = path or state_dict
    from .. import storage  # model files may live on object stores too

    loc = storage.resolve(source)  # type: ignore[arg-type]
    with loc.fs.open_input_stream(loc.path) as f:
        blob = f.read()
    if not zipfile.is_zipfile(io.BytesIO(blob)):
        raise ValueError(f"{source} is not a file written by torch.save or torch.jit.save (not a zip archive)")
    # The network is built on the workers only: importing torch on the driver would delay every run by seconds.
    # A file that unpacks but does not load aborts the run on the first worker, before any shard is scored.
    return TorchModel(blob, "torchscript" if path else "state_dict", columns, output, module, module_args)


class TaxiFareNet:
    """Factory for the example network: a small MLP over the taxi features (used by the demo, tests, benches)."""

    def __new__(cls, in_features: int = len(TAXI_FEATURES), hidden: int = 64, seed: int = 0):
        torch = _torch()
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(in_features, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )


def save_example(path: str, torchscript: bool = True, hidden: int = 64, seed: int = 0) -> str:
    """Write the example network as TorchScript (or a state dict) to path; returns path."""
    torch = _torch()
    net = TaxiFareNet(hidden=hidden, seed=seed)
    if torchscript:
        torch.jit.save(torch.jit.script(net), path)
    else:
        torch.save(net.state_dict(), path)
    return path
