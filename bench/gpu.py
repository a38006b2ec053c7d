"""The GPU path measured: shardscore's scoring core against a bare PyTorch loop, on the same card and files.

    python bench/gpu.py                      # on a machine with an NVIDIA GPU: 10M rows, a 34M-parameter MLP
    python bench/gpu.py --device cpu --rows 20000 --hidden 64 --no-ray   # a quick look anywhere (tests do this)

Both sides read the same Parquet files (the 11 numeric taxi features), run the same TorchScript network under
`torch.inference_mode()` and write one float32 prediction column per file. The bare loop is written the
straightforward way (read a file, to a tensor, forward in batches, write); shardscore's side is `score_shard`
with its overlapped reads and writes. With Ray importable it also runs `shardscore run --strategy actors` on a
local Ray node that has the GPU, with one actor per GPU and with two actors sharing it (0.5 each). It prints one
JSON document: rows/s per variant, the ratio to the bare loop, GPU utilisation sampled every 100 ms, batch sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "job"))

from shardscore.models.torch_model import TAXI_FEATURES  # noqa: E402


def network(hidden: int, layers: int):
    """An MLP over the taxi features, large enough that the GPU, not Python, sets the pace."""
    import torch

    torch.manual_seed(0)
    dims = [len(TAXI_FEATURES), *[hidden] * layers, 1]
    parts: list = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        parts += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*parts[:-1])


class Utilisation(threading.Thread):
    """Samples the GPU's utilisation (nvidia-smi) every 100 ms while a variant runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        if not shutil.which("nvidia-smi"):
            return
        while not self.stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            time.sleep(0.1)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        return {"gpu_util_mean_pct": round(float(np.mean(self.samples)), 1),
                "gpu_util_p50_pct": float(np.median(self.samples)), "samples": len(self.samples)}


def timed(name: str, fn, rows: int) -> dict:
    util = Utilisation()
    util.start()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    util.stop.set()
    util.join()
    result = {"name": name, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds), **util.summary()}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def bare_loop(files: list[Path], weights: Path, out: Path, device: str, batch: int) -> None:
    """The straightforward PyTorch loop over the same files."""
    import torch

    net = torch.jit.load(str(weights), map_location=device).eval()
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        table = pq.read_table(path, columns=TAXI_FEATURES)
        x = torch.from_numpy(np.stack([table.column(c).to_numpy().astype(np.float32) for c in TAXI_FEATURES], 1))
        preds = []
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                preds.append(net(x[start:start + batch].to(device)).float().cpu())
        y = torch.cat(preds)[:, 0].numpy()
        pq.write_table(pa.table({"prediction": y}), out / path.name)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def scoring_core(data: Path, weights: Path, out: Path, device: str, batch: int) -> None:
    """shardscore's scoring core, as a worker runs it: the model placed once, each shard through score_shard."""
    from shardscore.commit import options_identity
    from shardscore.model import ModelSpec, load
    from shardscore.planning import plan
    from shardscore.scoring import ScoringJob, score_shard
    from shardscore.storage import StorageOptions, resolve

    scorer = load(ModelSpec("shardscore.models.torch_model:load_model", {"path": str(weights)}))
    scorer.prepare(device)
    job = ScoringJob(str(data), str(out), StorageOptions(), scorer.identity, options_identity([]), (), batch,
                     overlap=True)
    for shard in plan(resolve(str(data))).shards:
        score_shard(shard, scorer, job, {})


def ray_run(data: Path, weights: Path, out: Path, gpus_per_actor: float, batch: int, temp: Path) -> None:
    env = dict(os.environ, RAY_ADDRESS=(temp / "address").read_text().strip())
    subprocess.run([sys.executable, "-m", "shardscore.cli", "run", "--input", str(data), "--output", str(out),
                    "--model", "shardscore.models.torch_model:load_model", "--model-arg", f"path={weights}",
                    "--strategy", "actors", "--num-gpus-per-worker", str(gpus_per_actor), "--num-cpus-per-worker",
                    "1", "--device", "cuda", "--batch-size", str(batch), "--progress-interval", "0"],
                   env=env, check=True, stdout=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=65536)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-ray", action="store_true", help="skip the `shardscore run` variants")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    import torch

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "job"), os.environ.get("PYTHONPATH")]))

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ssgpu-"))
    data, weights = work / "data", work / "net.pt"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "shardscore.cli", "sample-data", "--output", str(data), "--shards",
                        str(args.files), "--rows-per-shard", str(args.rows // args.files)], check=True,
                       stdout=sys.stderr)
    net = network(args.hidden, args.layers)
    torch.jit.save(torch.jit.script(net), str(weights))
    files = sorted(data.glob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    params = sum(p.numel() for p in net.parameters())
    # Warm the device (CUDA context, kernels) before either side is timed.
    bare_loop(files[:1], weights, work / "warm", args.device, args.batch_size)
    results = [
        timed("bare PyTorch loop", lambda: bare_loop(files, weights, work / "bare", args.device, args.batch_size),
              rows),
        timed("shardscore scoring core", lambda: scoring_core(data, weights, work / "core", args.device,
                                                              args.batch_size), rows),
    ]
    if not args.no_ray:
        temp = work / "ray"
        subprocess.run(["ray", "start", "--head", "--num-gpus", "1", "--num-cpus", str(os.cpu_count()),
                        "--include-dashboard", "false", "--temp-dir", str(temp)], check=True,
                       capture_output=True)
        (temp / "address").write_text(f"127.0.0.1:{6379}")
        try:
            for share in (1.0, 0.5):
                results.append(timed(f"shardscore run, actors, {share:g} GPU each",
                                     lambda s=share: ray_run(data, weights, work / f"ray-{s}", s, args.batch_size,
                                                             temp), rows))
        finally:
            subprocess.run(["ray", "stop", "--force"], capture_output=True)
    bare = results[0]["rows_per_s"]
    for r in results:
        r["vs_bare_loop"] = round(r["rows_per_s"] / bare, 3)
    core = pq.read_table(work / "core" / files[0].name).column("prediction").to_numpy()
    reference = pq.read_table(work / "bare" / files[0].name).column("prediction").to_numpy()
    report = {"device": device_name, "torch": torch.__version__, "rows": rows, "files": len(files),
              "parameters": params, "batch_size": args.batch_size,
              "max_abs_difference": float(np.abs(core - reference).max()), "variants": results}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
