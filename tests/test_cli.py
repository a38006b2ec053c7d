"""The command line: bad options, missing input, unwritable output and stale output fail fast, by name,
before Ray starts or anything is written; `plan` and `sample-data` work without a cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datasets import corrupt, drop_column, sample
from shardscore.sample_data import SCHEMA

DUMMY = ["--model", "shardscore.models.dummy:load_model"]


def _no_ray_started(r) -> bool:
    return "Started a local Ray instance" not in r.stderr + r.stdout


@pytest.mark.parametrize("args,message", [
    (["--strategy", "threads"], "invalid choice: 'threads'"),
    (["--num-gpus-per-worker", "-1"], "--num-gpus-per-worker -1"),
    (["--batch-size", "ten"], "--batch-size: invalid value 'ten'"),
    (["--memory-per-worker", "lots"], "invalid value 'lots' for memory_per_worker"),
    (["--device", "cuda"], "--device cuda needs --num-gpus-per-worker > 0"),
    (["--model-arg", "novalue"], "--model-arg 'novalue': expected KEY=VALUE"),
])
def test_invalid_options_are_named(cli, tmp_path: Path, args, message):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert _no_ray_started(r) and not (tmp_path / "out").exists()


def test_missing_input_unwritable_output_and_bad_model_are_named(cli, tmp_path: Path):
    r = cli("run", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"), *DUMMY)
    assert r.returncode == 2 and f"input {tmp_path}/missing: no such file or directory" in r.stderr
    inp = sample(tmp_path / "in", shards=1, rows=10)
    (tmp_path / "file").write_text("not a directory")
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "file" / "out"), *DUMMY)
    assert r.returncode == 2 and f"output {tmp_path}/file/out: cannot write there" in r.stderr, r.stderr
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", "no_such_module:f")
    assert r.returncode == 2 and "cannot import module 'no_such_module'" in r.stderr
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY, "--key-columns", "vendor,vendor_id")
    assert r.returncode == 2 and "--key-columns: ['vendor'] not in the input's columns" in r.stderr, r.stderr
    no_counts = sample(tmp_path / "no_counts", shards=1, rows=10)
    drop_column(no_counts / "part-00000.parquet", "passenger_count")
    r = cli("run", "--input", str(no_counts), "--output", str(tmp_path / "out"), *DUMMY)
    assert r.returncode == 2 and "reads columns ['passenger_count'] that the input does not have" in r.stderr
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY, "--model-arg", "size=3")
    assert r.returncode == 2 and "the factory rejected the model arguments ['size']" in r.stderr
    assert "Traceback" not in r.stderr and _no_ray_started(r) and not (tmp_path / "out").exists()


def test_plan_is_a_dry_run(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=1000, row_group_size=250)
    corrupt(inp / "part-00002.parquet")
    r = cli("plan", "--input", str(inp), *DUMMY, "--max-rows-per-shard", "500", "--json")
    info = json.loads(r.stdout)
    assert r.returncode == 1  # a problem was found
    assert info["shards"] == 5 and info["rows"] == 2000 and info["columns_read"] == ["passenger_count"]
    assert [p["shard_id"] for p in info["problems"]] == ["part-00002.parquet"]
    assert not any(p.name.startswith("_") for p in inp.iterdir())


def test_plan_writes_nothing_to_the_output(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=2, rows=10)
    out = tmp_path / "out"
    out.mkdir()
    r = cli("plan", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 0, r.stderr
    assert f"output {out}: 0 committed, 2 to score" in r.stdout
    assert list(out.iterdir()) == []


def test_a_symlink_loop_in_the_input_is_reported_not_followed(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    (inp / "sub").mkdir()
    os.symlink("..", inp / "sub" / "loop")
    os.symlink(str(inp / "part-00000.parquet"), inp / "sub" / "linked.parquet")  # symlinked files still work
    r = cli("plan", "--input", str(inp), *DUMMY, "--json")
    info = json.loads(r.stdout)
    assert info["shards"] == 2, info
    assert info["warnings"] == ["symbolic link sub/loop -> .. not followed: it loops"]


@pytest.mark.parametrize("args,message", [
    (["--num-cpus-per-worker", "nan"], "--num-cpus-per-worker nan: must be a finite number"),
    (["--num-gpus-per-worker", "inf"], "--num-gpus-per-worker inf: must be a finite number"),
    (["--pool-idle-timeout", "1e999"], "--pool-idle-timeout inf: must be a finite number"),
    (["--lease-ttl=-inf"], "--lease-ttl -inf: must be a finite number"),
])
def test_nan_and_inf_are_refused_by_name(cli, tmp_path: Path, args, message):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_environment_options_that_are_misspelt_or_not_booleans(cli, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=1, rows=10)
    r = cli("plan", "--input", str(inp), *DUMMY, env={"SHARDSCORE_BATCHSIZE": "10"})
    assert r.returncode == 0
    assert ("warning: environment variable SHARDSCORE_BATCHSIZE is not an option; did you mean "
            "SHARDSCORE_BATCH_SIZE?") in r.stderr
    # The project's own build and test variables are no misspelt options (CI exports SHARDSCORE_KUBERAY_ARCHIVE).
    r = cli("plan", "--input", str(inp), *DUMMY, env={"SHARDSCORE_KUBERAY_ARCHIVE": "/a.tar.gz",
                                                      "SHARDSCORE_CLUSTER_CACHE": "/c", "SHARDSCORE_E2E_KUBECONFIG": "k"})
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = cli("plan", "--input", str(inp), *DUMMY, env={"SHARDSCORE_OVERWRITE": "ture"})
    assert r.returncode == 2 and "SHARDSCORE_OVERWRITE: invalid value 'ture' for overwrite" in r.stderr, r.stderr
    (tmp_path / "c.yaml").write_text("overwrite: maybe\n")
    r = cli("plan", "--input", str(inp), *DUMMY, "--config", str(tmp_path / "c.yaml"))
    assert r.returncode == 2 and "invalid value 'maybe' for overwrite" in r.stderr, r.stderr


def test_sample_data_has_the_taxi_schema_and_dirty_values(cli, tmp_path: Path):
    r = cli("sample-data", "--output", str(tmp_path / "d"), "--shards", "2", "--rows-per-shard", "20000")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(tmp_path / "d" / "part-00000.parquet")
    assert table.schema.equals(SCHEMA) and table.num_rows == 20000
    counts = table.column("passenger_count").to_numpy()
    assert (counts == 0).any() and (counts < 0).any()
    again = tmp_path / "again"
    cli("sample-data", "--output", str(again), "--shards", "1", "--rows-per-shard", "20000")
    assert (again / "part-00000.parquet").read_bytes() == (tmp_path / "d" / "part-00000.parquet").read_bytes()


def test_demo_runs_on_a_local_ray(cli, tmp_path: Path):
    r = cli("demo", "--workdir", str(tmp_path / "demo"), "--shards", "2", "--rows-per-shard", "2000", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"Predictions are in {tmp_path}/demo/predictions" in r.stdout
    assert (tmp_path / "demo" / "predictions" / "_SUCCESS").exists()
