"""`shardscore status OUTPUT` (issue 22 §2): from the output's own files alone, whether its latest run is running
(with the progress the driver writes there), stalled (its driver gone), succeeded, failed or aborted, which shards
failed and why, and what to do next; `--watch` follows a run to its end. Runs are real `shardscore run` drivers on
the multi-node test cluster; status is the real CLI, which starts no Ray.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import S3_ENV, free_port, start_driver, stop_process, wait_for

from shardscore.lease import LeaseLost
from shardscore.status import read_status
from shardscore.storage import resolve

SLOW = ["--model", "hang_model:load_model", "--key-columns", "id", "--batch-size", "100"]


def _ids(inp: Path, files: int = 4, rows: int = 1000) -> Path:
    inp.mkdir()
    for i in range(files):
        pq.write_table(pa.table({"id": np.arange(rows, dtype=np.int64) + 10000 * i}), inp / f"f{i}.parquet")
    return inp


def _json(r) -> dict:
    return json.loads(r.stdout)


def _slow_run(ray_cluster, tmp_path: Path, delay: float = 0.3):
    """A run of 8 files x 1000 rows in batches of 100, `delay` seconds a batch: about 8 s on the 3 slots."""
    inp, out = _ids(tmp_path / "in", files=8), tmp_path / "out"
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), *SLOW,
                          "--model-arg", f"delay={delay}")
    return driver, out


def _running_with_progress(cli, out: Path) -> dict:
    def found():
        r = cli("status", str(out), "--json")
        return _json(r) if r.returncode == 0 and _json(r)["state"] == "running" and _json(r)["progress"] else None

    return wait_for(found, 60, "a running run with its progress")


def test_a_path_no_run_wrote_is_said_in_one_line_with_a_non_zero_exit(cli, tmp_path: Path):
    r = cli("status", str(tmp_path / "absent"))
    assert r.returncode == 2 and r.stdout.strip().endswith("no run has written it (nothing is there)"), r
    assert len(r.stdout.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    r = cli("status", str(tmp_path / "empty"), "--json")
    assert r.returncode == 2 and _json(r)["state"] == "never_ran" and _json(r)["note"] == "the folder is empty"


def test_another_tools_folder_a_file_and_an_unreachable_store_are_refused_naming_them(cli, tmp_path: Path):
    _ids(tmp_path / "theirs")
    r = cli("status", str(tmp_path / "theirs"))
    assert r.returncode == 2 and r.stderr.strip() == (
        f"shardscore: error: {tmp_path}/theirs is not a shardscore output: it has neither _manifest.json nor "
        "_shardscore/ (another tool's files?)"), r.stderr
    r = cli("status", str(tmp_path / "theirs" / "f0.parquet"))
    assert r.returncode == 2 and "f0.parquet is a file, not an output" in r.stderr, r.stderr
    r = cli("status", "s3://bucket/out", "--s3-endpoint", f"http://127.0.0.1:{free_port()}",
            env={"AWS_EC2_METADATA_DISABLED": "true"})
    assert r.returncode == 2 and r.stderr.startswith("shardscore: error: s3://bucket/out cannot be read: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.ray
def test_a_succeeded_and_a_failed_run_with_their_failures_and_next_steps(shardscore, cli, tmp_path: Path):
    inp = _ids(tmp_path / "in")
    good, bad = tmp_path / "good", tmp_path / "bad"
    assert shardscore("run", "--input", str(inp), "--output", str(good), *SLOW).returncode == 0
    r = cli("status", str(good))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"shardscore: {good}: succeeded (run "), lines
    assert "shardscore: 4/4 shards committed, 0 failed; 4,000 rows in, 4,000 predictions out" in lines, lines
    assert lines[-1] == "shardscore: next: none: _SUCCESS is there, readers can use the output", lines
    manifest = json.loads((good / "_manifest.json").read_text())
    assert _json(cli("status", str(good), "--json"))["run"]["run_id"] == manifest["run_id"]

    run = shardscore("run", "--input", str(inp), "--output", str(bad), *SLOW, "--model-arg", "raise_on=[20007]")
    assert run.returncode == 1, run.stderr
    r = cli("status", str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"shardscore: {bad}: failed (run " in r.stdout
    assert "shardscore: FAILED shard f2.parquet (" in r.stdout and "ids [20007] are not to be scored" in r.stdout
    assert r.stdout.splitlines()[-1] == ("shardscore: next: fix what the failures name, then rerun the same command: "
                                         "the 3 committed shards are kept and only the others are scored")
    # The failed shard's whole error and the driver's log were kept in the output, named by the manifest.
    manifest = json.loads((bad / "_manifest.json").read_text())
    [failure] = manifest["failures"]
    assert manifest["logs"] == f"_shardscore/logs/{manifest['run_id']}/"
    assert failure["log"] == f"_shardscore/logs/{manifest['run_id']}/failed-0001.txt", failure
    error = (bad / failure["log"]).read_text()
    assert error.startswith(f"shard f2.parquet ({inp}/f2.parquet)\nworker: host "), error
    assert "Traceback (most recent call last):" in error and "hang_model.py" in error, error
    assert error.rstrip().endswith("ValueError: ids [20007] are not to be scored"), error
    assert "traceback" not in json.dumps(manifest["shards"])  # kept out of the manifest and the records
    logs = cli("status", str(bad), "--logs").stdout
    assert f"===== {manifest['logs']}driver.log\n" in logs and "shardscore: 4/4 shards (100.0%)" in logs, logs
    assert f"===== {failure['log']}\n{error}" in logs


@pytest.mark.ray
def test_on_s3_a_failed_run_and_its_reasons_are_read_without_a_cluster(shardscore, cli, s3, tmp_path: Path):
    bucket, client = f"status-{uuid.uuid4().hex[:8]}", s3.client()
    client.create_bucket(Bucket=bucket)
    for f in sorted(_ids(tmp_path / "in").iterdir()):
        client.put_object(Bucket=bucket, Key=f"in/{f.name}", Body=f.read_bytes())
    s3_args = ["--s3-endpoint", s3.endpoint]
    run = shardscore("run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", *SLOW,
                     "--model-arg", "raise_on=[20007]", *s3_args)
    assert run.returncode == 1, run.stderr
    r = cli("status", f"s3://{bucket}/out", *s3_args)  # no RAY_ADDRESS, no cluster: the output alone
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"shardscore: s3://{bucket}/out: failed (run " in r.stdout, r.stdout
    assert f"shardscore: FAILED shard f2.parquet (s3://{bucket}/in/f2.parquet): " in r.stdout, r.stdout


@pytest.mark.ray
def test_a_run_is_seen_running_with_its_progress_and_watched_to_its_end(ray_cluster, cli, tmp_path: Path):
    driver, out = _slow_run(ray_cluster, tmp_path)
    try:
        status = _running_with_progress(cli, out)
        assert status["progress"]["shards_total"] == 8 and status["progress"]["rows_total"] == 8000, status
        assert status["run"]["pid"] == driver.pid and not status["run"]["released"], status
        assert status["next"] == f"follow it with `shardscore status --watch {out}`"
        r = cli("status", str(out), "--watch", "--every", "0.5", timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("shardscore: running: ") and " shards (" in r.stdout, r.stdout
        assert f"shardscore: {out}: succeeded (run {status['run']['run_id']}" in r.stdout, r.stdout
        assert driver.wait(timeout=60) == 0
    finally:
        stop_process(driver)


@pytest.mark.ray
def test_an_aborted_run_says_to_rerun_and_how_much_is_kept(ray_cluster, cli, tmp_path: Path):
    driver, out = _slow_run(ray_cluster, tmp_path, delay=0.5)
    try:
        _running_with_progress(cli, out)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 3
    finally:
        stop_process(driver)
    r = cli("status", str(out))
    committed = json.loads((out / "_manifest.json").read_text())["totals"]["committed"]
    assert r.returncode == 3 and f"shardscore: {out}: aborted (run " in r.stdout, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == (f"shardscore: next: rerun the same command to resume: the {committed} "
                                         "committed shards are kept"), r.stdout


@pytest.mark.ray
def test_a_run_whose_driver_died_is_stalled_at_once_here_and_after_its_ttl_elsewhere(ray_cluster, cli, tmp_path: Path):
    driver, out = _slow_run(ray_cluster, tmp_path)
    try:
        progress = _running_with_progress(cli, out)["progress"]
        driver.kill()  # SIGKILL: no manifest, the lease is not released, the heartbeat stops
        driver.wait(timeout=30)
    finally:
        stop_process(driver)
    r = cli("status", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "stalled (run " in r.stdout and "the driver seems gone since " in r.stdout, r.stdout
    assert f"its process {driver.pid} on this host is gone" in r.stdout, r.stdout
    assert progress["text"] in r.stdout  # the last progress it wrote
    assert "rerun the same command: it takes the output over now and resumes" in r.stdout, r.stdout
    # From another host, the process cannot be looked at: within its ttl the run reads as running, past it stalled.
    status = read_status(resolve(str(out)), host="a-laptop")
    assert status.state == "running", status
    expired = status.run["heartbeat_at"] + status.run["ttl"] + 1
    stalled = read_status(resolve(str(out)), now=expired, host="a-laptop")
    assert stalled.state == "stalled" and "no heartbeat for " in stalled.note, stalled
    assert "it takes the output over after " in stalled.next and "when its lease expires" in stalled.next


@pytest.mark.ray
def test_a_later_run_that_was_refused_leaves_the_last_manifest_and_is_named(shardscore, cli, tmp_path: Path):
    inp, out = _ids(tmp_path / "in"), tmp_path / "out"
    assert shardscore("run", "--input", str(inp), "--output", str(out), *SLOW).returncode == 0
    refused = shardscore("run", "--input", str(inp), "--output", str(out), *SLOW, "--model-arg", "delay=0.01")
    assert refused.returncode == 2, refused.stderr  # another model identity, no --overwrite
    status = _json(cli("status", str(out), "--json"))
    first = json.loads((out / "_manifest.json").read_text())["run_id"]
    assert status["state"] == "succeeded" and status["run"]["run_id"] == first, status
    assert status["note"].startswith("the latest run, ") and status["note"].endswith(
        f"wrote no manifest: it found nothing to do or stopped before scoring; this is the manifest of run {first}")


def test_the_beacon_writes_the_progress_of_its_run_into_the_output(tmp_path: Path):
    from shardscore.status import PROGRESS_FILE, ProgressBeacon

    loc = resolve(str(tmp_path))
    beacon = ProgressBeacon(loc, "run1", 1, lambda: {"text": "1/2 shards"}, every=0.05, clock=lambda: 42.0)
    beacon.start()
    wait_for(lambda: (tmp_path / PROGRESS_FILE).exists(), 10, "the progress file")
    beacon.stop()
    assert json.loads((tmp_path / PROGRESS_FILE).read_text()) == {"run_id": "run1", "at": 42.0, "text": "1/2 shards"}


def test_the_driver_log_keeps_its_head_and_tail_within_its_bound_and_says_what_it_left_out():
    from shardscore.logs import BoundedLog

    log = BoundedLog(limit=100, head=30)
    for i in range(1000):
        log.write(f"line {i:04d}\n")
    text = log.text()
    assert text.startswith("line 0000\nline 0001\nline 0002\n") and text.endswith("line 0999\n"), text
    kept = len(text) - len("\n[... 9,900 characters left out ...]\n")
    assert "\n[... 9,900 characters left out ...]\n" in text and kept == 100, text


def test_a_failed_shards_error_keeps_its_end_within_its_bound():
    from shardscore.logs import SHARD_LOG_BYTES, error_text

    try:
        raise ValueError("a message of 40,000 characters: " + "m" * 40_000)
    except ValueError as exc:
        text = error_text(exc)
    assert len(text) == SHARD_LOG_BYTES + len("[...]\n") and text.startswith("[...]\n"), len(text)
    assert text.endswith("m" * 100 + "\n")
    try:
        raise ValueError("short")
    except ValueError as exc:
        assert error_text(exc).startswith("Traceback (most recent call last):\n")


def test_the_beacon_of_a_run_whose_output_was_taken_over_writes_nothing(tmp_path: Path):
    from shardscore.lease import LEASE_DIR
    from shardscore.status import PROGRESS_FILE, ProgressBeacon

    (tmp_path / LEASE_DIR).mkdir(parents=True)
    for generation in (1, 2):  # this run held generation 1; another run has taken generation 2
        (tmp_path / LEASE_DIR / f"{generation:08d}.json").write_text("{}")
    beacon = ProgressBeacon(resolve(str(tmp_path)), "run1", 1, lambda: {"text": "1/2 shards"}, every=0.05)
    beacon.start()  # its first write, right away, finds lease.check_fence raising LeaseLost: no thread starts
    assert not beacon._thread.is_alive() and not (tmp_path / PROGRESS_FILE).exists()


@pytest.mark.s3
def test_on_s3_a_run_paused_past_its_fence_check_writes_no_progress_once_another_run_wrote(s3, monkeypatch):
    """Run A passed lease.check_fence and was frozen before its PUT; run B took the output over and wrote its
    progress; A resumes. Its write is conditional on the ETag it last saw (storage.SharedJson), so it fails."""
    from shardscore.lease import LEASE_DIR
    from shardscore.status import PROGRESS_FILE, ProgressBeacon
    from shardscore.storage import StorageOptions

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    bucket = f"beacon-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    loc = resolve(f"s3://{bucket}/out", StorageOptions(s3.endpoint))

    def lease(generation: int) -> None:
        s3.client().put_object(Bucket=bucket, Key=f"out/{LEASE_DIR}/{generation:08d}.json", Body=b"{}")

    def progress() -> dict:
        return json.loads(s3.client().get_object(Bucket=bucket, Key=f"out/{PROGRESS_FILE}")["Body"].read())

    lease(1)
    a = ProgressBeacon(loc, "runA", 1, lambda: {"text": "1/3 shards"}, every=3600)
    a.start()
    assert progress()["run_id"] == "runA"

    def taken_over_while_paused() -> None:  # A's fence check passed; then B takes the lease and writes
        lease(2)
        b = ProgressBeacon(loc, "runB", 2, lambda: {"text": "0/3 shards"}, every=3600)
        b.start()
        b.stop()

    assert not a._file.write({"run_id": "runA", "text": "2/3 shards"}, check=taken_over_while_paused)
    with pytest.raises(LeaseLost, match="another run took over output"):
        a.write()
    a.stop()
    assert progress() == {"run_id": "runB", "at": progress()["at"], "text": "0/3 shards"}
