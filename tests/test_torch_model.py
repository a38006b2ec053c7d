"""The shipped PyTorch model: TorchScript or state dict, batched inference, once-per-worker device placement."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch model tests need torch (make venv installs it)")

from datasets import sample  # noqa: E402
from shardscore.errors import DeviceError  # noqa: E402
from shardscore.model import ModelSpec, load  # noqa: E402
from shardscore.models.torch_model import TAXI_FEATURES, TaxiFareNet, save_example  # noqa: E402
from shardscore.planning import plan  # noqa: E402
from shardscore.scoring import ScoringJob, score_shard  # noqa: E402
from shardscore.storage import StorageOptions, resolve  # noqa: E402

SPEC = "shardscore.models.torch_model:load_model"


def _reference(inp: Path) -> np.ndarray:
    table = pq.read_table(inp, columns=TAXI_FEATURES)
    x = torch.from_numpy(np.stack([table.column(c).to_numpy().astype(np.float32) for c in TAXI_FEATURES], 1))
    with torch.no_grad():
        return TaxiFareNet()(x)[:, 0].numpy()


@pytest.mark.parametrize("torchscript", [True, False])
def test_predictions_match_the_network(tmp_path: Path, torchscript: bool):
    inp = sample(tmp_path / "in", shards=1, rows=3000)
    weights = save_example(str(tmp_path / "net.pt"), torchscript=torchscript)
    args = {"path": weights} if torchscript else {
        "state_dict": weights, "module": "shardscore.models.torch_model:TaxiFareNet"}
    scorer = load(ModelSpec(SPEC, args))
    scorer = pickle.loads(pickle.dumps(scorer))  # what ray.put does: the bytes travel, not the module
    scorer.prepare("cpu")
    job = ScoringJob(str(inp), str(tmp_path / "out"), StorageOptions(), scorer.identity, "o", (), 1024)
    score_shard(plan(resolve(str(inp))).shards[0], scorer, job, {})
    got = pq.read_table(tmp_path / "out" / "part-00000.parquet").column("prediction").to_numpy()
    np.testing.assert_allclose(got, _reference(inp / "part-00000.parquet"), rtol=1e-5, atol=1e-5)


def test_device_batches_and_bf16_autocast_give_the_networks_answer(tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=5000)
    weights = save_example(str(tmp_path / "net.pt"))
    scorer = load(ModelSpec(SPEC, {"path": weights, "device_batch_size": 700, "autocast": "bf16"}))
    scorer.prepare("cpu")
    job = ScoringJob(str(inp), str(tmp_path / "out"), StorageOptions(), scorer.identity, "o", (), 2048, overlap=True)
    score_shard(plan(resolve(str(inp))).shards[0], scorer, job, {})
    got = pq.read_table(tmp_path / "out" / "part-00000.parquet").column("prediction").to_numpy()
    want = _reference(inp / "part-00000.parquet")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=5e-2, atol=5e-2 * float(np.abs(want).max()))  # bf16: ~3 digits
    assert not np.array_equal(got, want)  # it did run in bf16


def test_weights_change_the_model_identity(tmp_path: Path):
    a = load(ModelSpec(SPEC, {"path": save_example(str(tmp_path / "a.pt"), seed=0)}))
    b = load(ModelSpec(SPEC, {"path": save_example(str(tmp_path / "a.pt"), seed=1)}))
    assert a.identity != b.identity


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the no-CUDA error cannot happen")
def test_cuda_without_a_gpu_is_an_error_not_a_cpu_fallback(tmp_path: Path):
    scorer = load(ModelSpec(SPEC, {"path": save_example(str(tmp_path / "net.pt"))}))
    with pytest.raises(DeviceError, match="--device cuda: no CUDA device on worker"):
        scorer.prepare("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA: none on this machine")
def test_cuda_path_matches_cpu(tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=50_000)
    scorer = load(ModelSpec(SPEC, {"path": save_example(str(tmp_path / "net.pt"))}))
    scorer.prepare("cuda")
    assert next(scorer.model._net.parameters()).is_cuda
    job = ScoringJob(str(inp), str(tmp_path / "out"), StorageOptions(), scorer.identity, "o", (), 8192)
    score_shard(plan(resolve(str(inp))).shards[0], scorer, job, {})
    got = pq.read_table(tmp_path / "out" / "part-00000.parquet").column("prediction").to_numpy()
    np.testing.assert_allclose(got, _reference(inp / "part-00000.parquet"), rtol=1e-3, atol=1e-3)


def test_a_file_torch_did_not_write_is_refused_before_scoring(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    (tmp_path / "net.pt").write_bytes(b"not a model")
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", SPEC,
            "--model-arg", f"path={tmp_path / 'net.pt'}")
    assert r.returncode == 2 and "net.pt is not a file written by torch.save" in r.stderr, r.stderr


@pytest.mark.ray
def test_weights_that_do_not_load_abort_the_run_before_any_shard(shardscore, tmp_path: Path):
    import zipfile

    inp = sample(tmp_path / "in", shards=3, rows=100)
    with zipfile.ZipFile(tmp_path / "net.pt", "w") as z:
        z.writestr("archive/data.pkl", b"garbage")
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", SPEC,
                   "--model-arg", f"path={tmp_path / 'net.pt'}")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "the model could not be loaded on worker" in r.stderr
    assert not list((tmp_path / "out").glob("*.parquet"))


@pytest.mark.ray
def test_torch_model_on_the_cluster_with_actors(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=4, rows=2000)
    weights = save_example(str(tmp_path / "net.pt"))
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", SPEC,
                   "--model-arg", f"path={weights}", "--strategy", "actors", "--key-columns", "pickup_at")
    assert r.returncode == 0, r.stderr[-3000:]
    out = pq.read_table(tmp_path / "out" / "part-00003.parquet")
    np.testing.assert_allclose(out.column("prediction").to_numpy(), _reference(inp / "part-00003.parquet"),
                               rtol=1e-5, atol=1e-5)


def test_the_gpu_benchmark_runs_and_agrees_with_the_bare_loop(tmp_path: Path):
    """bench/gpu.py is what measures the GPU path on a GPU machine; here it runs small, on the CPU."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "gpu.py"), "--device", "cpu", "--rows", "20000",
                        "--files", "2", "--hidden", "32", "--batch-size", "4096", "--no-ray", "--workdir",
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["rows"] == 20000 and [v["name"] for v in report["variants"]] == [
        "bare PyTorch loop", "shardscore scoring core"]
    assert report["max_abs_difference"] < 1e-4
