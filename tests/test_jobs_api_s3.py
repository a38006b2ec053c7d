"""The RayJob path: `ray job submit` through the Jobs API (as KubeRay's submitter does), s3:// in and out."""

from __future__ import annotations

import json
import shlex
import uuid

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from support import BIN

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def _s3fs(s3) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=s3.endpoint.split("://")[1], scheme="http", region="us-east-1",
                             access_key="testing", secret_key="testing")


def test_submitted_job_scores_s3_input_into_s3_output(ray_cluster, s3, tmp_path):
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    r = ray_cluster_cli(ray_cluster, "sample-data", "--output", f"s3://{bucket}/taxi", "--shards", "5",
                        "--rows-per-shard", "1500", "--s3-endpoint", s3.endpoint)
    assert r.returncode == 0, r.stderr
    entrypoint = shlex.join([
        "shardscore", "run", "--input", f"s3://{bucket}/taxi", "--output", f"s3://{bucket}/scores",
        "--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=4",
        "--s3-endpoint", s3.endpoint, "--strategy", "actors", "--progress-interval", "0.5",
    ])
    job_id = f"shardscore-{uuid.uuid4().hex[:8]}"
    ray_cluster.ray("job", "submit", "--address", ray_cluster.dashboard, "--no-wait", "--submission-id", job_id,
                    "--", *shlex.split(entrypoint))
    logs = ray_cluster.ray("job", "logs", "--address", ray_cluster.dashboard, "--follow", job_id,
                           timeout=300).stdout
    status = ray_cluster.ray("job", "status", "--address", ray_cluster.dashboard, job_id)
    status = status.stdout + status.stderr
    assert f"Job '{job_id}' succeeded" in status, logs[-3000:]
    assert "shardscore: 5/5 shards (100.0%)" in logs  # progress lines reach `ray job logs`
    assert "shardscore: run succeeded: 5/5 shards committed" in logs

    fs = _s3fs(s3)
    with fs.open_input_stream(f"{bucket}/scores/_manifest.json") as f:
        manifest = json.loads(f.read())
    assert manifest["totals"]["rows_in"] == 7500 and manifest["totals"]["failed"] == 0
    assert fs.get_file_info(f"{bucket}/scores/_SUCCESS").is_file
    scores = ds.dataset(f"{bucket}/scores", filesystem=fs, format="parquet").to_table()
    assert scores.num_rows == 7500

    # A RayJob retry reruns the same entrypoint on a new cluster: it must find everything committed.
    again = f"{job_id}-retry"
    ray_cluster.ray("job", "submit", "--address", ray_cluster.dashboard, "--submission-id", again, "--",
                    *shlex.split(entrypoint), timeout=300)
    logs = ray_cluster.ray("job", "logs", "--address", ray_cluster.dashboard, again).stdout
    assert "5 already committed (skipped)" in logs
    assert ds.dataset(f"{bucket}/scores", filesystem=fs, format="parquet").to_table().num_rows == 7500


def test_missing_bucket_is_named_before_scoring(ray_cluster, s3, tmp_path):
    r = ray_cluster_cli(ray_cluster, "run", "--input", "s3://no-such-bucket/in", "--output", str(tmp_path / "o"),
                        "--model", "shardscore.models.dummy:load_model", "--s3-endpoint", s3.endpoint)
    assert r.returncode == 2 and "s3://no-such-bucket/in" in r.stderr, r.stderr


def ray_cluster_cli(ray_cluster, *args: str):
    import subprocess

    env = {**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address}
    return subprocess.run([str(BIN / "shardscore"), *args], env=env, capture_output=True, text=True, timeout=300)
