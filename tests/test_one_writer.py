"""One output, one writer: a second live run is refused, a dead one is taken over, signals end a run cleanly, and a
rerun never makes a good output worse. Real concurrent `shardscore run` drivers on the multi-node test cluster."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from datasets import add_shard, mark, read_output, sample
from shardscore.lease import LEASE_DIR
from support import DriverOutput, commit_count, start_driver, wait_for

pytestmark = pytest.mark.ray
SLOW = ["--model", "slow_model:load_model", "--model-arg", "delay=0.25", "--batch-size", "500"]
DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=1"]


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def leases(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / LEASE_DIR).glob("*.json"))]


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """What a reader trusts: _SUCCESS and the manifest, with their modification times."""
    return {name: ((out / name).stat().st_mtime_ns, (out / name).read_bytes()) for name in ("_SUCCESS", "_manifest.json")}


def test_a_second_live_run_is_refused_naming_the_holder(shardscore, ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=8, rows=2000)
    out = tmp_path / "out"
    first = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), *SLOW,
                         "--key-columns", "vendor_id,pickup_at")
    wait_for(lambda: (out / LEASE_DIR).exists() and leases(out), 60, "the first run's lease")
    second = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--model-arg", "payload_mb=2")
    assert second.returncode == 2, second.stdout + second.stderr
    holder = leases(out)[-1]
    assert f"is being written by another run (run {holder['run_id']} on host {socket.gethostname()}, " \
           f"pid {first.pid}" in second.stderr, second.stderr
    assert "started 20" in second.stderr and "Started a local Ray" not in second.stderr
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    m = manifest(out)
    assert {s["model_identity"] for s in m["shards"]} == {m["model"]["identity"]}  # one model wrote it all
    assert read_output(out).num_rows == 16000 and leases(out)[-1]["released"]


def test_a_holder_killed_with_sigkill_is_taken_over_with_a_message(shardscore, ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=6, rows=2000)
    out = tmp_path / "out"
    args = ["run", "--input", str(inp), "--output", str(out), *SLOW]
    first = start_driver(ray_cluster, *args)
    wait_for(lambda: commit_count(out) >= 1 or first.poll() is not None, 120, "a committed shard")
    first.send_signal(signal.SIGKILL)
    first.wait()
    r = shardscore(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"took over the output's lease from run {leases(out)[-1]['run_id']}" not in r.stderr  # not our own
    assert f"pid {first.pid}" in r.stderr and "its process" in r.stderr and "on this host is gone" in r.stderr
    assert read_output(out).num_rows == 12000 and manifest(out)["totals"]["committed"] == 6


def _foreign_lease(out: Path, heartbeat_age: float, ttl: float = 30) -> None:
    """A lease held by a run on another host (its process cannot be checked from here)."""
    now = time.time()
    holder = {"generation": 1, "run_id": "elsewhere1", "host": "other-host", "pid": 1, "pid_started": 0.0,
              "ray_job": "rayjob-nightly-x", "started_at": now - 100, "heartbeat_at": now - heartbeat_age,
              "ttl": ttl, "released": False}
    (out / LEASE_DIR).mkdir(parents=True, exist_ok=True)
    (out / LEASE_DIR / "00000001.json").write_text(json.dumps(holder))


def test_a_live_holder_on_another_host_is_refused_and_an_expired_one_taken_over(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=2, rows=100)
    out = tmp_path / "out"
    assert shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY).returncode == 0
    before = snapshot(out)
    shutil.rmtree(out / LEASE_DIR)
    _foreign_lease(out, heartbeat_age=2)
    add_shard(inp)  # one new file: this rerun would have work to do
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 2, r.stderr
    assert "run elsewhere1 on host other-host, pid 1, Ray job rayjob-nightly-x" in r.stderr, r.stderr
    assert snapshot(out) == before  # a refused run changes nothing
    _foreign_lease(out, heartbeat_age=60)
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "took over the output's lease from run elsewhere1 on host other-host" in r.stderr
    assert re.search(r"no heartbeat for 6\d s \(lease ttl 30 s\)", r.stderr), r.stderr
    assert manifest(out)["totals"]["committed"] == 3


@pytest.mark.s3
def test_two_runs_on_one_s3_output(shardscore, ray_cluster, s3, tmp_path: Path):
    bucket = f"lease-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    inp = sample(tmp_path / "in", shards=6, rows=2000)
    out = f"s3://{bucket}/scores"
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint.split("://")[1], scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing")
    first = start_driver(ray_cluster, "run", "--input", str(inp), "--output", out, *SLOW,
                         "--s3-endpoint", s3.endpoint)
    wait_for(lambda: fs.get_file_info(f"{bucket}/scores/{LEASE_DIR}/00000001.json").is_file, 60, "the lease on S3")
    second = shardscore("run", "--input", str(inp), "--output", out, *DUMMY, "--s3-endpoint", s3.endpoint)
    assert second.returncode == 2 and "is being written by another run" in second.stderr, second.stderr
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    third = shardscore("run", "--input", str(inp), "--output", out, *SLOW, "--s3-endpoint", s3.endpoint)
    assert third.returncode == 0 and "6 already committed (skipped)" in third.stdout, third.stderr[-2000:]
    assert fs.get_file_info(f"{bucket}/scores/{LEASE_DIR}/00000002.json").is_file


def test_a_rerun_with_nothing_to_do_leaves_success_and_manifest_as_they_were(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=100)
    out = tmp_path / "out"
    assert shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY).returncode == 0
    before = snapshot(out)
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 0 and "3 already committed (skipped)" in r.stdout
    assert snapshot(out) == before


@pytest.mark.parametrize("why", ["model fails on the workers", "no CUDA"])
def test_a_rerun_that_fails_before_changing_a_shard_leaves_the_good_output(shardscore, tmp_path: Path, why: str):
    inp = sample(tmp_path / "in", shards=2, rows=100)
    out = tmp_path / "out"
    flag = tmp_path / "broken"
    model = ["--model", "rogue_model:load_model", "--model-arg", "mode=worker_fails", "--model-arg", f"flag={flag}"]
    assert shardscore("run", "--input", str(inp), "--output", str(out), *model).returncode == 0
    before = snapshot(out)
    add_shard(inp)  # a new file to score
    extra = ["--num-gpus-per-worker", "1", "--device", "cuda"] if why == "no CUDA" else []
    if why == "model fails on the workers":
        flag.write_text("")
    r = shardscore("run", "--input", str(inp), "--output", str(out), *model, *extra)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "(nothing was changed)" in r.stderr
    assert snapshot(out) == before


def test_sigterm_ends_the_run_as_aborted_and_a_rerun_completes_it_exactly(shardscore, ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=10, rows=2000)
    out = tmp_path / "out"
    args = ["run", "--input", str(inp), "--output", str(out), *SLOW, "--key-columns", "vendor_id,pickup_at"]
    driver = start_driver(ray_cluster, *args, "--grace-period", "15")
    wait_for(lambda: commit_count(out) >= 2 or driver.poll() is not None, 120, "2 committed shards")
    sent = time.monotonic()
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=60)
    assert driver.returncode == 3, output[-3000:]
    assert time.monotonic() - sent < 15 + 10
    assert "SIGTERM received: no more shards are started" in output
    assert "stopped by SIGTERM" in output and "stay committed; rerun to finish" in output
    assert "*** SIGTERM received" not in output and "Traceback" not in output  # no Ray stack dump
    m = manifest(out)
    assert m["status"] == "aborted" and 2 <= m["totals"]["committed"] < 10 and not (out / "_SUCCESS").exists()
    assert leases(out)[-1]["released"]
    r = shardscore(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "took over" not in r.stderr  # the aborted run had released its lease
    def keys(table) -> list[tuple]:
        return list(zip(table.column("vendor_id").to_pylist(), table.column("pickup_at").to_pylist(), strict=True))

    assert sorted(keys(read_output(out))) == sorted(keys(read_output(inp)))  # every row once, none twice
    assert manifest(out)["totals"]["committed"] == 10


def test_a_stop_that_cuts_bundles_short_counts_what_they_had_committed(shardscore, ray_cluster, tmp_path: Path):
    """A bundle reports only when it ends. Small shards go in bundles of several (planning.bundle): a run stopped
    before any bundle ended reads its shards' commit records (ray_dispatch._committed_so_far), so that its aborted
    manifest counts them, and does not say `nothing was changed`. (Seen on the local cluster: a tick's run on
    workers its autoscaler had just started, bundled for the one slot it found, stopped at the deadline.)"""
    inp = sample(tmp_path / "in", shards=48, rows=500)
    out = tmp_path / "out"
    args = ["run", "--input", str(inp), "--output", str(out), "--model", "slow_model:load_model", "--model-arg",
            "delay=0.5", "--batch-size", "500"]
    driver = start_driver(ray_cluster, *args, "--grace-period", "0")
    wait_for(lambda: commit_count(out) >= 1 or driver.poll() is not None, 120, "a committed shard")
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=60)
    assert driver.returncode == 3, output[-3000:]
    m = manifest(out)
    assert m["status"] == "aborted" and 1 <= m["totals"]["committed"] <= commit_count(out), m["totals"]
    assert f"({m['totals']['committed']} shard(s) committed by this run stay committed" in output, output[-3000:]
    r = shardscore(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert manifest(out)["totals"]["committed"] == 48 and len(read_output(out)) == 48 * 500


def test_a_second_signal_exits_at_once(ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=6, rows=4000)
    out = tmp_path / "out"
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), *SLOW,
                          "--grace-period", "120")
    wait_for(lambda: commit_count(out) >= 1 or driver.poll() is not None, 120, "a committed shard")
    output = DriverOutput(driver)
    driver.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT received" in output.text(), 60, "the driver to take the first SIGINT")
    sent = time.monotonic()
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=30)
    assert driver.returncode == 3 and time.monotonic() - sent < 5, output.all(10)[-2000:]
    assert "SIGINT again: exiting now" in output.all(10)


@pytest.mark.s3
def test_a_shard_that_fails_half_way_leaves_no_partial_file_on_s3(shardscore, s3, tmp_path: Path):
    """pyarrow's S3 stream completes its upload on close even after an error: nothing may reach the final key."""
    bucket = f"partial-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    inp = sample(tmp_path / "in", shards=2, rows=3000)
    mark(inp / "part-00001.parquet")
    table = pq.read_table(inp / "part-00001.parquet")
    good = pq.read_table(inp / "part-00000.parquet")
    pq.write_table(pa.concat_tables([good, table]), inp / "part-00001.parquet", row_group_size=3000)
    r = shardscore("run", "--input", str(inp), "--output", f"s3://{bucket}/out", "--model",
                   "rogue_model:load_model", "--model-arg", "mode=raise", "--batch-size", "1000",
                   "--s3-endpoint", s3.endpoint)
    assert r.returncode == 1 and "the model failed on rows 3000..3999" in r.stdout, r.stdout
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])]
    assert "out/part-00000.parquet" in keys and "out/part-00001.parquet" not in keys, keys
