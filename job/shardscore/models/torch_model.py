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
                 module: str | None = None, module_args: dict[str, Any] | None = None,
                 device_batch_size: int | None = None, autocast: str | None = None):
        self._blob = blob
        self._kind = kind
        self.columns = list(columns)
        self.output = output
        self._module_path = module
        self._module_args = module_args or {}
        self.device_batch_size = device_batch_size
        self.autocast = autocast
        self.fingerprint = hashlib.sha256(blob).hexdigest()[:20]
        self._net = None
        self._device = "cpu"
        self._pinned = None  # a page-locked host buffer, reused for every batch's copy to the GPU

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_net"] = None  # rebuilt from the bytes where it is used
        state["_pinned"] = None
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

    def _host_features(self, batch: dict[str, np.ndarray]):
        """The batch's features as one float32 tensor; on CUDA in pinned memory, so the copy to the GPU is a DMA
        that does not block the host."""
        torch = _torch()
        rows = len(batch[self.columns[0]])
        if self._device == "cpu":
            return torch.from_numpy(np.stack([np.asarray(batch[c], dtype=np.float32) for c in self.columns], 1))
        if self._pinned is None or self._pinned.shape[0] < rows:
            self._pinned = torch.empty((rows, len(self.columns)), dtype=torch.float32, pin_memory=True)
        host = self._pinned[:rows]
        view = host.numpy()
        for i, c in enumerate(self.columns):
            view[:, i] = batch[c]
        return host

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = _torch()
        if self._net is None:
            self.prepare(self._device)
        host = self._host_features(batch)
        step = self.device_batch_size or host.shape[0] or 1
        device_type = "cuda" if self._device.startswith("cuda") else "cpu"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.autocast or "")
        outputs = []
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            for start in range(0, host.shape[0], step):
                x = host[start:start + step].to(self._device, non_blocking=True)
                outputs.append(self._net(x).float())
            out = torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, 1), np.float32)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return {self.output: out}


def load_model(path: str | None = None, state_dict: str | None = None, module: str | None = None,
               module_args: dict[str, Any] | None = None, columns: list[str] | str | None = None,
               output: str = "prediction", device_batch_size: int | None = None,
               autocast: str | None = None) -> TorchModel:
    """path: a TorchScript file; or state_dict + module ('package.module:Class', built with module_args).

    device_batch_size: rows per forward pass (default: the whole batch shardscore hands over, --batch-size);
    autocast: bf16 or fp16 to run the forward pass under torch.autocast (where the model allows it).
    """
    if isinstance(columns, str):
        columns = [c for c in columns.split(",") if c]
    columns = columns or TAXI_FEATURES
    if bool(path) == bool(state_dict):
        raise ValueError("give exactly one of path (TorchScript) or state_dict (with module)")
    if state_dict and not module:
        raise ValueError("state_dict needs module='package.module:Class' to build the network")
    if autocast not in (None, "bf16", "fp16"):
        raise ValueError(f"autocast must be bf16 or fp16, got {autocast!r}")
    if device_batch_size is not None and device_batch_size <= 0:
        raise ValueError(f"device_batch_size must be > 0, got {device_batch_size}")
    source = path or state_dict
    from .. import storage  # model files may live on object stores too

    loc = storage.resolve(source)  # type: ignore[arg-type]
    with loc.fs.open_input_stream(loc.path) as f:
        blob = f.read()
    if not zipfile.is_zipfile(io.BytesIO(blob)):
        raise ValueError(f"{source} is not a file written by torch.save or torch.jit.save (not a zip archive)")
    # The network is built on the workers only: importing torch on the driver would delay every run by seconds.
    # A file that unpacks but does not load aborts the run on the first worker, before any shard is scored.
    return TorchModel(blob, "torchscript" if path else "state_dict", columns, output, module, module_args,
                      device_batch_size, autocast)


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
