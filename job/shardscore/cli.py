"""Command line: `shardscore run | plan | demo | sample-data`.

Exit codes: 0 success; 1 more shards failed than --max-failed-shards allows; 2 bad options, input, output,
model, or output made by another model or input (nothing was scored); 3 the run was aborted (for example
`--device cuda` on a worker without CUDA).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import Any, Sequence, TextIO

from . import __version__, config, options, runlog
from .errors import ConfigError, OutputUnwritable, RunAborted, ShardscoreError
from .k8s import rayjob_report, tick
from .logs import BoundedLog, capture_driver_output


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardscore", description=__doc__.splitlines()[0],
                                     epilog="Options also come from SHARDSCORE_<OPTION> environment variables "
                                            "and a YAML --config file; flags win, then environment, then file.")
    parser.add_argument("--version", action="version", version=f"shardscore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="score a dataset")
    plan = sub.add_parser("plan", help="dry run: shards, rows, bytes, schema check; no scoring")
    for p in (run, plan):
        p.add_argument("--config", help="YAML file of options")
        options.add_arguments(p, config.RunConfig)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    demo = sub.add_parser("demo", help="generate sample data, score it on a local Ray, show the output")
    demo.add_argument("--workdir", default="demo-output", help="where sample data and predictions go")
    demo.add_argument("--shards", type=int, default=8)
    demo.add_argument("--rows-per-shard", type=int, default=100_000)
    demo.add_argument("--strategy", choices=config.STRATEGIES, default="tasks")
    demo.add_argument("--iceberg", action="store_true",
                      help="score into the Iceberg table iceberg://demo/demo.predictions: pyiceberg's catalog 'demo' "
                           "as configured, else a SQLite catalog and a warehouse folder under --workdir")

    sample = sub.add_parser("sample-data", help="write taxi-like sample Parquet data")
    sample.add_argument("--output", required=True, help="local directory or s3://bucket/prefix")
    sample.add_argument("--shards", type=int, required=True)
    sample.add_argument("--rows-per-shard", type=int, required=True)
    sample.add_argument("--row-group-size", type=int, default=262144)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--s3-endpoint", default=None)

    runs = sub.add_parser("runs", help="the runs that changed an output: what each added, replaced and removed")
    runs.add_argument("output", help="the output (a local path, s3://bucket/prefix or iceberg://catalog/ns.table)")
    runs.add_argument("--since", metavar="RUN_ID", help="only the runs after this one (what is new since you read it)")
    runs.add_argument("--json", action="store_true", help="print the run records as a JSON list")
    runs.add_argument("--s3-endpoint", default=None)

    status = sub.add_parser("status", help="whether a run on an output is running, succeeded, failed or was aborted, "
                                           "which shards failed and why, and what to do next")
    status.add_argument("output", help="the output (a local path, s3://bucket/prefix or iceberg://catalog/ns.table)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--logs", action="store_true",
                        help="also print the run's driver log and its failed shards' errors, as kept in the output")
    status.add_argument("--watch", action="store_true", help="follow a running run until it ends")
    status.add_argument("--every", type=float, default=5.0, metavar="SECONDS", help="--watch's interval")
    status.add_argument("--s3-endpoint", default=None)

    package = sub.add_parser("package", help="zip a folder of model code under a name from its content, put it on an "
                                             "object store, and print the runtime_env that ships it to a Ray cluster")
    package.add_argument("folder", help="the folder whose contents become the job's working directory")
    package.add_argument("--to", required=True, metavar="URI", help="where the zip goes (s3://bucket/prefix/, a path)")
    package.add_argument("--json", action="store_true", help="print the result as JSON")
    package.add_argument("--s3-endpoint", default=None)

    # `shardscore tick`: the Helm chart's CronJob tick (scheduleMode cronJob); see k8s/tick.py.
    tick.add_parser(sub)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    names = {f for f in config.RunConfig.__dataclass_fields__}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _summary_text(manifest: dict[str, Any]) -> str:
    t, s = manifest["totals"], manifest["seconds"]
    rate = t["rows_per_second_this_run"]
    lines = [
        f"shardscore: run {manifest['status']}: {t['committed']}/{t['shards']} shards committed, "
        f"{t['failed']} failed, {t['skipped_already_committed']} already committed (skipped)",
        f"shardscore: {t['rows_in']:,} rows in, {t['rows_out']:,} predictions out; "
        f"{t['rows_scored_this_run']:,} rows scored this run in {s['scoring']:.2f} s"
        + (f" ({rate:,.0f} rows/s)" if rate else "") + f"; ray.init {s['ray_init']:.2f} s",
        f"shardscore: output {manifest['output']} (manifest: _manifest.json)",
    ]
    if manifest.get("logical_time"):
        lines.append(f"shardscore: logical time {manifest['logical_time']}: input {manifest['input']}, output "
                     f"{manifest['output']}")
    if t["rescored_damaged"]:
        lines.append(f"shardscore: {t['rescored_damaged']} shards re-scored: output file missing or changed")
    if t.get("rows_rejected"):
        from .planning import REJECTED_DIR

        lines.append(f"shardscore: {t['rows_rejected']:,} rows rejected (the model raised on them) in "
                     f"{t['shards_with_rejected_rows']} shards, within --max-bad-rows: they are in "
                     f"{manifest['output'].rstrip('/')}/{REJECTED_DIR}/, with the error and their input row")
    if t["zero_row_shards"]:
        lines.append(f"shardscore: {t['zero_row_shards']} zero-row shards committed without an output file")
    if manifest.get("ignored_files", {}).get("count"):
        from .planning import ignored_text

        lines.append(f"shardscore: {ignored_text(manifest['ignored_files'])}")
    if manifest.get("latest_pointer"):
        lines.append(f"shardscore: --latest-pointer {manifest['latest_pointer']}")
    lines += [f"shardscore: warning: {w}" for w in manifest.get("warnings", [])]
    from .status import failure_line

    lines += [failure_line(f) for f in manifest["failures"]]
    return "\n".join(lines)


def _write_summary(manifest: dict[str, Any], target: str | None, stdout: Any) -> None:
    if not target:
        return
    summary = {k: manifest[k] for k in ("status", "input", "output", "logical_time", "templates", "model", "totals",
                                        "seconds", "failures", "ignored_files")}
    text = json.dumps(summary, indent=2, default=str)
    if target == "-":
        print(text, file=stdout, flush=True)
    else:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def cmd_run(cfg: config.RunConfig) -> int:
    started_seconds = process_age()  # the interpreter and the CLI's imports
    driver_log = capture_driver_output()  # kept in the output with the manifest (logs.py), before Ray logs a line
    from . import ray_session  # noqa: F401 - imports Ray, before the heavier imports of the run: see ray_session.py

    ray_import_seconds = process_age() - started_seconds
    watcher = rayjob_report.from_environment()  # None, at no cost, outside a KubeRay RayJob that allows it
    try:
        return _run(cfg, started_seconds, ray_import_seconds, driver_log, watcher)
    except Exception as exc:
        if watcher is not None:
            watcher.ended("aborted" if isinstance(exc, RunAborted) else "failed",
                          str(exc) if isinstance(exc, ShardscoreError) else f"{type(exc).__name__}: {exc}")
        raise


def _run(cfg: config.RunConfig, started_seconds: float, ray_import_seconds: float, driver_log: BoundedLog,
         watcher: rayjob_report.RayJobReport | None) -> int:
    from .ray_session import start_workers
    from .run import Run, unwritable_message

    stdout = _stdout_for_json_only() if cfg.summary_json == "-" else sys.stdout
    cfg.validate()
    # Joining a cluster that is up: connect and have its workers start now, while the input is planned and the
    # model loaded (they take longer than both). A local Ray is started only once every check has passed.
    workers = start_workers(cfg) if cfg.ray_address or os.environ.get("RAY_ADDRESS") else None
    run = Run(cfg, workers, driver_log=driver_log, watcher=watcher)
    run.prepare()
    run.checked.seconds.update(startup=round(started_seconds, 3), import_ray=round(ray_import_seconds, 3))
    try:
        manifest = run.execute()
    except (OSError, OutputUnwritable) as exc:  # an OSError: what wrote after the manifest (the lease's release)
        unwritable = _unwritable_cause(exc) or OutputUnwritable(unwritable_message(cfg.output, exc))
        if unwritable.manifest:
            print(_summary_text(unwritable.manifest), flush=True)
            _write_summary(unwritable.manifest, cfg.summary_json, stdout)
        raise unwritable from (None if unwritable is exc else exc)
    summary = _summary_text(manifest)
    print(summary, flush=True)
    _write_summary(manifest, cfg.summary_json, stdout)
    if watcher is not None:
        watcher.ended(manifest["status"], "; ".join(line.removeprefix("shardscore: ") for line in summary.splitlines()))
    return 0 if manifest["status"] == "succeeded" else 1


def _unwritable_cause(exc: BaseException | None) -> OutputUnwritable | None:
    """exc, or the OutputUnwritable it was raised while handling (execute's `finally` releasing the lease)."""
    while exc is not None and not isinstance(exc, OutputUnwritable):
        exc = exc.__context__
    return exc


def _stdout_for_json_only() -> TextIO:
    """Give `--summary-json -` the process's stdout alone, until the process ends; return it.

    Everything else goes to stderr, for good: Ray's copies of the workers' output come from its log thread at any
    time, also after the summary (ray/_private/worker.py: print_logs -> print_to_stdstream, which writes a worker's
    stdout lines to sys.stdout as it is at that moment; disconnect flushes the deduplicated leftovers to sys.stdout
    at ray.shutdown). So sys.stdout stays stderr and the file descriptor 1 is made a copy of 2 (for writes that
    bypass sys.stdout, and for child processes); the JSON goes to a duplicate of the original descriptor.
    """
    sys.stdout.flush()
    try:
        json_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no file descriptors (an embedding that replaced them)
        json_out = sys.stdout
    sys.stdout = sys.stderr
    return json_out


def process_age() -> float:
    """Seconds since this process started, to 10 ms (the kernel's start time in clock ticks since boot).

    psutil's create_time adds the boot time, which /proc/stat gives in whole seconds: off by up to a second.
    """
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _exit_now(code: int) -> None:
    """End a driver that joined an existing cluster without Ray's orderly shutdown.

    Everything the run wrote is closed and committed by now; the cluster reclaims a departed driver's workers
    itself. The shutdown and interpreter teardown would add about a second to every run (measured on 2 cores).
    A local cluster this process started is shut down the normal way instead, or its processes would outlive it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_plan(cfg: config.RunConfig, as_json: bool) -> int:
    from .planning import ignored_text, listed
    from .run import plan_view

    view = plan_view(cfg)
    p, scorer, work = view.checked.plan, view.checked.scorer, view.work
    info = {
        "input": cfg.input, "output": cfg.output, **cfg.given_paths().record(),
        "shards": len(p.shards) + len(p.bad_files), "rows": p.total_rows,
        "bytes": p.total_bytes, "model": cfg.model, "columns_read": scorer.columns,
        "batch_format": scorer.batch_format,
        "schema": [f"{f.name}: {f.type}" for f in p.schema] if p.schema is not None else [],
        "problems": [{"shard_id": r.shard_id, "path": r.input_path, "reason": r.reason}
                     for r in view.checked.problems],
        "ignored_files": listed(p.ignored),
    }
    if work is not None:
        rec = work.reconciliation
        info.update(already_committed=len(rec.done), to_score=len(work.todo) + len(work.empty),
                    stale=len(rec.stale), orphans=len(rec.orphans), damaged=len(rec.damaged))
    if view.checked.table is not None:
        info["table"] = view.checked.table.describe()
    info["warnings"] = [f"symbolic link {loop} not followed: it loops" for loop in p.loops]
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        if info["logical_time"]:
            print(f"logical time {info['logical_time']}: --input {cfg.given_paths().input} -> {cfg.input}"
                  + (f", --output {cfg.given_paths().output} -> {cfg.output}" if cfg.output else ""))
        print(f"input {info['input']}: {info['shards']} shards, {info['rows']:,} rows, {info['bytes']:,} bytes")
        print(f"model {cfg.model}: reads {info['columns_read'] or 'all columns'} as {info['batch_format']}")
        print("schema: " + ", ".join(info["schema"]))
        if work is not None:
            redo = (f" ({info['stale']} of them scored before from another input or model)" if info["stale"] else "")
            gone = f", {info['orphans']} removed (their input is gone)" if info["orphans"] else ""
            print(f"output {cfg.output}: {info['already_committed']} committed, {info['to_score']} to score{redo}"
                  f"{gone}")
        if "table" in info:
            print(info["table"])
        for problem in info["problems"]:
            print(f"PROBLEM shard {problem['shard_id']} ({problem['path']}): {problem['reason']}")
        if p.ignored:
            print(ignored_text(info["ignored_files"]))
        for warning in info["warnings"]:
            print(f"warning: {warning}")
    return 1 if info["problems"] else 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from .sample_data import generate
    from .storage import StorageOptions, resolve

    loc = resolve(args.output, StorageOptions(args.s3_endpoint))
    try:
        paths = generate(loc, args.shards, args.rows_per_shard, args.seed, args.row_group_size)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from exc
    print(f"wrote {len(paths)} shards x {args.rows_per_shard:,} rows to {loc.uri}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = os.path.abspath(args.workdir)
    data = os.path.join(workdir, "input")
    if not os.path.isdir(data):
        cmd_sample_data(argparse.Namespace(output=data, shards=args.shards, rows_per_shard=args.rows_per_shard,
                                           seed=0, row_group_size=262144, s3_endpoint=None))
    out = _demo_table(workdir) if args.iceberg else os.path.join(workdir, "predictions")
    cfg = config.RunConfig(input=data, output=out, model="shardscore.models.dummy:load_model",
                           model_args={"payload_mb": 8}, strategy=args.strategy, key_columns=["vendor_id"],
                           progress_interval=2.0)
    code = cmd_run(cfg)
    if args.iceberg:
        _show_table()
    else:
        _show_folder(out)
    return code


def _demo_table(workdir: str) -> str:
    """The demo's table, in pyiceberg's catalog 'demo' as configured, else in an embedded one under workdir: set
    before pyiceberg is imported, which reads its variables then (pyiceberg.catalog's _ENV_CONFIG)."""
    if not os.environ.get("PYICEBERG_CATALOG__DEMO__URI"):
        os.environ["PYICEBERG_CATALOG__DEMO__URI"] = f"sqlite:///{workdir}/catalog.db"
        os.environ["PYICEBERG_CATALOG__DEMO__WAREHOUSE"] = f"file://{workdir}/warehouse"
    return "iceberg://demo/demo.predictions"


def _show_table() -> None:
    from pyiceberg.catalog import load_catalog

    table = load_catalog("demo").load_table("demo.predictions")
    snapshot = table.current_snapshot()
    print(f"\nPredictions are in the Iceberg table demo.predictions (catalog demo, {table.location()}), snapshot "
          f"{snapshot.snapshot_id if snapshot else None}. Its first rows, as pyiceberg's scan reads them:")
    print(table.scan(limit=5).to_arrow().to_pandas().to_string(index=False))
    print(f"\nRead it all with: python -c \"from pyiceberg.catalog import load_catalog; print(load_catalog('demo')"
          f".load_table('demo.predictions').scan().to_arrow().num_rows)\" (with the PYICEBERG_CATALOG__DEMO__* "
          f"variables: {', '.join(f'{k}={v}' for k, v in os.environ.items() if k.startswith('PYICEBERG_CATALOG__DEMO'))})")


def _show_folder(out: str) -> None:
    import pyarrow.parquet as pq

    first = sorted(p for p in os.listdir(out) if p.endswith(".parquet"))[0]
    print(f"\nPredictions are in {out}. The first rows of {first}:")
    print(pq.read_table(os.path.join(out, first)).slice(0, 5).to_pandas().to_string(index=False))
    print(f"\nRead them all with: python -c \"import pyarrow.dataset as ds; "
          f"print(ds.dataset('{out}').to_table().num_rows)\"")


def cmd_runs(args: argparse.Namespace) -> int:
    """`shardscore runs OUTPUT`: the output's run records, oldest first (runlog.py)."""
    from .checks import output_location
    from .output import open_output
    from .storage import StorageOptions

    try:
        records = runlog.since(open_output(output_location(args.output, StorageOptions(args.s3_endpoint))[0]).runs(),
                               args.since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print("\n".join(map(runlog.line, records)) if records else f"shardscore: no run has changed {args.output}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """`shardscore status OUTPUT`: the output's own files tell how its latest run goes or went (status.py)."""
    from . import status
    from .checks import output_location
    from .storage import StorageOptions

    loc = output_location(args.output, StorageOptions(args.s3_endpoint))[0]
    try:
        if args.watch:
            return status.watch(lambda: status.read_status(loc), sys.stdout, args.every).exit_code
        found = status.read_status(loc)
        logs = status.logs_text(loc, found) if args.logs else ""
    except OSError as exc:
        raise ConfigError(f"{args.output} cannot be read: {exc}") from None
    status.print_status(found, args.json, sys.stdout, logs)
    return found.exit_code


def cmd_package(args: argparse.Namespace) -> int:
    """`shardscore package FOLDER --to URI`: the folder as a content-addressed runtime_env zip (code_package.py)."""
    from . import code_package
    from .storage import StorageOptions, resolve

    package = code_package.build(args.folder)
    loc = resolve(args.to, StorageOptions(args.s3_endpoint))
    try:
        uri, uploaded = code_package.publish(package, loc)
    except OSError as exc:
        raise ConfigError(f"shardscore package: {args.to} cannot be written: {exc}") from None
    if args.json:
        print(json.dumps({"uri": uri, "sha256": package.digest, "files": package.files, "bytes": len(package.data),
                          "uploaded": uploaded}))
        return 0
    print(f"shardscore: {args.folder}: {package.files} files, {len(package.data):,} bytes zipped, "
          f"{'uploaded to' if uploaded else 'already at'} {uri}")
    if loc.is_local:
        # Ray uploads a local zip as it is (no top folder stripped: packaging.py, download_and_unpack_package).
        print(f"shardscore: copy it to an object store under the same name ({package.name}) and give that URI as "
              "the job's runtime_env working_dir")
    else:
        print("shardscore: ship it with the job's runtime_env, e.g. the chart's values:\n"
              f"rayJob:\n  runtimeEnvYAML: |\n    working_dir: {uri}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Like `python -m`, make modules in the working directory importable (a user's model module): Ray passes
    # the driver's sys.path on to workers of the same machine.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "plan":
            return cmd_plan(config.load(_flags(args), config_file=args.config), args.json)
        if args.command == "run":
            cfg = config.load(_flags(args), config_file=args.config)
            code = cmd_run(cfg)
            if cfg.ray_address or os.environ.get("RAY_ADDRESS"):
                _exit_now(code)
            return code
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "tick":
            return tick.main(args)
        if args.command == "runs":
            return cmd_runs(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "package":
            return cmd_package(args)
        return cmd_sample_data(args)
    except ShardscoreError as exc:
        print(f"shardscore: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
