"""MLflow on the cluster (issue 21 §3). The chart's RayJob scores with `models:/<name>@<alias>` from an MLflow
tracking server on the host (SQLite backend store) whose artifacts live on the host's S3, where the pods read them
themselves (`--no-serve-artifacts`: the server only says where they are). The pods run shardscore's image derived
with the loader's libraries (image/derived/build.sh with requirements, as docs/models-on-kubernetes.md says).
Every row is the registered version's own predict; moving the alias and rerunning is refused with the reason, and
`job.overwrite` re-scores with the new version.
"""

from __future__ import annotations

import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import MLFLOW_SERVER, make_tempdir, start_mlflow, stop_process

from .clusterlib import (ROW_KEY, S3_CREDENTIALS, Dataset, fullname, job_logs, log, manifest_of, rayjob_succeeded,
                         run_chart_once, write_input)

SPEC = "shardscore.models.mlflow_model:load_model"
NAME = "e2e-riders"
FEATURES = ["passenger_count", "fare_amount"]


@pytest.fixture(scope="module")
def tracking(target, s3):
    """The MLflow tracking server on the address pods reach the host at; artifacts under s3://<bucket>/artifacts."""
    if not MLFLOW_SERVER.exists():
        pytest.skip(f"cluster e2e: the MLflow tracking server is missing ({MLFLOW_SERVER}: make .tools/mlflow/bin/mlflow)")
    bucket = s3.bucket(f"mlflow-{uuid.uuid4().hex[:6]}")
    server = start_mlflow(make_tempdir("e2e-mlflow-"), target.host_address, f"s3://{bucket}/artifacts")
    log(f"MLflow tracking server on the host at {server.uri} (log {server.log_path})")
    yield server
    stop_process(server.process)


def _frame(s3, data: Dataset):
    """The whole input as one pandas frame, in row_id order."""
    tables = [pq.read_table(io.BytesIO(s3.read(data.bucket, k))) for k in sorted(s3.keys(data.bucket, data.prefix))]
    return pa.concat_tables(tables).to_pandas()


def _register(tracking, s3, frame, monkeypatch) -> list:
    """Two versions of a scikit-learn model that answer differently, registered under NAME, `champion` on 1."""
    for key, value in {**S3_CREDENTIALS, "MLFLOW_TRACKING_URI": tracking.uri, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
                       "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        monkeypatch.setenv(key, value)
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X = frame[FEATURES]
    models = []
    for y in (frame["fare_amount"] > 0.5, frame["passenger_count"] >= 3):
        model = LogisticRegression().fit(X, y.astype(int))
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="model", signature=infer_signature(X, model.predict(X)),
                                     registered_model_name=NAME, serialization_format="pickle")
        models.append(model)
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", 1)
    return models


def _assert_scored_by(s3, ns: str, frame, model, version_: int) -> str:
    """Every row once, each the version's own predict; the output's model identity."""
    manifest = manifest_of(s3, ns, "scores")
    assert manifest["status"] == "succeeded" and manifest["totals"]["rows_out"] == len(frame), manifest["totals"]
    files = [k for k in s3.keys(ns, "scores") if k.endswith(".parquet") and "/_" not in k]
    out = pa.concat_tables([pq.read_table(io.BytesIO(s3.read(ns, k))) for k in files]).to_pandas()
    assert sorted(out[ROW_KEY]) == list(frame[ROW_KEY]), "each input row exactly once"
    got = dict(zip(out[ROW_KEY], out["prediction"], strict=True))
    expected = dict(zip(frame[ROW_KEY], model.predict(frame[FEATURES]), strict=True))
    wrong = [k for k in expected if got[k] != expected[k]]
    assert not wrong, f"{len(wrong)} rows are not version {version_}'s predict, e.g. row_id {wrong[:5]}"
    return manifest["model"]["identity"]


def test_a_registered_alias_scores_on_the_cluster_and_moving_it_refuses_until_overwrite(
        kube, helm, s3, s3_namespace, tracking, monkeypatch, derived_image):
    ns = s3_namespace.name
    data = write_input(s3, ns, "input", shards=3, rows=2000)
    frame = _frame(s3, data)
    models = _register(tracking, s3, frame, monkeypatch)
    repository, tag = derived_image.split(":")  # with this venv's scikit-learn, which pickled the registry's model
    env = [{"name": "MLFLOW_TRACKING_URI", "value": tracking.uri},
           {"name": "MLFLOW_S3_ENDPOINT_URL", "value": s3.endpoint},
           {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"}]
    job = {"image.repository": repository, "image.tag": tag, "extraEnv": env, "job.model": SPEC,
           "job.modelArgs": {"uri": f"models:/{NAME}@champion"}, "job.input": data.uri,
           "job.output": f"s3://{ns}/scores"}

    # Three runs, one RayCluster: the first release's (cpu-values.yaml), on which the next two run RayJobs alone. Its
    # idle workers stay between runs: with the overlay's 30 s the autoscaler removed them before the third run, which
    # then took 2 minutes, a new worker pod's start included (seen).
    cluster = fullname("champion1")
    final = run_chart_once(kube, helm, s3, ns, "champion1", {**job, "cluster.autoscaling.idleTimeoutSeconds": 300},
                           on=cluster)
    assert rayjob_succeeded(final), final["status"]
    first = _assert_scored_by(s3, ns, frame, models[0], 1)

    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", 2)
    final = run_chart_once(kube, helm, s3, ns, "champion2", job, on=cluster)  # refused
    assert not rayjob_succeeded(final), final["status"]
    said = (final["status"].get("message") or "") + "\n".join(job_logs(kube, ns, fullname("champion2")))
    assert "scored by another model" in said, said[-3000:]
    assert _assert_scored_by(s3, ns, frame, models[0], 1) == first  # refused: nothing of version 2 was written

    final = run_chart_once(kube, helm, s3, ns, "champion3", {**job, "job.overwrite": True}, on=cluster)
    assert rayjob_succeeded(final), final["status"]
    assert _assert_scored_by(s3, ns, frame, models[1], 2) != first
