"""`shardscore run` as a driver process on a real multi-node Ray cluster (head, CPU worker, GPU-group worker)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, corrupt, drop_column, empty, expected_even, read_output, retype, sample
from support import BIN, commit_count, start_driver, wait_for

pytestmark = pytest.mark.ray
DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=4"]


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def assert_exact_output(inp: Path, out: Path, shards: int) -> None:
    """Every input row scored exactly once: one file per shard, row counts equal, predictions right."""
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert len(files) == shards, files
    table = read_output(out)
    inputs = read_output(inp)
    assert table.num_rows == inputs.num_rows
    assert pc.sum(table.column("score")).as_py() == expected_even(inp)
    m = manifest(out)
    assert m["totals"]["committed"] == shards and m["totals"]["rows_in"] == inputs.num_rows
    assert (out / "_SUCCESS").exists()
    assert not list(out.rglob(".tmp-*"))
    assert_readable(out, m)


@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_strategies_give_identical_outputs(shardscore, ray_cluster, tmp_path: Path, strategy: str):
    inp = sample(tmp_path / "in", shards=6, rows=3000)
    out = tmp_path / strategy
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--strategy", strategy,
                   "--key-columns", "vendor_id,pickup_at", "--batch-size", "1000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exact_output(inp, out, 6)
    assert "shardscore: run succeeded: 6/6 shards committed" in r.stdout
    workers = {s["worker"]["node_id"] for s in manifest(out)["shards"]}
    assert ray_cluster.node_ids["head"] not in workers  # the head does no scoring
    reference = tmp_path / "tasks"
    if strategy == "actors":  # the tasks run went first (parametrize order): compare file by file
        for f in sorted(reference.glob("*.parquet")):
            assert read_output(out / f.name).equals(read_output(f)), f.name


def test_model_is_put_in_the_object_store_once(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=24, rows=200)
    log = tmp_path / "pickles.log"
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model",
                   "probe_model:load_model", "--model-arg", f"log={log}", "--model-arg", "payload_mb=16")
    assert r.returncode == 0, r.stderr[-3000:]
    events = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    pickles = [e for e in events if e[0] == "pickle"]
    assert sum(events[e] for e in pickles) == 1, events  # once, on the driver, for 24 shards
    unpickles = [events[e] for e in events if e[0] == "unpickle"]
    assert unpickles and max(unpickles) == 1 and len(unpickles) <= 3, events  # once per worker process


def test_gpu_work_lands_on_the_gpu_group_and_cpu_work_needs_none(shardscore, ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=4, rows=500)
    out = tmp_path / "gpu"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--num-gpus-per-worker", "0.5")
    assert r.returncode == 0, r.stderr[-3000:]
    shards = manifest(out)["shards"]
    assert {s["worker"]["node_id"] for s in shards} == {ray_cluster.node_ids["gpu_group"]}
    assert all(s["worker"]["gpu_ids"] == ["0"] for s in shards)
    assert all(s["worker"]["device"] == "cpu" for s in shards)  # auto: no CUDA on this machine
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "cpu"), *DUMMY)
    assert r.returncode == 0
    assert all(s["worker"]["gpu_ids"] == [] for s in manifest(tmp_path / "cpu")["shards"])


def test_cuda_where_there_is_none_fails_clearly_never_on_cpu(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=100)
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--num-gpus-per-worker", "1",
                   "--device", "cuda")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "--device cuda: " in r.stderr and ("no CUDA device on worker" in r.stderr or "not installed" in r.stderr)
    assert "(nothing was changed)" in r.stderr
    assert not list(out.glob("*.parquet")) and not (out / "_SUCCESS").exists() and not (out / "_manifest.json").exists()


def test_bad_shards_are_reported_and_the_others_finish(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=7, rows=400)
    corrupt(inp / "part-00001.parquet")
    empty(inp / "part-00002.parquet", like=inp / "part-00000.parquet")
    drop_column(inp / "part-00003.parquet", "passenger_count")
    retype(inp / "part-00004.parquet", "passenger_count", pa.string())
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 1, r.stderr[-2000:]
    reasons = {f["shard_id"]: f["reason"] for f in manifest(out)["failures"]}
    assert set(reasons) == {f"part-0000{i}.parquet" for i in (1, 3, 4)}
    assert "PAR1" in reasons["part-00001.parquet"]
    assert "column 'passenger_count' is missing" in reasons["part-00003.parquet"]
    assert "column 'passenger_count' has type string, expected int8" in reasons["part-00004.parquet"]
    assert f"FAILED shard part-00004.parquet ({inp}/part-00004.parquet)" in r.stdout
    # A zero-row file (Spark writes them) is valid: committed, with no output file to read.
    assert "1 zero-row shards committed without an output file" in r.stdout
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00005.parquet",
                                                              "part-00006.parquet"]
    assert not (out / "_SUCCESS").exists()
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--max-failed-shards", "3")
    assert r.returncode == 0 and (out / "_SUCCESS").exists()
    assert manifest(out)["totals"]["skipped_already_committed"] == 4
    assert read_output(out).num_rows == manifest(out)["totals"]["rows_out"] == 3 * 400


def _kill_a_worker_mid_run(out: Path, marker: str, after: int = 1, settle: float = 0) -> None:
    """Once `after` shards are committed, and `settle` seconds later, SIGKILL a worker process whose title carries
    `marker`. A worker keeps that title until its task function has returned, after the shard's commit
    (ray/_private/worker.py, _changeproctitle sets ray::IDLE on the way out), so a kill right at the `after`-th
    commit can land there and take no shard: `settle` gives the workers that just committed the time to begin
    their next shard."""
    wait_for(lambda: commit_count(out) >= after, 120, f"{after} committed shards")
    time.sleep(settle)

    def busy_worker():
        return next((p for p in psutil.process_iter(["cmdline"])
                     if any(marker in part for part in (p.info["cmdline"] or []))), None)

    wait_for(busy_worker, 120, f"a running {marker} process").kill()


def test_resume_after_killing_the_driver_mid_run(shardscore, ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=10, rows=2000)
    out = tmp_path / "out"
    args = ["run", "--input", str(inp), "--output", str(out), "--model", "slow_model:load_model",
            "--model-arg", "delay=0.25", "--batch-size", "500"]
    driver = start_driver(ray_cluster, *args)
    wait_for(lambda: commit_count(out) >= 3 or driver.poll() is not None, 120, "3 committed shards")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    committed_before = commit_count(out)
    assert 3 <= committed_before < 10 and not (out / "_SUCCESS").exists()
    r = shardscore(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exact_output(inp, out, 10)
    assert manifest(out)["totals"]["skipped_already_committed"] >= committed_before


@pytest.mark.parametrize("strategy", ["tasks", "actors"])
def test_killing_a_worker_mid_run_loses_and_duplicates_nothing(shardscore, ray_cluster, tmp_path: Path,
                                                               strategy: str):
    inp = sample(tmp_path / "in", shards=8, rows=2000)
    out = tmp_path / "out"
    driver = start_driver(ray_cluster, "run", "--input", str(inp), "--output", str(out), "--model",
                     "slow_model:load_model", "--model-arg", "delay=0.25", "--batch-size", "500",
                     "--strategy", strategy)
    _kill_a_worker_mid_run(out, "ray::score_task" if strategy == "tasks" else "ray::ShardScorer")
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output[-3000:]
    assert commit_count(out) == 8
    assert_exact_output(inp, out, 8)


def test_changed_input_is_refused_then_recomputed_with_overwrite(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=300)
    out = tmp_path / "out"
    assert shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY).returncode == 0
    sample(tmp_path / "in", shards=1, rows=500, seed=3)  # part-00000 changes under the output
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 2
    assert "shard part-00000.parquet: input file part-00000.parquet changed" in r.stderr
    assert "--overwrite" in r.stderr and (out / "_SUCCESS").exists()  # refused before touching anything
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
    assert manifest(out)["totals"]["recomputed_stale"] == 1
    assert_exact_output(inp, out, 3)
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--model",
                   "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=5")
    assert r.returncode == 2 and "scored by another model" in r.stderr


def scrape(ray_cluster) -> str:
    """What the nodes' Prometheus endpoints serve now (Ray's metrics agents)."""
    import urllib.request

    text = ""
    for port in ray_cluster.metrics_ports:
        try:
            text += urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            pass
    return text


def test_workers_export_ray_metrics_for_rows_and_shards(shardscore, ray_cluster, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=1000)
    assert shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY).returncode == 0

    def exported():
        lines = scrape(ray_cluster).splitlines()
        rows = [line for line in lines if line.startswith("ray_shardscore_rows_scored")]
        shards = [line for line in lines if line.startswith("ray_shardscore_shards")]
        # Each worker's agent reports on its own beat: wait for all three shards' rows.
        return (rows, shards) if shards and sum(float(line.rsplit(" ", 1)[1]) for line in rows) >= 3000 else None

    _, shards = wait_for(exported, 60, "3000 rows in the shardscore metrics of the nodes' Prometheus endpoints",
                         interval=2)
    assert any('status="committed"' in line for line in shards)


def running_tasks(metrics: str) -> set[str]:
    """The names of the tasks and actor calls that Ray's `ray_tasks` says are running."""
    import re

    names = set()
    for line in metrics.splitlines():
        if line.startswith("ray_tasks{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("State") == "RUNNING" and float(line.rsplit(" ", 1)[1]) > 0:
                names.add(labels.get("Name", ""))
    return names


def dashboard_and_alert_queries() -> list[str]:
    """Every PromQL query of helm/shardscore/dashboards/shardscore.json and of the chart's PrometheusRule."""
    import chartlib

    dashboard = json.loads((chartlib.CHART / "dashboards" / "shardscore.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    rule = chartlib.one(chartlib.render([chartlib.CPU], ["metrics.podMonitor.enabled=true",
                                                         "metrics.prometheusRule.enabled=true",
                                                         "metrics.prometheusRule.noRowsFor=26h"]), "PrometheusRule")
    return queries + [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def test_every_metric_of_the_dashboard_and_the_alerts_is_one_a_run_exports(shardscore, ray_cluster, tmp_path: Path):
    """Issue 22 §4: the dashboard and the alerts name only series that real runs put on the nodes' endpoints: the
    workers' (a run with rejected rows, so that every one exists) and Ray's, read while scoring work runs, as tasks
    and as actor calls (the names the queries select)."""
    import re

    inp = tmp_path / "ids"
    inp.mkdir()
    pq.write_table(pa.table({"id": pa.array(range(400), pa.int64())}), inp / "part-0.parquet")
    r = shardscore("run", "--input", str(inp), "--output", str(tmp_path / "bad"), "--model", "bad_rows_model:load_model",
                   "--model-arg", "bad=[7]", "--key-columns", "id", "--batch-size", "100", "--max-bad-rows", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    slow = sample(tmp_path / "in", shards=4, rows=1000)
    exported: set[str] = set()  # every ray_ series any scrape of this test served: ray_tasks' go with their tasks

    def scraped() -> str:
        text = scrape(ray_cluster)
        exported.update(re.findall(r"^(ray_[a-zA-Z0-9_]+)", text, re.M))
        return text

    running: set[str] = set()
    # Each strategy's scoring name, awaited by name: other tasks run too (the workers' warm-up, `_warm`).
    for strategy, name in (("tasks", "score_task"), ("actors", "ShardScorer.score")):
        driver = start_driver(ray_cluster, "run", "--input", str(slow), "--output", str(tmp_path / strategy),
                              "--model", "slow_model:load_model", "--model-arg", "delay=1.5", "--batch-size", "250",
                              "--strategy", strategy)
        try:
            running |= wait_for(lambda name=name: {name} & running_tasks(scraped()), 90,
                                f"Ray's ray_tasks naming {name} RUNNING in a --strategy {strategy} run", interval=0.5)
        finally:
            assert driver.wait(timeout=300) == 0, driver.stdout.read()[-3000:]
    queries = dashboard_and_alert_queries()
    named = {m for q in queries for m in re.findall(r"\b(ray_[a-z0-9_]+)\{", q)}  # every query uses a selector
    assert named

    def missing() -> set[str]:
        scraped()
        return named - exported

    # Ray's node metrics come with its agents' own reports, a few seconds apart.
    try:
        wait_for(lambda: not missing(), 30, "every metric the queries name", interval=2)
    except TimeoutError:
        pytest.fail(f"named but not exported: {sorted(missing())}")
    # The one other ray_ name is a label: the PodMonitor's relabeling of the pods' ray.io/cluster (podmonitor.yaml).
    assert {m for q in queries for m in re.findall(r"\b(ray_[a-z0-9_]+)", q)} - named == {"ray_io_cluster"}
    selected = {n for q in queries for n in re.findall(r'Name=~"([^"]+)"', q)}
    assert {"score_task", "ShardScorer.score"} <= running, running
    assert selected == {"score_task|ShardScorer.score"}, selected


def test_a_worker_that_keeps_dying_fails_its_shard_by_name_and_a_rerun_completes(shardscore, ray_cluster,
                                                                                  tmp_path: Path):
    inp = sample(tmp_path / "in", shards=6, rows=2000)
    out = tmp_path / "out"
    args = ["run", "--input", str(inp), "--output", str(out), "--model", "slow_model:load_model",
            "--model-arg", "delay=1", "--batch-size", "500"]
    driver = start_driver(ray_cluster, *args, "--max-retries", "0")

    # After the first wave of 3 (one per slot), and a second for its workers to begin the second wave's shards
    # (4 s each): every ray::score_task process is then mid-shard. (At the third commit itself, its worker can still
    # be returning that task: seen in CI on a loaded machine, the kill took no shard and the run succeeded.)
    _kill_a_worker_mid_run(out, "ray::score_task", after=3, settle=1)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 1, output[-3000:]
    failures = manifest(out)["failures"]
    reasons = [f["reason"] for f in failures]
    # The shard being scored is named with how often its worker died; bundle-mates it never reached went again.
    assert [r.split(" (")[0] for r in reasons] == ["the worker process died 1 time(s) while scoring this shard"], \
        failures
    assert f"FAILED shard {failures[0]['shard_id']} ({inp}/{failures[0]['shard_id']}): {reasons[0]}" in output
    assert not (out / "_SUCCESS").exists()
    r = shardscore(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exact_output(inp, out, 6)


def test_a_named_pool_keeps_the_model_loaded_for_the_next_run_then_ends_when_idle(shardscore, ray_cluster,
                                                                                  tmp_path: Path):
    inp = sample(tmp_path / "in", shards=4, rows=500)
    log = tmp_path / "pickles.log"
    args = ["--input", str(inp), "--model", "probe_model:load_model", "--model-arg", f"log={log}",
            "--strategy", "actors", "--num-actors", "2", "--pool", "warm-test", "--pool-idle-timeout", "8"]
    first = shardscore("run", "--output", str(tmp_path / "a"), *args)
    assert first.returncode == 0, first.stderr[-3000:]
    second = shardscore("run", "--output", str(tmp_path / "b"), *args)
    assert second.returncode == 0, second.stderr[-3000:]
    pids = [{s["worker"]["pid"] for s in manifest(tmp_path / d)["shards"]} for d in ("a", "b")]
    assert pids[0] == pids[1] and len(pids[0]) == 2  # the same two processes scored both runs
    events = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert events == {"pickle": 1, "unpickle": 2}, events  # the second run sent the model nowhere
    assert read_output(tmp_path / "a").equals(read_output(tmp_path / "b"))

    probe = ("import ray\nray.init()\n"
             "try:\n    ray.get_actor('warm-test-0', namespace='shardscore'); print('alive')\n"
             "except ValueError:\n    print('gone')\n")

    def gone() -> bool:
        r = subprocess.run([str(BIN / "python"), "-c", probe], capture_output=True, text=True, timeout=60,
                           env={**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address})
        return r.stdout.strip().endswith("gone")

    wait_for(gone, 60, "the idle pool actors to end themselves", interval=3)


def test_the_manifest_breaks_the_fixed_time_down(shardscore, tmp_path: Path):
    inp = sample(tmp_path / "in", shards=3, rows=500)
    assert shardscore("run", "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY).returncode == 0
    seconds = manifest(tmp_path / "out")["seconds"]
    phases = seconds["breakdown"]
    assert set(phases) >= {"startup", "import_ray", "ray_init", "model", "plan", "output", "put", "first_shard_start",
                           "first_batch", "scoring", "verify_and_manifest"}, phases
    assert all(v >= 0 for v in phases.values()) and phases["scoring"] <= seconds["total"]
