"""What a shard scores is what was planned, scored by the model that was recorded, into folders readers can read.

- An input file replaced or rewritten while the run goes stops the run (a shard's batches must not come from two
  versions, and the manifest's fingerprints must describe the bytes scored).
- A project module the model imports inside its function is part of what a rerun checks.
- A column named like a Hive partition key of the input's folders is refused before anything is written.
Runs are `shardscore run` driver processes on the multi-node test cluster (and the S3 server where it matters).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, sample
from support import commit_count, start_driver, wait_for

pytestmark = pytest.mark.ray
RERUN = "the input changed while the run was going; rerun to score the new version"
SLOW = ["--model", "slow_model:load_model", "--model-arg", "delay=0.3", "--model-arg", "payload_mb=0",
        "--batch-size", "250", "--max-in-flight", "1"]


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def replace_with_other_rows(path: Path, seed: int) -> None:
    """Another version of the file, as a producer's rewrite makes it: same name, other values (a rename over it)."""
    other = sample(path.parent.parent / f"other-{seed}", shards=1, rows=2000, seed=seed) / "part-00000.parquet"
    os.replace(other, path)


# ---------------------------------------------------------------- §3 input replaced while the run goes
def test_a_file_replaced_between_plan_and_scoring_stops_the_run_and_keeps_what_was_committed(ray_cluster,
                                                                                              shardscore,
                                                                                              tmp_path: Path):
    inp = sample(tmp_path / "in", shards=5, rows=2000)
    out = tmp_path / "out"
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), *SLOW)
    wait_for(lambda: commit_count(out) >= 1, 120, "a committed shard")
    replace_with_other_rows(inp / "part-00004.parquet", seed=7)  # one shard at a time: this one has not started
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 3, output[-3000:]
    assert f"input file {inp / 'part-00004.parquet'} was replaced since the run planned it: fingerprint" in output
    assert RERUN in output and "stay committed" in output, output[-3000:]
    assert not (out / "_SUCCESS").exists() and manifest(out)["status"] == "aborted"
    kept = [s for s in manifest(out)["shards"] if s["status"] == "committed"]
    assert kept and all((out / s["output"]).exists() for s in kept)
    assert not (out / "part-00004.parquet").exists()
    r = shardscore("run", "--input", str(inp), "--output", str(out), *SLOW[:6])  # the rerun scores the new version
    assert r.returncode == 0, r.stderr[-3000:]
    assert_readable(out, manifest(out))
    assert manifest(out)["totals"]["rows_out"] == 5 * 2000
    planned = manifest(out)["input_fingerprints"]["part-00004.parquet"]
    assert next(s for s in manifest(out)["shards"] if s["shard_id"] == "part-00004.parquet")[
        "input_fingerprint"] == planned


@pytest.mark.s3
def test_on_s3_an_object_replaced_between_plan_and_scoring_stops_the_run(shardscore, ray_cluster, s3,
                                                                         tmp_path: Path):
    bucket = f"identity-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    s3_args = ["--s3-endpoint", s3.endpoint]
    assert shardscore("sample-data", "--output", f"s3://{bucket}/in", "--shards", "4", "--rows-per-shard", "2000",
                      *s3_args).returncode == 0
    driver = start_driver(ray_cluster, "run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
                          *SLOW, *s3_args)

    def committed() -> bool:
        return client.list_objects_v2(Bucket=bucket, Prefix="out/_shardscore/commits/").get("KeyCount", 0) > 0

    wait_for(committed, 120, "a committed shard on S3")
    other = sample(tmp_path / "other", shards=1, rows=2000, seed=5) / "part-00000.parquet"
    client.put_object(Bucket=bucket, Key="in/part-00003.parquet", Body=other.read_bytes())
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 3, output[-3000:]
    assert f"input file s3://{bucket}/in/part-00003.parquet was replaced since the run planned it" in output, output
    assert RERUN in output
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}
    assert "out/_SUCCESS" not in keys and "out/part-00003.parquet" not in keys
    status = json.loads(client.get_object(Bucket=bucket, Key="out/_manifest.json")["Body"].read())["status"]
    assert status == "aborted"


def test_a_file_rewritten_in_place_while_its_row_group_shard_reads_it_stops_the_run(ray_cluster, tmp_path: Path):
    """Same bytes, so the same size and footer: only the new mtime tells, and only after the read."""
    inp = sample(tmp_path / "in", shards=1, rows=4000, row_group_size=1000)
    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.mkdir()
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), "--model",
                          "gate_model:load_model", "--model-arg", f"gate={gate}", "--max-rows-per-shard", "1000",
                          "--max-in-flight", "1", "--batch-size", "500")
    wait_for(lambda: (gate / "waiting").exists(), 120, "the first shard's first batch")
    path = inp / "part-00000.parquet"
    before = path.stat()
    path.write_bytes(path.read_bytes())  # rewritten in place, by a producer that wrote the same rows again
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    (gate / "open").touch()
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 3, output[-3000:]
    assert f"input file {path} changed while this shard was reading it: fingerprint" in output, output
    assert RERUN in output and "(nothing was changed)" in output, output[-3000:]
    assert commit_count(out) == 0 and not (out / "_SUCCESS").exists()
    assert not list(out.rglob("*.parquet"))


# ---------------------------------------------------------------- §8 modules the model imports lazily
HELPER = "import pyarrow.compute as pc\n\ndef score(values):\n    return pc.multiply(values, {FACTOR})\n"


def test_an_edit_to_a_module_the_model_imports_lazily_makes_its_shards_stale(ray_cluster, shardscore,
                                                                              tmp_path: Path):
    helpers = tmp_path / "project"
    helpers.mkdir()
    (helpers / "lazy_helper.py").write_text(HELPER.replace("{FACTOR}", "2"))
    # On the driver's PYTHONPATH, where the rerun looks the module up; the workers get the folder from the model
    # (Ray passes a driver's script folder and working directory on to workers, not its PYTHONPATH:
    # ray/_private/worker.py, connect, `_py_driver_sys_path`).
    env = {"PYTHONPATH": os.pathsep.join([str(helpers), ray_cluster.env["PYTHONPATH"]])}
    inp = sample(tmp_path / "in", shards=2, rows=500)
    out = tmp_path / "out"
    args = ["run", "--input", str(inp), "--output", str(out), "--model", "lazy_model:load_model", "--model-arg",
            f"root={helpers}"]
    r = shardscore(*args, env=env)
    assert r.returncode == 0, r.stderr[-3000:] + json.dumps(manifest(out)["failures"])
    assert_readable(out, manifest(out))
    recorded = [s["loaded_sources"] for s in manifest(out)["shards"]]
    assert all(set(s) == {"lazy_helper"} for s in recorded), recorded  # the helper, and no other module
    first = pq.read_table(out / "part-00000.parquet").column("score").to_pylist()
    assert shardscore(*args, env=env).returncode == 0  # unchanged: nothing to do, nothing refused
    (helpers / "lazy_helper.py").write_text(HELPER.replace("{FACTOR}", "3"))
    r = shardscore(*args, env=env)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "shard part-00000.parquet: model source lazy_helper changed since it was scored" in r.stderr, r.stderr
    r = shardscore(*args, "--overwrite", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_readable(out, manifest(out))
    assert manifest(out)["totals"]["recomputed_stale"] == 2
    again = pq.read_table(out / "part-00000.parquet").column("score").to_pylist()
    assert again == [v / 2 * 3 for v in first]
    (helpers / "lazy_helper.py").unlink()  # gone from the driver's path: its shards cannot be vouched for
    r = shardscore(*args, env=env)
    assert r.returncode == 2 and "model source lazy_helper changed since it was scored (it is no longer found" \
        in r.stderr, r.stderr


def test_shards_scored_by_two_copies_of_a_lazily_imported_module_fail_the_run(ray_cluster, shardscore,
                                                                             tmp_path: Path):
    """Two nodes with different code: an actor on each (3 actors need both worker nodes' CPUs)."""
    root = tmp_path / "nodes"
    for n, role in enumerate(("cpu_group", "gpu_group")):
        (root / ray_cluster.node_ids[role]).mkdir(parents=True)
        (root / ray_cluster.node_ids[role] / "lazy_helper.py").write_text(HELPER.replace("{FACTOR}", str(n + 2)))
    inp = sample(tmp_path / "in", shards=12, rows=200)
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model", "lazy_model:load_model",
                   "--model-arg", f"root={root}", "--model-arg", "per_node=true", "--strategy", "actors",
                   "--num-actors", "3", "--max-shards-per-task", "1")
    assert r.returncode == 1, r.stderr[-3000:]
    failures = manifest(out)["failures"]
    assert failures and all("the model's source lazy_helper differs from the one shard" in f["reason"]
                            for f in failures), failures
    assert not (out / "_SUCCESS").exists() and manifest(out)["status"] == "failed"
    digests = {d for s in manifest(out)["shards"] if s["status"] == "committed" for d in s["loaded_sources"].values()}
    assert len(digests) == 1  # what stays committed was scored by one copy
    assert not any((out / f["shard_id"]).exists() for f in failures)


# ---------------------------------------------------------------- §9 columns named like a partition key
def partitioned(root: Path, folders: list[str], with_column: str | None = None) -> Path:
    for n, folder in enumerate(folders):
        table = pq.read_table(sample(root.parent / f"gen-{n}", shards=1, rows=300, seed=n) / "part-00000.parquet")
        if with_column:
            table = table.append_column(with_column, pa.array([folder.split("=", 1)[1]] * table.num_rows))
        (root / folder).mkdir(parents=True)
        pq.write_table(table, root / folder / "part-0.parquet")
        shutil.rmtree(root.parent / f"gen-{n}")
    return root


def test_a_key_column_named_like_a_partition_key_is_refused_before_ray_starts(cli, tmp_path: Path):
    inp = partitioned(tmp_path / "in", ["Date=2026-12-03", "Date=2026-12-04"], with_column="date")
    for command in (["plan"], ["run", "--output", str(tmp_path / "out")]):
        r = cli(*command, "--input", str(inp), "--model", "named_model:load_model", "--key-columns", "date")
        assert r.returncode == 2, r.stderr
        assert "--key-columns: 'date' is named like the partition key of the input's folder Date=2026-12-0" \
            in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_prediction_column_named_like_a_partition_key_stops_the_run_at_the_first_shard(shardscore,
                                                                                         tmp_path: Path):
    inp = partitioned(tmp_path / "in", ["region=eu/day=1", "region=eu/day=2", "region=us/day=1",
                                        "region=us/day=2"])
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model", "named_model:load_model",
                   "--model-arg", "name=day")
    assert r.returncode == 3, r.stderr[-3000:]
    assert r.stderr.count("the model returns a column 'day', named like the partition key of the input's "
                          "folder day=1") == 1, r.stderr
    assert not (out / "_SUCCESS").exists() and not list(out.rglob("*.parquet"))
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model", "named_model:load_model",
                   "--model-arg", "name=score", "--key-columns", "passenger_count")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_readable(out, manifest(out))
    rows = duckdb.sql(f"select region, day, score, passenger_count from read_parquet('{out}/**/*.parquet') "
                      "where score <> passenger_count * 0.5").fetchall()
    assert rows == []  # DuckDB reads the predictions as written, beside the folders' keys
