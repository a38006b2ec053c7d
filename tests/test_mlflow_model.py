"""The MLflow loader against a real MLflow tracking server (SQLite backend, artifacts through the server): a
registered version, an alias, a run's model, scored on the multi-node Ray cluster and equal to the model's own
predict; an alias moved to another version refuses the output the old version scored, and --overwrite re-scores
it; a signature the input does not fit, an unknown alias and a missing mlflow exit 2 before Ray starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datasets import retype, sample
from shardscore.model import ModelSpec
from support import ONE_WORKER

SPEC = "shardscore.models.mlflow_model:load_model"
FEATURES = ["passenger_count", "trip_distance", "fare_amount", "tip_amount"]
NAME = "taxi-tips"


@pytest.fixture(scope="module")
def registry(mlflow_server, tmp_path_factory) -> dict:
    """Two versions of a scikit-learn pipeline registered under NAME, the alias `champion` on version 1."""
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.uri  # this process's client (the fixture's logging)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inp = sample(tmp_path_factory.mktemp("mlflow") / "in", shards=3, rows=2000)
    train = pq.read_table(inp / "part-00000.parquet").to_pandas()
    X, y = train[FEATURES], (train["tip_amount"] > train["fare_amount"] * 0.1).astype(int)
    models, runs = [], []
    for c in (1.0, 0.001):  # two versions that answer differently
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c)).fit(X, y)
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)),
                                     registered_model_name=NAME, serialization_format="cloudpickle")
        models.append(model)
        runs.append(run.info.run_id)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", 1)
    yield {"input": inp, "models": models, "runs": runs, "env": {"MLFLOW_TRACKING_URI": mlflow_server.uri,
                                                                   "MLFLOW_DISABLE_TELEMETRY": "true"}}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY"):
        del os.environ[key]


def _run(shardscore, registry: dict, out: Path, uri: str, *more: str):
    return shardscore("run", "--input", str(registry["input"]), "--output", str(out), "--model", SPEC,
                      "--model-arg", f"uri={uri}", *ONE_WORKER, *more, env=registry["env"])


def _assert_scored_by(out: Path, registry: dict, version: int) -> None:
    model = registry["models"][version - 1]
    for shard in sorted(registry["input"].glob("*.parquet")):
        frame = pq.read_table(shard).to_pandas()
        np.testing.assert_array_equal(pq.read_table(out / shard.name).column("prediction").to_numpy(),
                                      model.predict(frame[FEATURES]), err_msg=shard.name)


@pytest.mark.ray
@pytest.mark.parametrize("uri", [f"models:/{NAME}@champion", f"models:/{NAME}/1", "runs"])
def test_a_registered_model_scores_as_its_own_predict(shardscore, registry: dict, tmp_path: Path, uri: str):
    uri = f"runs:/{registry['runs'][0]}/model" if uri == "runs" else uri
    r = _run(shardscore, registry, tmp_path / "out", uri)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_scored_by(tmp_path / "out", registry, 1)


@pytest.mark.ray
def test_moving_the_alias_refuses_the_old_output_and_overwrite_rescores(shardscore, registry: dict, tmp_path: Path):
    import mlflow

    out, uri = tmp_path / "out", f"models:/{NAME}@challenger"
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(NAME, "challenger", 1)
    assert _run(shardscore, registry, out, uri).returncode == 0
    identity = json.loads((out / "_manifest.json").read_text())["model"]["identity"]
    client.set_registered_model_alias(NAME, "challenger", 2)
    r = _run(shardscore, registry, out, uri)
    assert r.returncode == 2 and "already holds predictions that do not match this run" in r.stderr, r.stderr
    _assert_scored_by(out, registry, 1)  # refused: nothing of version 2 was written
    r = _run(shardscore, registry, out, uri, "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_scored_by(out, registry, 2)
    assert json.loads((out / "_manifest.json").read_text())["model"]["identity"] != identity


def test_the_identity_holds_the_registered_version(registry: dict, monkeypatch):
    from shardscore.model import load

    for key, value in registry["env"].items():
        monkeypatch.setenv(key, value)
    one = load(ModelSpec(SPEC, {"uri": f"models:/{NAME}/1"}))
    assert one.model.fingerprint.startswith(f"{NAME} version 1 ")
    assert load(ModelSpec(SPEC, {"uri": f"models:/{NAME}/2"})).identity != one.identity


def _refused(cli, registry: dict, tmp_path: Path, uri: str, inp: Path | None = None, env: dict | None = None) -> str:
    r = cli("run", "--input", str(inp or registry["input"]), "--output", str(tmp_path / "out"), "--model", SPEC,
            "--model-arg", f"uri={uri}", env={**registry["env"], **(env or {})})
    assert r.returncode == 2, r.stdout + r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.parquet"))
    return r.stderr


def test_an_input_that_does_not_fit_the_signature_is_named(cli, registry: dict, tmp_path: Path):
    import pyarrow as pa

    inp = sample(tmp_path / "in", shards=2, rows=50)
    for shard in inp.glob("*.parquet"):
        retype(shard, "fare_amount", pa.string())
    err = _refused(cli, registry, tmp_path, f"models:/{NAME}/1", inp=inp)
    assert "does not fit the signature" in err and "column fare_amount" in err, err


def test_an_unknown_alias_is_named(cli, registry: dict, tmp_path: Path):
    err = _refused(cli, registry, tmp_path, f"models:/{NAME}@nobody")
    assert f"uri=models:/{NAME}@nobody: not found in the model registry at {registry['env']['MLFLOW_TRACKING_URI']}" \
        in err, err


def test_without_mlflow_the_extra_is_named(cli, registry: dict, tmp_path: Path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "mlflow.py").write_text("raise ImportError('No module named mlflow')\n")
    err = _refused(cli, registry, tmp_path, f"models:/{NAME}/1", env={"PYTHONPATH": str(shadow)})
    assert "needs the mlflow package" in err and "pip install 'shardscore[mlflow]'" in err, err
