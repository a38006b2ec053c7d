"""The smaller ways a run misled its user (issue 16, §12): readers, stdout, unwritable output, crashes, options.

Runs are `shardscore run` driver processes on the multi-node test cluster, or the CLI with no cluster where the
check happens before Ray starts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest

from datasets import assert_readable, mark, sample
from support import commit_count, start_driver, wait_for

DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=1"]


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


# ---------------------------------------------------------------- readers' check
@pytest.mark.ray
def test_every_reader_reads_an_output_with_subfolders_and_row_group_shards(shardscore, tmp_path: Path):
    inp = tmp_path / "in"
    sample(inp / "2024", shards=2, rows=300, row_group_size=100)
    sample(inp / "2025" / "q1", shards=1, rows=50)
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--max-rows-per-shard", "200", *DUMMY)
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert m["totals"]["rows_out"] == 650 and (out / "2024" / "part-00000.rg0-1.parquet").exists()
    assert_readable(out, m)
    # README's polars line is the glob because polars refuses the folder itself: keep the docs true on upgrades
    with pytest.raises(pl.exceptions.InvalidOperationError, match="different file extensions"):
        pl.scan_parquet(out).collect()


# ---------------------------------------------------------------- --summary-json -: stdout is the JSON alone
NOISY = ["--model", "noisy_model:load_model"]


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_summary_json_on_stdout_stays_alone_while_workers_keep_printing(shardscore, tmp_path: Path, strategy):
    inp = sample(tmp_path / "in", shards=4, rows=400)
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), *NOISY, "--batch-size", "50",
                   "--summary-json", "-", "--progress-interval", "0", "--strategy", strategy)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["totals"]["committed"] == 4, r.stdout[-2000:]  # nothing but the JSON document
    assert "noisy model scored 50 rows" in r.stderr and "shardscore: run succeeded" in r.stderr  # kept, on stderr


def test_summary_json_on_stdout_stays_alone_through_a_local_rays_shutdown(cli, tmp_path: Path):
    """A local Ray is shut down at exit, which prints the workers' deduplicated lines to sys.stdout."""
    inp = sample(tmp_path / "in", shards=4, rows=400)
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), *NOISY, "--batch-size", "50",
            "--summary-json", "-", "--progress-interval", "0", "--num-cpus-per-worker", "0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["totals"]["committed"] == 4, r.stdout[-2000:]
    assert "noisy model" in r.stderr


# ---------------------------------------------------------------- a model that ends its process
def _exit_run(shardscore, tmp_path: Path, strategy: str, mode: str, code: int = 3, shards: int = 3):
    inp = sample(tmp_path / "in", shards=shards, rows=120)
    mark(inp / "part-00002.parquet")
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model", "noisy_model:load_model",
                   "--model-arg", f"mode={mode}", "--model-arg", f"code={code}", "--strategy", strategy,
                   "--batch-size", "50", "--max-retries", "1", "--max-failed-shards", "2", "--progress-interval", "0")
    return r, out


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_sys_exit_in_the_model_fails_its_shard_naming_the_call_and_rows(shardscore, tmp_path: Path, strategy):
    r, out = _exit_run(shardscore, tmp_path, strategy, "sys_exit", code=7)
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert [(f["path"].rsplit("/", 1)[-1], f["reason"]) for f in m["failures"]] == [
        ("part-00002.parquet", "the model called sys.exit(7) while scoring rows 0..49")]
    assert m["totals"]["committed"] == 2  # the others scored
    assert_readable(out, m)


@pytest.mark.ray
@pytest.mark.parametrize("strategy,mode,shards", [("tasks", "os_exit", 3), ("actors", "os_exit", 3),
                                                  ("tasks", "segfault", 3), ("tasks", "os_exit", 30)])
def test_a_worker_process_that_exits_in_the_model_is_named_with_its_shard(shardscore, tmp_path: Path, strategy, mode,
                                                                          shards):
    """30 small shards on 3 slots go in bundles of 2: the culprit's bundle-mate, which its worker never began, is
    handed out again and scored."""
    r, out = _exit_run(shardscore, tmp_path, strategy, mode, 3, shards)
    m = manifest(out)
    by_file = {f["path"].rsplit("/", 1)[-1]: f["reason"] for f in m["failures"]}
    reason = by_file.pop("part-00002.parquet")
    assert reason.startswith("the worker process died 2 time(s) while scoring this shard (out of memory? try a "
                             "smaller --batch-size or more --memory-per-worker; "), reason
    assert ("ActorUnavailableError: The actor " if strategy == "actors" else "WorkerCrashedError: The worker died") \
        in reason, reason
    assert by_file == {}, by_file  # its bundle-mate (with 30 shards) scored on another try
    assert m["totals"]["committed"] == shards - 1
    assert "FAILED shard" in r.stdout and "part-00002.parquet" in r.stdout, r.stdout


# ---------------------------------------------------------------- an output that stops taking writes mid-run
@pytest.fixture
def immutable():
    """`chattr +i` a folder: read-only even for root (the tests run as root, whom chmod does not stop)."""
    frozen: list[Path] = []

    def freeze(path: Path) -> None:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        frozen.append(path)

    yield freeze
    for path in frozen:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.ray
def test_an_output_made_read_only_mid_run_ends_in_a_clear_error(ray_cluster, tmp_path: Path, immutable):
    inp = sample(tmp_path / "in", shards=8, rows=1000)
    out = tmp_path / "out"
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), "--model",
                          "slow_model:load_model", "--model-arg", "delay=0.25", "--batch-size", "500",
                          "--max-in-flight", "1", "--max-retries", "0", "--summary-json", str(tmp_path / "s.json"))
    wait_for(lambda: commit_count(out) >= 1, 120, "a first committed shard")
    immutable(out)
    text, _ = driver.communicate(timeout=300)
    assert driver.returncode == 1 and "Traceback" not in text, text[-5000:]
    assert f"shardscore: error: the output {out} stopped taking writes during the run (PermissionError" in text
    assert "make it writable and rerun to finish" in text
    assert "FAILED shard" in text and "input or output could not be read or written" in text  # named per shard
    summary = json.loads((tmp_path / "s.json").read_text())  # the summary is written where it can be
    assert summary["status"] == "failed" and 1 <= summary["totals"]["committed"] < 8, summary["totals"]
    assert not (out / "_SUCCESS").exists()
