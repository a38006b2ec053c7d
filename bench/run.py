"""`make bench`: shardscore against its alternatives, side by side in one run on the same data.

Every variant runs in a fresh process against one Ray cluster that is already up (as a RayJob entrypoint
finds it), several times; the report gives medians, rows/s, peak memory and the ratios the product promises.
BENCH_SCALE (default 1) shrinks the data for a quick look; BENCH_REPEATS (default 3) sets the repeats.
Results: bench/RESULTS.md (the report) and bench/results.json (the raw figures).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import free_port, kill_processes_mentioning  # noqa: E402  (the tests' cluster helpers)

DATA = BENCH / "data"
OUT = BENCH / "out"
BIN = Path(sys.executable).parent
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
SWEEP_REPEATS = int(os.environ.get("BENCH_SWEEP_REPEATS", "2"))
TEMP = Path("/tmp/ssbench")


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(BENCH), RAY_AUTH_MODE="disabled",
             RAY_USAGE_STATS_ENABLED="0")
    e.pop("RAY_ADDRESS", None)
    e.update(extra)
    return e


def sample(path: Path, shards: int, rows: int) -> Path:
    if not (path / "_done").exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([str(BIN / "shardscore"), "sample-data", "--output", str(path), "--shards", str(shards),
                        "--rows-per-shard", str(rows)], check=True, env=env())
        (path / "_done").write_text("")
    return path


class Sampler(threading.Thread):
    """Samples RSS of the driver's process tree and of every Ray worker, 20 times a second."""

    def __init__(self, root: psutil.Process):
        super().__init__(daemon=True)
        self.root = root
        self.baseline = self._workers_rss()
        self.peak = 0
        self.series: list[tuple[float, int, int]] = []  # (time, pid, rss) of Ray workers
        self.driver_peak = 0
        self.stop = threading.Event()

    @staticmethod
    def _workers() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if cmd and cmd[0].startswith("ray::") and "Agent" not in cmd[0]:
                found.append(p)
        return found

    def _workers_rss(self) -> int:
        total = 0
        for p in self._workers():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                driver = sum(p.memory_info().rss for p in tree)
            except psutil.Error:
                driver = 0
            workers = 0
            for p in self._workers():
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                workers += rss
                self.series.append((now, p.pid, rss))
            self.driver_peak = max(self.driver_peak, driver)
            self.peak = max(self.peak, driver + workers - self.baseline)
            time.sleep(0.05)


def timed(cmd: list[str], out: Path, extra_env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(psutil.Process(proc.pid))
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = {"wall": wall, "peak_mb": sampler.peak / 2**20, "driver_peak_mb": sampler.driver_peak / 2**20,
              "_series": sampler.series}
    manifest = out / "_manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        result.update(rows=m["totals"]["rows_in"], ray_init=m["seconds"]["ray_init"], _manifest=m)
    else:
        # The baseline's report is its last JSON line: Ray Data may print progress after it.
        report = next((line for line in reversed(stdout.splitlines()) if line.startswith("{")), None)
        if report is None:
            raise RuntimeError(f"{' '.join(cmd)} printed no JSON report:\n{stdout[-2000:]}\n{stderr[-2000:]}")
        result.update(json.loads(report))
    return result


def shardscore(inp: Path, model: str, *args: str) -> list[str]:
    return [str(BIN / "shardscore"), "run", "--input", str(inp), "--output", "{out}", "--model", model,
            "--progress-interval", "0", *args]


def end_pool(pool: str, ray_env: dict[str, str]) -> None:
    """Kill a named pool's actors, so that they give the cluster's CPUs back to the next variant."""
    script = ("import ray, sys\nray.init()\nfor i in range(64):\n    try:\n"
              "        ray.kill(ray.get_actor(f'{sys.argv[1]}-{i}', namespace='shardscore'))\n"
              "    except ValueError:\n        break\n")
    subprocess.run([sys.executable, "-c", script, pool], env=env(**ray_env), check=True, capture_output=True)


def warm_pool(name: str, cmd: list[str], ray_env: dict[str, str], pool: str, repeats: int = REPEATS) -> dict:
    """The same command with a named actor pool that an earlier run (not timed) left loaded."""
    cmd = [*cmd, "--strategy", "actors", "--pool", pool]
    out = OUT / f"warmup-{pool}"
    timed([c.replace("{out}", str(out)) for c in cmd], out, ray_env)
    shutil.rmtree(out, ignore_errors=True)
    try:
        return median_of(name, cmd, ray_env, repeats)
    finally:
        end_pool(pool, ray_env)


def median_of(name: str, cmd: list[str], ray_env: dict[str, str], repeats: int = REPEATS) -> dict:
    runs = []
    for i in range(repeats):
        out = OUT / f"{name.replace(' ', '_')}-{i}"
        runs.append(timed([c.replace("{out}", str(out)) for c in cmd], out, ray_env))
        shutil.rmtree(out, ignore_errors=True)
    walls = [r["wall"] for r in runs]
    med = statistics.median(walls)
    rows = runs[0]["rows"]
    print(f"  {name}: median {med:.2f} s over {walls} ({rows / med:,.0f} rows/s)", flush=True)
    result = {"name": name, "median_s": med, "walls_s": walls, "rows": rows, "rows_per_s": rows / med,
              "peak_mb": statistics.median(r["peak_mb"] for r in runs),
              "driver_peak_mb": statistics.median(r["driver_peak_mb"] for r in runs),
              "ray_init_s": statistics.median(r["ray_init"] for r in runs) if "ray_init" in runs[0] else None}
    for key in ("import_s", "engine_s", "scoring_s", "load_s"):  # the peers' own start, apart; a loop's own seconds
        if key in runs[0]:
            result[key] = statistics.median(r[key] for r in runs)
    if "_manifest" in runs[0]:  # where shardscore's time went, phase by phase (the manifest's breakdown)
        result["totals"] = runs[0]["_manifest"]["totals"]
        phases = runs[0]["_manifest"]["seconds"]["breakdown"]
        result["breakdown_s"] = {k: statistics.median(r["_manifest"]["seconds"]["breakdown"].get(k, 0.0)
                                                      for r in runs) for k in phases}
    return result


def worker_growth(inp: Path, ray_env: dict[str, str]) -> dict:
    """Memory growth of the worker that scores one 10M-row shard: peak RSS during the shard minus RSS before."""
    out = OUT / "big"
    cmd = [c.replace("{out}", str(out)) for c in shardscore(inp, "shardscore.models.dummy:load_model",
                                                              "--model-arg", "payload_mb=0")]
    r = timed(cmd, out, ray_env)
    shard = r["_manifest"]["shards"][0]
    pid, start, seconds = shard["worker"]["pid"], shard["attempt_started_at"], shard["seconds"]
    mine = [(t, rss) for t, p, rss in r["_series"] if p == pid]
    before = [rss for t, rss in mine if t <= start] or [mine[0][1]]
    during = [rss for t, rss in mine if start <= t <= start + seconds] or [before[-1]]
    shutil.rmtree(out, ignore_errors=True)
    growth = (max(during) - before[-1]) / 2**20
    print(f"  10M-row shard: worker RSS {before[-1] / 2**20:.0f} MB -> peak {max(during) / 2**20:.0f} MB "
          f"(+{growth:.0f} MB) in {seconds:.1f} s", flush=True)
    return {"rows": shard["rows_in"], "worker_rss_before_mb": before[-1] / 2**20,
            "worker_rss_peak_mb": max(during) / 2**20, "growth_mb": growth, "seconds": seconds}


def start_cluster() -> dict[str, str]:
    port = free_port()
    shutil.rmtree(TEMP, ignore_errors=True)
    subprocess.run([str(BIN / "ray"), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                    "--num-cpus", str(os.cpu_count()), "--include-dashboard", "false", "--temp-dir", str(TEMP),
                    "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())],
                   check=True, env=env(), capture_output=True)
    return {"RAY_ADDRESS": f"127.0.0.1:{port}"}


def stop_cluster(ray_env: dict[str, str]) -> None:
    kill_processes_mentioning(TEMP, int(ray_env["RAY_ADDRESS"].rsplit(":", 1)[1]))
    shutil.rmtree(TEMP, ignore_errors=True)


def at_most(limit: float):
    return lambda value: value <= limit


def at_least(limit: float):
    return lambda value: value >= limit


def ratio(a: dict, b: dict) -> float:
    return a["median_s"] / b["median_s"]


def floor(ray_env: dict[str, str], repeats: int = REPEATS, imports: tuple[str, ...] = (), model: str = "") -> dict:
    """Ray's own floor, measured alone (bench/ray_floor.py): the median of each mark, and of the whole process.
    With `imports`, every no-op task imports those modules first; with `model`, the driver also loads that model
    and puts it once while the workers start, and the tasks get it."""
    runs = []
    for _ in range(repeats):
        started = time.monotonic()
        out = subprocess.run([sys.executable, str(BENCH / "ray_floor.py"), *(["--model", model] if model else []),
                              *imports], env=env(**ray_env), check=True, capture_output=True, text=True).stdout
        runs.append({**json.loads(out.strip().splitlines()[-1]), "process": time.monotonic() - started})
    marks = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"  Ray's floor{' importing ' + ', '.join(imports) if imports else ''}"
          f"{', the driver putting ' + model if model else ''}: "
          f"{json.dumps({k: round(v, 2) for k, v in marks.items()})}", flush=True)
    return marks


#: The scaling sweep: (label, shards, rows per shard) at scale 1; the 14M-row, 12-shard point is the main one.
SIZES = [("3.5M rows, 12 shards", 12, 291_666), ("14M rows, 12 shards", 12, 1_166_666),
         ("56M rows, 48 shards", 48, 1_166_666)]
SHARD_COUNTS = [("14M rows, 48 shards", 48, 291_666), ("14M rows, 192 shards", 192, 72_916)]


def sweep_variants(inp: Path, ray_env: dict[str, str], label: str, repeats: int) -> dict[str, dict]:
    """The Ray example's model through every way of running it, on one dataset."""
    example = "ray_example:load_model"
    py = sys.executable
    tag = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return {
        "shardscore tasks": median_of(f"shardscore tasks, {label}", shardscore(inp, example), ray_env, repeats),
        "shardscore actors": median_of(f"shardscore actors, {label}", shardscore(inp, example, "--strategy",
                                                                                 "actors"), ray_env, repeats),
        "shardscore warm pool": warm_pool(f"shardscore warm pool, {label}", shardscore(inp, example), ray_env,
                                          f"sweep-{tag}"[:40], repeats),
        "process pool": median_of(f"process pool, {label}", [py, str(BENCH / "baselines.py"), "pool-example",
                                                              str(inp), "{out}"], {}, repeats),
        "Ray Data": median_of(f"Ray Data, {label}", [py, str(BENCH / "baselines.py"), "ray-data", str(inp),
                                                      "{out}"], ray_env, repeats),
        **{name: median_of(f"{name}, {label}", peer(engine, "example", inp), peer_env(), repeats)
           for engine, name in PEER_ENGINES.items()},
    }


QUARANTINE_HEADING = "## Rejected rows and batch timeouts"


def quarantine(inp: Path, ray_env: dict[str, str], rows: int) -> list[str]:
    """The cost of --max-bad-rows and --batch-timeout: the Ray example's model on clean rows with neither, with both
    armed, and raising on 0.01 % of the rows (bench/bad_rows.py) within the budget; the report's section."""
    example, bad = "ray_example:load_model", "bad_rows:load_model"
    guards = ("--max-bad-rows", "0.001", "--batch-timeout", "60")
    q = {"plain": median_of("shardscore tasks, Ray example model, clean rows", shardscore(inp, example), ray_env),
         "guarded": median_of("shardscore tasks, clean rows, --max-bad-rows 0.001 --batch-timeout 60",
                              shardscore(inp, example, *guards), ray_env),
         "bad": median_of("shardscore tasks, 0.01 % bad rows, --max-bad-rows 0.001 --batch-timeout 60",
                          shardscore(inp, bad, *guards), ray_env)}
    rejected = q["bad"]["totals"]["rows_rejected"]
    lines = [QUARANTINE_HEADING, "",
             f"Measured on {time.strftime('%Y-%m-%d')} by bench/run.py `quarantine` (also part of `make bench`): "
             f"{rows:,} taxi rows in 12 shards, tasks, median of {REPEATS} fresh processes each, in one run. The bad "
             f"rows' model is the Ray example's, raising on {rejected:,} rows ({rejected / rows:.4%}), scattered "
             "through every 65,536-row batch; each such batch is bisected.", "",
             "| variant | seconds (median) | runs | rows/s | ratio to clean, no options |", "|---|---:|---|---:|---:|"]
    for v in q.values():
        walls = ", ".join(f"{w:.2f}" for w in v["walls_s"])
        lines.append(f"| {v['name']} | {v['median_s']:.2f} | {walls} | {v['rows_per_s']:,.0f} | "
                     f"{ratio(v, q['plain']):.2f} |")
    per_row = (q["bad"]["median_s"] - q["plain"]["median_s"]) / max(rejected, 1) * 1000
    return lines + ["", f"Armed on clean rows, the two options cost {ratio(q['guarded'], q['plain']):.2f}x (noise: "
                    "a watchdog thread per worker, a lock per model call). Each rejected row costs the run "
                    f"{per_row:.1f} ms of wall time here: isolating it takes up to 2*log2(65,536) = 32 more model "
                    "calls on ever smaller slices of its batch, and a call of this model costs about a millisecond "
                    "whatever its size (the conversion to pandas, the model's own work per call), so the cost "
                    "follows the number of bad rows and the model's cost per call, not the data's size.", ""]


INCREMENTAL_HEADING = "## Nightly growth: full re-score against --incremental"


def _scored(cmd: list[str], ray_env: dict[str, str]) -> tuple[float, int]:
    """Whole-process seconds of one run, and the rows it scored (the manifest's rows_scored_this_run)."""
    started = time.monotonic()
    subprocess.run(cmd, env=env(**ray_env), check=True, capture_output=True)
    seconds = time.monotonic() - started
    return seconds, json.loads(Path(cmd[cmd.index("--output") + 1], "_manifest.json").read_text())[
        "totals"]["rows_scored_this_run"]


def incremental(inp: Path, ray_env: dict[str, str], rows: int) -> list[str]:
    """A week of nightly runs over an input that grows by one file (a taxi shard) a night: each night's run as the
    per-tick layout does it (the whole input into its own folder) and as --incremental does it (only the new file,
    into one output), one after the other on the same cluster; the report's section."""
    nights = 7
    grow, full, grown = OUT / "grow-input", OUT / "grow-full", OUT / "grow-incremental"
    for path in (grow, full, grown):
        shutil.rmtree(path, ignore_errors=True)
    grow.mkdir(parents=True)
    base = [str(BIN / "shardscore"), "run", "--input", str(grow), "--model", "ray_example:load_model",
            "--progress-interval", "0"]
    table = ["| night | input rows | full re-score: rows, seconds | --incremental: rows, seconds | seconds ratio |",
             "|---:|---:|---:|---:|---:|"]
    totals = [0.0, 0.0, 0, 0]  # seconds full, incremental; rows full, incremental
    for night, shard in enumerate(sorted(inp.glob("*.parquet"))[:nights], 1):
        os.link(shard, grow / f"night-{night}.parquet")
        f_s, f_rows = _scored([*base, "--output", str(full / f"run={night}")], ray_env)
        i_s, i_rows = _scored([*base, "--output", str(grown), "--incremental"], ray_env)
        totals = [totals[0] + f_s, totals[1] + i_s, totals[2] + f_rows, totals[3] + i_rows]
        table.append(f"| {night} | {night * rows // 12:,} | {f_rows:,}, {f_s:.2f} | {i_rows:,}, {i_s:.2f} | "
                     f"{f_s / i_s:.2f} |")
        print(f"  night {night}: full {f_rows:,} rows {f_s:.2f} s, incremental {i_rows:,} rows {i_s:.2f} s", flush=True)
    return [INCREMENTAL_HEADING, "",
            f"Measured on {time.strftime('%Y-%m-%d')} by bench/run.py `incremental` (also part of `make bench`): an "
            f"input that grows by one {rows // 12:,}-row taxi file a night, {nights} nights, the Ray example's model, "
            "tasks; each night once as the per-tick layout scores it (the whole input, into its own folder) and once "
            "with --incremental (into one output), whole processes, one run each.", "", *table, "",
            f"Over the {nights} nights: {totals[2]:,} rows and {totals[0]:.1f} s re-scoring everything against "
            f"{totals[3]:,} rows ({totals[2] / totals[3]:.1f}x fewer) and {totals[1]:.1f} s incrementally "
            f"({totals[0] / totals[1]:.2f}x). The rows scored follow the new data only; the seconds less so, as each "
            "run also pays a run's fixed cost (\"Where the fixed time goes\", above), to which the Ray example "
            f"model's {rows // 12:,} new rows a night add little.", ""]


TABLES_HEADING = "## Table output (Iceberg, Delta): the commit's cost, and Ray Data's write_iceberg and write_delta"
DUMMY = "shardscore.models.dummy:load_model"


def _into_table(name: str, inp: Path, ray_env: dict[str, str], repeats: int, delta: bool) -> dict:
    """shardscore into a fresh table each repeat, the Iceberg table bench.scores of a SQLite catalog and local
    warehouse or a local Delta table: the whole process and the table commit's own seconds (the manifest's
    table.commit_seconds)."""
    walls, commits = [], []
    for i in range(repeats):
        root = OUT / f"table-{i}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        catalog = {"PYICEBERG_CATALOG__BENCH__URI": f"sqlite:///{root}/catalog.db",
                   "PYICEBERG_CATALOG__BENCH__WAREHOUSE": f"file://{root}/warehouse"}
        location = root / "delta" if delta else root / "warehouse" / "bench" / "scores"
        cmd = [c.replace("{out}", f"delta+{location}" if delta else "iceberg://bench/bench.scores")
               for c in shardscore(inp, DUMMY, "--model-arg", "payload_mb=0")]
        result = timed(cmd, location, {**ray_env, **catalog})
        walls.append(result["wall"])
        commits.append(result["_manifest"]["table"]["commit_seconds"])
        rows = result["rows"]
        shutil.rmtree(root, ignore_errors=True)
    med = statistics.median(walls)
    print(f"  {name}: median {med:.2f} s over {walls}, commit {statistics.median(commits):.2f} s", flush=True)
    return {"median_s": med, "walls_s": walls, "rows": rows, "commit_s": statistics.median(commits)}


def tables(inp: Path, ray_env: dict[str, str], rows: int) -> list[str]:
    """shardscore into a folder, an Iceberg table and a Delta table, and Ray Data into Parquet, an Iceberg table
    (write_iceberg) and a Delta table (write_delta), the dummy model without payload, on the taxi data (12 shards)
    and on 1,000 shards of 10 rows (where the commit's per-file cost shows); the report's section."""
    shards = int(1_000 * SCALE)
    tiny = sample(DATA / f"tiny-{shards}", shards, 10)
    baseline = [sys.executable, str(BENCH / "baselines.py")]
    lines = [TABLES_HEADING, "",
             f"Measured on {time.strftime('%Y-%m-%d')} by bench/run.py `tables` (also part of `make bench`): the dummy "
             "model without payload (one column, pyarrow), tasks; each table a fresh one: Iceberg in a pyiceberg SQL "
             "catalog on SQLite with a local warehouse, Delta in a local folder; Ray Data is read_parquet()"
             ".map_batches(model).write_parquet(), .write_iceberg() into an empty table of the same catalog kind, or "
             ".write_delta(). Whole processes against a cluster already up; median of "
             f"{REPEATS} on the taxi data, one run on the tiny shards.", "",
             "| data | shardscore folder s | Iceberg s (its commit s) | Iceberg / folder | Delta s (its commit s) | "
             "Delta / folder | Ray Data Parquet s | Ray Data Iceberg s | Ray Data Delta s | shardscore / Ray Data, "
             "Iceberg | shardscore / Ray Data, Delta |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, data, repeats in ((f"{rows:,} rows, 12 shards", inp, REPEATS), (f"{shards:,} shards of 10 rows", tiny, 1)):
        folder = median_of(f"shardscore into a folder, {label}",
                           shardscore(data, DUMMY, "--model-arg", "payload_mb=0"), ray_env, repeats)
        table = _into_table(f"shardscore into an Iceberg table, {label}", data, ray_env, repeats, delta=False)
        delta = _into_table(f"shardscore into a Delta table, {label}", data, ray_env, repeats, delta=True)
        rd = {kind: median_of(f"Ray Data {kind}, {label}", [*baseline, f"ray-data-{kind}", str(data), "{out}"],
                              ray_env, repeats) for kind in ("dummy", "iceberg", "delta")}
        assert len({folder["rows"], table["rows"], delta["rows"], *(r["rows"] for r in rd.values())}) == 1, \
            "the variants' rows differ"
        lines.append(f"| {label} | {folder['median_s']:.2f} | {table['median_s']:.2f} ({table['commit_s']:.2f}) | "
                     f"{ratio(table, folder):.2f} | {delta['median_s']:.2f} ({delta['commit_s']:.2f}) | "
                     f"{ratio(delta, folder):.2f} | {rd['dummy']['median_s']:.2f} | {rd['iceberg']['median_s']:.2f} | "
                     f"{rd['delta']['median_s']:.2f} | {ratio(table, rd['iceberg']):.2f} | "
                     f"{ratio(delta, rd['delta']):.2f} |")
    return lines + [""]


#: The sections `python bench/run.py <name>` measures alone: (heading, function of (taxi data, cluster, rows)).
PEERS_HEADING = "## Spark and Daft, and the fixed cost"
PEERS_PY = BENCH / ".venv" / "bin" / "python"  # the peers' own venv (make bench; bench/peers.lock)
PEER_ENGINES = {"spark": "Spark", "daft": "Daft"}
PEER_MODELS = {"example": "Ray example model", "declaring": "dummy model (declares columns)"}


def peer(engine: str, model: str, inp: Path) -> list[str]:
    return [str(PEERS_PY), str(BENCH / "peers.py"), engine, model, str(inp), "{out}"]


def peer_env() -> dict[str, str]:
    return {"PYTHONPATH": f"{BENCH}:{ROOT / 'job'}"}  # ray_example, and shardscore's dummy model


def peer_versions() -> str:
    code = ("import daft, pandas, pyarrow, pyspark, platform, subprocess; print(f'PySpark {pyspark.__version__}, "
            "Daft {daft.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__} (their venv); ' + "
            "subprocess.run(['java', '-version'], capture_output=True, text=True).stderr.splitlines()[0])")
    return subprocess.run([str(PEERS_PY), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def _peer_runs(sizes: dict[str, Path], ray_env: dict[str, str]) -> dict[tuple[str, str, str], dict]:
    """(size, model, variant) -> median result: shardscore, the process pool, Spark and Daft, on each size."""
    models = {"example": "ray_example:load_model", "declaring": "shardscore.models.dummy:load_model"}
    pools = {"example": "pool-example", "declaring": "pool-best"}
    runs = {}
    for size, inp in sizes.items():
        for model, text in PEER_MODELS.items():
            runs[size, model, "shardscore tasks"] = median_of(f"shardscore tasks, {text}, {size}",
                                                              shardscore(inp, models[model]), ray_env)
            runs[size, model, "process pool"] = median_of(f"process pool ({pools[model]}), {text}, {size}",
                                                          [sys.executable, str(BENCH / "baselines.py"), pools[model],
                                                           str(inp), "{out}"], {})
            for engine, name in PEER_ENGINES.items():
                runs[size, model, name] = median_of(f"{name}, {text}, {size}", peer(engine, model, inp), peer_env())
    return runs


def peers(inp: Path, ray_env: dict[str, str], rows: int) -> list[str]:
    """Spark and Daft against shardscore and the process pool at 14M and 56M rows, both models; and the fixed cost:
    shardscore on 12 ten-row shards against Ray's floor (bare; with the imports any Ray scorer of the model pays in
    its workers; and with the driver loading and putting the model too, as any Ray scorer that loads it once does);
    the report's section."""
    big = sample(DATA / f"taxi-48x{int(1_166_666 * SCALE)}", 48, int(1_166_666 * SCALE))
    tiny = sample(DATA / "tiny-12x10", 12, 10)
    sizes = {f"{rows / 1e6:.3g}M": inp, f"{48 * int(1_166_666 * SCALE) / 1e6:.3g}M": big}
    runs = _peer_runs(sizes, ray_env)
    scoring = ("pyarrow.parquet", "pandas", "ray_example")
    bare, scoring_floor = floor(ray_env, repeats=5), floor(ray_env, repeats=5, imports=scoring)
    pattern_floor = floor(ray_env, repeats=5, imports=scoring, model="ray_example:load_model")
    tiny_ss = median_of("shardscore tasks, Ray example model, 12 shards of 10 rows",
                        shardscore(tiny, "ray_example:load_model"), ray_env, repeats=5)
    tiny_pool = median_of("process pool, Ray example model, 12 shards of 10 rows",
                          [sys.executable, str(BENCH / "baselines.py"), "pool-example", str(tiny), "{out}"], {},
                          repeats=5)
    warm = warm_pool("shardscore warm pool, Ray example model", shardscore(inp, "ray_example:load_model"), ray_env,
                     "bench-peers")
    small, large = sizes
    lines = [PEERS_HEADING, "",
             f"Measured on {time.strftime('%Y-%m-%d')} by bench/run.py `peers` (also part of `make bench`), in one run: "
             f"{peer_versions()}. Each peer is written the way its docs recommend for batch scoring with a model "
             "loaded once per worker (bench/peers.py): Spark in local mode on every core, `mapInPandas` for the Ray "
             "example's model and `mapInArrow` on the one column the declaring model reads; Daft's native runner with "
             "a `@daft.cls` class and a `@daft.method.batch` method. Same data, same models, Parquet out (zstd), "
             f"whole processes, median of {REPEATS}. Ratio: the variant's seconds over shardscore's (above 1: "
             "shardscore is faster). Engine start: Spark's JVM and session, Daft's plan, apart from the import.", "",
             f"| model | variant | {small} s | {large} s | {small} ratio | {large} ratio | import s | engine start s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, text in PEER_MODELS.items():
        for variant in ("shardscore tasks", "process pool", *PEER_ENGINES.values()):
            a, b = runs[small, model, variant], runs[large, model, variant]
            base_a, base_b = runs[small, model, "shardscore tasks"], runs[large, model, "shardscore tasks"]
            start = [f"{a[k]:.2f}" if k in a else "-" for k in ("import_s", "engine_s")]
            lines.append(f"| {text} | {variant} | {a['median_s']:.2f} | {b['median_s']:.2f} | {ratio(a, base_a):.2f} | "
                         f"{ratio(b, base_b):.2f} | {start[0]} | {start[1]} |")
    above = {name: tiny_ss["median_s"] - f["process"]
             for name, f in (("bare", bare), ("imports", scoring_floor), ("pattern", pattern_floor))}
    ss_small, pool_small = runs[small, "example", "shardscore tasks"], runs[small, "example", "process pool"]
    ss_large, pool_large = runs[large, "example", "shardscore tasks"], runs[large, "example", "process pool"]
    lines += ["", "The fixed cost: a run with (almost) nothing to score, 12 shards of 10 rows, the Ray example's model, "
              "median of 5, against Ray's floor (bench/ray_floor.py: import ray, ray.init, one no-op task per CPU, "
              "exit), measured three ways: bare; with each task importing pyarrow.parquet, pandas and the model's "
              "module, which every Ray scorer of this model pays in its workers; and the Ray docs' pattern at its "
              "best, which every Ray scorer that loads the model once pays: those tasks start the workers while the "
              "driver imports the model's module, loads the model and `ray.put`s it, then one task per CPU gets it. "
              "What shardscore pays above the last is its own share (planning, the lease, a commit record per "
              "shard, the manifest); on 2 cores, the driver's import of pandas for the model competes with the two "
              "workers' starts, in shardscore and in that floor alike.", "",
              "| measure | seconds |", "|---|---:|",
              f"| Ray's floor, bare | {bare['process']:.2f} |",
              f"| Ray's floor, tasks importing pyarrow, pandas and the model's module | {scoring_floor['process']:.2f} |",
              f"| Ray's floor, the driver also loading and putting the model while the workers start | "
              f"{pattern_floor['process']:.2f} |",
              f"| shardscore, 12 shards of 10 rows | {tiny_ss['median_s']:.2f} |",
              f"| process pool, 12 shards of 10 rows | {tiny_pool['median_s']:.2f} |",
              f"| shardscore above Ray's bare floor | {above['bare']:.2f} |",
              f"| shardscore above the floor with the scoring imports | {above['imports']:.2f} |",
              f"| shardscore above the floor of the same pattern (its own share; target 0.2) | {above['pattern']:.2f} |",
              "",
              "Ratios, the Ray example's model (cold: a run that starts its workers; warm: `--pool`, workers left "
              "loaded by an earlier run):", "",
              "| ratio | value |", "|---|---:|",
              f"| shardscore / process pool, {small}, cold | {ratio(ss_small, pool_small):.2f} |",
              f"| shardscore / process pool, {small}, warm pool | {ratio(warm, pool_small):.2f} |",
              f"| shardscore / process pool, {large}, cold | {ratio(ss_large, pool_large):.2f} |",
              f"| shardscore / Ray's bare floor, {small}, cold | {ss_small['median_s'] / bare['process']:.2f} |",
              f"| shardscore / Ray's bare floor, {small}, warm pool | {warm['median_s'] / bare['process']:.2f} |",
              f"| shardscore / Ray's floor of the same pattern, {small}, cold | "
              f"{ss_small['median_s'] / pattern_floor['process']:.2f} |", ""]
    return lines


LOADERS_HEADING = "## Loaders against their library's own predict"


def loaders(inp: Path, ray_env: dict[str, str], rows: int) -> list[str]:
    """Each shipped loader on one worker (`--max-in-flight 1`) against its library's own batch predict in one process
    (bench/loaders.py), on the same data: the loop's rows/s (shardscore: first shard start to last result, the
    manifest's scoring minus first_shard_start) and whole processes; the report's section."""
    models = OUT / "loader-models"
    specs = json.loads(subprocess.run([sys.executable, str(BENCH / "loaders.py"), "train", str(inp), str(models)],
                                      env=env(), check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    lines = [LOADERS_HEADING, "",
             f"Measured on {time.strftime('%Y-%m-%d')} by bench/run.py `loaders` (also part of `make bench`): {rows:,} "
             "taxi rows in 12 shards, five features (the transformers classifier: 48,000 reviews of 3 to 23 words in "
             "12 shards, a 2-layer BERT of width 64 with random weights, 64 texts a forward pass); each loader in "
             "shardscore on one worker (`--max-in-flight 1`, tasks) and its library alone in one process "
             "(bench/loaders.py: file by file, Arrow batches of 65,536 rows, the library's predict, Parquet out), both "
             f"on one core (OMP_NUM_THREADS=1); median of {REPEATS}. Loop: shardscore from the first shard's start to "
             "the last result (the MLflow and transformers loaders load their model at the first batch, inside it); "
             "the library's batches from its first read to its last write, and the same with its import and the "
             "model's load before them.", "",
             "| loader | shardscore loop rows/s | library batches rows/s | ratio (target >= 0.9) | library with its load "
             "rows/s | ratio | shardscore process s | library process s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, spec in specs.items():
        data = Path(spec["input"]) if spec["input"] else inp
        factory, *args = spec["model"]
        ss = median_of(f"shardscore, one worker, {name}", shardscore(data, factory, *[x for a in args for x in (
            "--model-arg", a)], "--max-in-flight", "1"), ray_env)
        alone = median_of(f"{name} alone, one process", [sys.executable, str(BENCH / "loaders.py"), "bare", name,
                                                         str(data), "{out}", str(models)], {})
        loop = ss["breakdown_s"]["scoring"] - ss["breakdown_s"]["first_shard_start"]
        ss_rate, alone_rate = ss["rows"] / loop, alone["rows"] / alone["scoring_s"]
        loaded_rate = alone["rows"] / (alone["scoring_s"] + alone["load_s"])
        lines.append(f"| {name} | {ss_rate:,.0f} | {alone_rate:,.0f} | {ss_rate / alone_rate:.2f} | "
                     f"{loaded_rate:,.0f} | {ss_rate / loaded_rate:.2f} | {ss['median_s']:.2f} | "
                     f"{alone['median_s']:.2f} |")
    return lines + [""]


SECTIONS = {"quarantine": (QUARANTINE_HEADING, quarantine), "incremental": (INCREMENTAL_HEADING, incremental),
            "peers": (PEERS_HEADING, peers), "loaders": (LOADERS_HEADING, loaders), "tables": (TABLES_HEADING, tables)}


def section_only(name: str) -> None:
    """`python bench/run.py quarantine|incremental|peers|loaders|tables`: that section alone, written into RESULTS.md
    in place of its last one (or at the end)."""
    heading, measure = SECTIONS[name]
    rows = int(14_000_000 * SCALE) // 12
    taxi = sample(DATA / f"taxi-12x{rows}", 12, rows)
    ray_env = start_cluster()
    try:
        lines = measure(taxi, ray_env, rows * 12)
    finally:
        stop_cluster(ray_env)
    results = (BENCH / "RESULTS.md").read_text()
    before, _, after = results.partition(heading)
    rest = after.partition("\n## ")[2]
    (BENCH / "RESULTS.md").write_text(before.rstrip("\n") + "\n\n" + "\n".join(lines) + ("\n## " + rest if rest else ""))
    print("\n".join(lines))


def main() -> None:
    DATA.mkdir(exist_ok=True)
    OUT.mkdir(exist_ok=True)
    rows_main = int(14_000_000 * SCALE) // 12
    print(f"data: 12 shards x {rows_main:,} rows; 1 shard x {int(10_000_000 * SCALE):,} rows; "
          f"{int(10_000 * SCALE):,} and {int(1_000 * SCALE):,} tiny shards; the scaling sweep", flush=True)
    taxi = sample(DATA / f"taxi-12x{rows_main}", 12, rows_main)
    big = sample(DATA / f"big-1x{int(10_000_000 * SCALE)}", 1, int(10_000_000 * SCALE))
    tiny = sample(DATA / f"tiny-{int(10_000 * SCALE)}", int(10_000 * SCALE), 10)
    tiny_small = sample(DATA / f"tiny-{int(1_000 * SCALE)}", int(1_000 * SCALE), 10)
    sweep_data = {label: sample(DATA / f"taxi-{n}x{int(rows * SCALE)}", n, int(rows * SCALE))
                  for label, n, rows in SIZES + SHARD_COUNTS}
    scale_data = sweep_data["56M rows, 48 shards"]
    weights = DATA / "taxi_net.pt"
    if not weights.exists():
        subprocess.run([sys.executable, "-c", "import sys; from shardscore.models.torch_model import save_example; "
                        "save_example(sys.argv[1])", str(weights)], check=True, env=env())
    data_mb = sum(f.stat().st_size for f in taxi.glob("*.parquet")) / 2**20

    ray_env = start_cluster()
    try:
        py = sys.executable
        example, dummy = "ray_example:load_model", "shardscore.models.dummy:load_model"
        torch = "shardscore.models.torch_model:load_model"
        print("variants (median of %d, each in a fresh process, cluster already up):" % REPEATS, flush=True)
        r: dict[str, dict] = {}
        r["ray_floor"] = floor(ray_env)
        r["ss_tasks_example"] = median_of("shardscore tasks, Ray example model", shardscore(taxi, example), ray_env)
        r["ss_actors_example"] = median_of("shardscore actors, Ray example model",
                                           shardscore(taxi, example, "--strategy", "actors"), ray_env)
        r["pool_example"] = median_of("process pool, Ray example model",
                                      [py, str(BENCH / "baselines.py"), "pool-example", str(taxi), "{out}"], {})
        r["ss_tasks_dummy"] = median_of("shardscore tasks, dummy model (declares columns)",
                                        shardscore(taxi, dummy), ray_env)
        r["ss_actors_dummy"] = median_of("shardscore actors, dummy model (declares columns)",
                                         shardscore(taxi, dummy, "--strategy", "actors"), ray_env)
        r["pool_best"] = median_of("process pool at its best (one column, pyarrow)",
                                   [py, str(BENCH / "baselines.py"), "pool-best", str(taxi), "{out}"], {})
        r["ray_example"] = median_of("Ray example as written", [py, str(BENCH / "ray_example.py"), str(taxi),
                                                                "{out}"], ray_env)
        r["ray_data"] = median_of("Ray Data read_parquet/map_batches/write_parquet",
                                  [py, str(BENCH / "baselines.py"), "ray-data", str(taxi), "{out}"], ray_env)
        r["ss_tasks_torch"] = median_of("shardscore tasks, PyTorch model",
                                        shardscore(taxi, torch, "--model-arg", f"path={weights}"), ray_env)
        r["pool_torch"] = median_of("process pool, PyTorch model",
                                    [py, str(BENCH / "baselines.py"), "pool-torch", str(taxi), "{out}",
                                     str(weights)], {})
        r["pool_warm_example"] = warm_pool("shardscore warm pool, Ray example model", shardscore(taxi, example),
                                           ray_env, "bench-example")
        r["pool_warm_dummy"] = warm_pool("shardscore warm pool, dummy model (declares columns)",
                                         shardscore(taxi, dummy), ray_env, "bench-dummy")
        r["pool_warm_torch"] = warm_pool("shardscore warm pool, PyTorch model",
                                         shardscore(taxi, torch, "--model-arg", f"path={weights}"), ray_env,
                                         "bench-torch")
        rows_scale = sum(1 for _ in scale_data.glob("*.parquet")) * int(1_166_666 * SCALE)
        r["scale_ss_example"] = median_of(f"shardscore tasks, Ray example model, {rows_scale / 1e6:.0f}M rows",
                                          shardscore(scale_data, example), ray_env)
        r["scale_pool_example"] = median_of(f"process pool, Ray example model, {rows_scale / 1e6:.0f}M rows",
                                            [py, str(BENCH / "baselines.py"), "pool-example", str(scale_data),
                                             "{out}"], {})
        r["scale_ss_dummy"] = median_of(f"shardscore tasks, dummy model, {rows_scale / 1e6:.0f}M rows",
                                        shardscore(scale_data, dummy), ray_env)
        r["scale_pool_dummy"] = median_of(f"process pool at its best, dummy model, {rows_scale / 1e6:.0f}M rows",
                                          [py, str(BENCH / "baselines.py"), "pool-best", str(scale_data), "{out}"],
                                          {})
        r["ss_tiny"] = median_of(f"shardscore tasks, {int(10_000 * SCALE):,} tiny shards",
                                 shardscore(tiny, dummy, "--model-arg", "payload_mb=0"), ray_env, repeats=1)
        r["ss_tiny_small"] = median_of(f"shardscore tasks, {int(1_000 * SCALE):,} tiny shards",
                                       shardscore(tiny_small, dummy, "--model-arg", "payload_mb=0"), ray_env,
                                       repeats=1)
        r["pool_tiny"] = median_of(f"process pool at its best, {int(10_000 * SCALE):,} tiny shards",
                                   [py, str(BENCH / "baselines.py"), "pool-best", str(tiny), "{out}"], {}, repeats=1)
        sections = [*quarantine(taxi, ray_env, rows_main * 12), *incremental(taxi, ray_env, rows_main * 12),
                    *peers(taxi, ray_env, rows_main * 12), *loaders(taxi, ray_env, rows_main * 12),
                    *tables(taxi, ray_env, rows_main * 12)]
        growth = worker_growth(big, ray_env)
        print("scaling sweep (the Ray example's model):", flush=True)
        sweep = {label: sweep_variants(path, ray_env, label, SWEEP_REPEATS) for label, path in sweep_data.items()}
    finally:
        stop_cluster(ray_env)
    report(r, growth, data_mb, rows_main * 12, sweep, sections)


def marginal(small: dict, large: dict) -> float:
    """Seconds per million rows added, between two runs of one variant on 14M and 56M rows."""
    return (large["median_s"] - small["median_s"]) / ((large["rows"] - small["rows"]) / 1e6)


PHASES = [("startup", "interpreter and the CLI's imports"), ("import_ray", "import ray"),
          ("ray_init", "ray.init (joining the cluster)"),
          ("model", "loading and pickling the model"), ("plan", "planning (footers)"),
          ("output", "the output's lease, listing and commit records"), ("put", "putting the model"),
          ("first_shard_start", "until a worker starts the first shard (worker start)"),
          ("first_batch", "the first batch of that shard"), ("scoring", "scoring, submit to last result"),
          ("verify_and_manifest", "final listing, manifest and _SUCCESS")]


def report(r: dict[str, dict], growth: dict, data_mb: float, rows: int, sweep: dict[str, dict[str, dict]],
           sections: list[str]) -> None:
    import pyarrow
    import ray

    best_example = min(r["ss_tasks_example"], r["ss_actors_example"], key=lambda x: x["median_s"])
    best_dummy = min(r["ss_tasks_dummy"], r["ss_actors_dummy"], key=lambda x: x["median_s"])
    n_tiny = r["ss_tiny"]["rows"] // 10
    overhead_ms = (r["ss_tiny"]["median_s"] - r["pool_tiny"]["median_s"]) / n_tiny * 1000
    marg = {k: marginal(r[f"ss_tasks_{k}"], r[f"scale_ss_{k}"]) / marginal(
        r["pool_example" if k == "example" else "pool_best"], r[f"scale_pool_{k}"]) for k in ("example", "dummy")}
    # (measure, value for a cold run, value with a warm pool or None, target text, test)
    checks = [
        ("Ray example model at 56M rows: shardscore / process pool (same model)",
         ratio(r["scale_ss_example"], r["scale_pool_example"]), None, "<= 1.15", at_most(1.15)),
        ("model that declares its columns at 56M rows: shardscore / process pool",
         ratio(r["scale_ss_dummy"], r["scale_pool_dummy"]), None, "<= 1.15", at_most(1.15)),
        ("marginal cost per row, Ray example model: shardscore / process pool", marg["example"], None, "<= 1.1",
         at_most(1.1)),
        ("marginal cost per row, model that declares its columns: shardscore / process pool", marg["dummy"], None,
         "<= 1.1", at_most(1.1)),
        ("Ray example model at 14M rows: shardscore / process pool (same model)", ratio(best_example,
                                                                                       r["pool_example"]),
         ratio(r["pool_warm_example"], r["pool_example"]), "<= 1.3 cold, <= 1.1 warm", None),
        ("model that declares its columns at 14M rows: shardscore / process-pool limit",
         ratio(best_dummy, r["pool_best"]), ratio(r["pool_warm_dummy"], r["pool_best"]), "<= 1.3 cold, <= 1.1 warm",
         None),
        ("Ray Data / shardscore (Ray example model)", ratio(r["ray_data"], best_example),
         ratio(r["ray_data"], r["pool_warm_example"]), "> 1 (kept)", at_least(1)),
        ("Ray example as written / shardscore (same model)", ratio(r["ray_example"], best_example),
         ratio(r["ray_example"], r["pool_warm_example"]), "> 1 (kept)", at_least(1)),
        ("PyTorch model: shardscore / process pool (same model)", ratio(r["ss_tasks_torch"], r["pool_torch"]),
         ratio(r["pool_warm_torch"], r["pool_torch"]), "<= 1.3 cold, <= 1.1 warm", None),
        ("worker memory growth on a 10M-row shard (MB)", growth["growth_mb"], None, "< 300", at_most(300)),
        (f"scheduling overhead per shard at {n_tiny:,} tiny shards (ms)", overhead_ms, None, "< 5", at_most(5)),
        ("driver peak memory with 10x more tiny shards (ratio)",
         r["ss_tiny"]["driver_peak_mb"] / r["ss_tiny_small"]["driver_peak_mb"], None, "flat (< 1.5)", at_most(1.5)),
    ]
    rows_text = {k: v for k, v in r.items() if "median_s" in v}
    lines = [
        "# Benchmark results", "",
        f"Generated by `make bench` (bench/run.py) on {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, Ray {ray.__version__}, "
        f"pyarrow {pyarrow.__version__}. Scale {SCALE}: {rows:,} taxi rows in 12 shards ({data_mb:.0f} MB), "
        f"median of {REPEATS} runs, each variant in a fresh process against one Ray cluster that was already up "
        "(as a RayJob entrypoint finds it). Times are whole-process wall seconds, `ray.init` included; the "
        "`ray.init` column shows that part alone. Peak memory is the driver's process tree plus every Ray worker, "
        "above the idle workers.", "",
        "![rows/s against dataset size and shard count](scaling.png)", "",
        "| variant | seconds (median) | rows/s | ray.init s | peak memory MB |", "|---|---:|---:|---:|---:|",
    ]
    for v in rows_text.values():
        init = f"{v['ray_init_s']:.2f}" if v["ray_init_s"] is not None else "-"
        lines.append(f"| {v['name']} | {v['median_s']:.2f} | {v['rows_per_s']:,.0f} | {init} | {v['peak_mb']:,.0f} |")

    def verdict(value, test) -> str:
        return "-" if value is None or test is None else ("yes" if test(value) else "**no**")

    def two(cold: float, warm: float | None, target: str) -> str:
        limits = [float(part.split()[1]) for part in target.split(",")]
        cold_ok = "yes" if cold <= limits[0] else "**no**"
        warm_ok = "-" if warm is None else ("yes" if warm <= limits[-1] else "**no**")
        return f"{cold_ok} / {warm_ok}"

    lines += ["", "## Targets", "",
              "Cold: a run that starts its own Ray workers (the best of tasks and actors). Warm pool: "
              "`--strategy actors --pool NAME`, the second and later runs on a cluster where an earlier run left "
              "the pool's workers up with the model loaded. Marginal cost: seconds per million rows added between "
              "the 14M-row and the 56M-row runs of the same variant.", "",
              "| measure | cold | warm pool | target | met (cold / warm) |", "|---|---:|---:|---|---|"]
    for name, cold, warm, target, test in checks:
        warm_text = f"{warm:.2f}" if warm is not None else "-"
        met = two(cold, warm, target) if test is None else f"{verdict(cold, test)} / {verdict(warm, test)}"
        lines.append(f"| {name} | {cold:.2f} | {warm_text} | {target} | {met} |")
    f = r["ray_floor"]
    ss = r["ss_tasks_example"]
    fixed = ss["median_s"] - ss["rows"] / 1e6 * marginal(r["ss_tasks_example"], r["scale_ss_example"])
    pool_fixed = r["pool_example"]["median_s"] - r["pool_example"]["rows"] / 1e6 * marginal(
        r["pool_example"], r["scale_pool_example"])
    lines += ["", "## Where the fixed time goes", "",
              f"The 14M-row cold run (tasks, the Ray example's model): {ss['median_s']:.2f} s in all; its fixed part "
              f"(the total minus 14M rows at the marginal rate) is {fixed:.2f} s, the process pool's "
              f"{pool_fixed:.2f} s. Medians of the manifest's breakdown (the driver's wall clock; the workers start "
              "while the driver plans and loads the model, so phases overlap):", "",
              "| phase | seconds |", "|---|---:|"]
    lines += [f"| {text} | {ss['breakdown_s'].get(key, 0.0):.2f} |" for key, text in PHASES]
    lines += ["", "Ray's own floor, measured alone by bench/ray_floor.py (seconds since the process started):", "",
              "| mark | seconds |", "|---|---:|"]
    lines += [f"| {k.replace('_', ' ')} | {v:.2f} |" for k, v in f.items() if k != "workers"]
    lines += ["", f"10M-row shard: worker RSS {growth['worker_rss_before_mb']:.0f} MB before, "
              f"{growth['worker_rss_peak_mb']:.0f} MB at peak, scored in {growth['seconds']:.1f} s.",
              f"Tiny shards: {r['ss_tiny']['median_s']:.1f} s for {n_tiny:,} shards with shardscore, "
              f"{r['pool_tiny']['median_s']:.1f} s for the process pool; driver peak "
              f"{r['ss_tiny_small']['driver_peak_mb']:.0f} MB at {n_tiny // 10:,} shards and "
              f"{r['ss_tiny']['driver_peak_mb']:.0f} MB at {n_tiny:,}.", "",
              "## Scaling (the Ray example's model)", "",
              "| dataset | " + " | ".join(next(iter(sweep.values()))) + " |",
              "|---|" + "---:|" * len(next(iter(sweep.values())))]
    for label, variants in sweep.items():
        lines.append(f"| {label} | " + " | ".join(f"{v['rows_per_s'] / 1e6:.2f}M rows/s" for v in variants.values())
                     + " |")
    lines += ["", *sections]
    (BENCH / "RESULTS.md").write_text("\n".join(lines))
    (BENCH / "results.json").write_text(json.dumps({"variants": r, "worker_growth": growth, "sweep": sweep,
                                                    "checks": [{"measure": n, "cold": c, "warm_pool": w, "target": t}
                                                               for n, c, w, t, _ in checks]},
                                                   indent=2, default=str) + "\n")
    from plot import scaling_png

    scaling_png(sweep, BENCH / "scaling.png")
    print("\n".join(lines))


if __name__ == "__main__":
    section_only(sys.argv[1]) if sys.argv[1:] and sys.argv[1] in SECTIONS else main()
