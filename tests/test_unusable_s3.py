"""Issue 20, bad input: without AWS credentials every s3:// location of a run (an input folder or Delta table, an
output folder, a Delta table, an Iceberg table's warehouse) is refused before Ray with exit 2, naming the location and
what to set (storage.require_credentials); nothing is written. Without the check, delta-rs answered with an
instance-metadata error and the others each their own way. A store that does not answer is refused so too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import BIN, base_env, free_port
from test_iceberg_output import Catalog, _input

pytestmark = pytest.mark.s3


@pytest.mark.parametrize("option, location", [
    ("--input", "s3://{bucket}/in"),
    ("--input", "delta+s3://{bucket}/table"),
    ("--output", "s3://{bucket}/out"),
    ("--output", "delta+s3://{bucket}/table"),
    ("--output", "iceberg://t/scores.taxi"),
])
def test_an_s3_location_without_credentials_is_refused_before_ray_naming_what_to_set(s3, tmp_path: Path, option,
                                                                                     location):
    bucket, client = s3.new_bucket("nocreds")
    catalog = Catalog(tmp_path, warehouse=f"s3://{bucket}/warehouse", **{"s3.endpoint": s3.endpoint})
    given = {"--input": str(_input(tmp_path)), "--output": str(tmp_path / "out"), option: location.format(bucket=bucket)}
    # No AWS variable, and a HOME without ~/.aws: botocore's chain ends at the instance metadata, which answers nothing.
    env = {k: v for k, v in base_env(**catalog.env).items() if not k.startswith("AWS_")} | {"HOME": str(tmp_path)}
    r = subprocess.run([str(BIN / "shardscore"), "run", "--input", given["--input"], "--output", given["--output"],
                        "--s3-endpoint", s3.endpoint, "--model", "scale_model:load_model", "--model-arg", "factor=2",
                        "--key-columns", "id"], env=env, capture_output=True, text=True, timeout=300)
    wanted = f"{option} {given[option]}: no AWS credentials found for s3://{bucket}/"
    assert r.returncode == 2 and wanted in r.stderr and "AWS_ACCESS_KEY_ID" in r.stderr, r.stderr[-3000:]
    assert "Started a local Ray" not in r.stderr
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("output, said", [
    ("delta+s3://lake/table", "--output delta+s3://lake/table: the Delta table cannot be read"),
    ("iceberg://t/scores.taxi", "output s3://lake/warehouse/scores/taxi: cannot be reached"),
])
def test_a_table_whose_store_does_not_answer_is_refused_before_ray(cli, tmp_path: Path, output, said):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    catalog = Catalog(tmp_path, warehouse="s3://lake/warehouse", **{"s3.endpoint": endpoint})
    r = cli("run", "--input", str(_input(tmp_path)), "--output", output, "--s3-endpoint", endpoint, "--model",
            "scale_model:load_model", "--model-arg", "factor=2", "--key-columns", "id", env=catalog.env)
    assert r.returncode == 2 and said in r.stderr, r.stderr[-3000:]
    assert "Started a local Ray" not in r.stderr
