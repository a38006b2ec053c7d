"""A run from options to manifest: check everything, plan, skip what is committed, score the rest on Ray.

The order is deliberate: options, input, output and model are all checked, and the output's lease is taken,
before Ray starts or any shard is scored, so a typo or a second writer costs seconds and never leaves partial
output behind. The output changes only once the run is about to change it: a run with nothing to do, or one that
stops before any shard is written, leaves a good output (its `_SUCCESS` and manifest) as it was.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any, TextIO

import pyarrow.fs as pafs

from . import __version__
from . import model as model_mod
from .commit import (OutputStore, Reconciliation, ShardResult, SourceLedger, file_problem, options_identity,
                     reconcile)
from .config import RunConfig
from .errors import ConfigError, OutputError, OutputUnwritable, RunAborted
from .lease import Lease, holder_gone, ray_job_id, this_process
from .planning import Plan, Shard, bundle, ignored_text, listed, partition_clashes, partition_keys, plan
from .progress import Progress
from .scoring import ScoringJob, commit_empty, failed, schema_difference
from .session import InFlightBound, Workers, cluster_slots, start_workers
from .storage import Location, StorageOptions, ancestry, delete, identity, resolve, temp_generation


@dataclass
class Prepared:
    """Everything known before scoring: the model, the plan and what the output already holds."""

    cfg: RunConfig
    input: Location
    store: OutputStore | None
    scorer: model_mod.Scorer
    plan: Plan
    reconciliation: Reconciliation | None
    prefailed: list[ShardResult] = field(default_factory=list)
    model_bytes: bytes = b""  # the pickled scorer (runs only)
    lease: Lease | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # where the time before scoring went

    @property
    def todo(self) -> list[Shard]:
        """Shards to score on workers (zero-row shards are committed by the driver, bad ones failed already)."""
        bad = {r.shard_id for r in self.prefailed}
        shards = self.reconciliation.todo if self.reconciliation else self.plan.shards
        return [s for s in shards if s.shard_id not in bad and s.num_rows > 0]

    @property
    def empty(self) -> list[Shard]:
        shards = self.reconciliation.todo if self.reconciliation else self.plan.shards
        return [s for s in shards if s.num_rows == 0 and s.shard_id not in self.plan.schema_mismatches]


def model_columns(scorer: model_mod.Scorer, key_columns: list[str], the_plan: Plan) -> tuple[str, ...]:
    """The columns every batch of every shard reaches the model with, in this order whatever each file's own: the
    model's declared `columns` then the key columns, or else the plan's reference schema (the most common file's
    columns and order; a file's columns beyond it are not read). A model that takes columns by position (to_numpy(),
    arrays for XGBoost, tensors) so sees the same features everywhere."""
    if scorer.columns is not None:
        return tuple(dict.fromkeys([*scorer.columns, *key_columns]))
    return tuple(the_plan.schema.names) if the_plan.schema is not None else ()


def _refuse_overlap(inp: Location, out: Location) -> None:
    """Output and input must not be one place or inside each other, however they are spelled or mounted (storage.
    Location.contains): predictions written into the input would replace its files or be read back as input by the
    next run."""
    inside, holds = inp.contains(out), out.contains(inp)
    if inside or holds:
        how = "is" if inside and holds else ("lies inside" if inside else "contains")
        same = (f" (both are {out.canonical[1]})" if inp.canonical == out.canonical
                else " (one directory under two paths: a bind mount, or one volume mounted twice)")
        raise ConfigError(f"--output {out.uri} {how} the input {inp.uri}" + (same if how == "is" else "")
                          + ": predictions would replace or mix with the data. Choose an output outside the input.")


def _refuse_inputs_under_output(plan_: Plan, inp: Location, out: Location) -> None:
    """No planned input file may lie under the output, also one reached through a link inside the input (`in/x ->
    ../out/`): the run would score its own predictions, or rewrite the file it reads. Local disks only (object
    stores have no links, and the roots were compared already)."""
    if not (inp.is_local and out.is_local):
        return
    root = identity(out.path)
    if root is None:
        return  # nothing lies under an output that does not exist yet
    verdicts: dict[str, bool] = {}
    for path in [*(s.path for s in plan_.shards), *(b.path for b in plan_.bad_files)]:
        folder = os.path.dirname(os.path.realpath(path))
        if folder not in verdicts:
            verdicts[folder] = root in ancestry(folder)
        if verdicts[folder]:
            raise ConfigError(f"input file {inp.display(path)} lies under the --output {out.uri} (it is "
                              f"{os.path.realpath(path)}): the run would read what it writes. Remove the link, "
                              "or choose an output outside everything the input reaches.")


def prepare(cfg: RunConfig, need_output: bool = True, for_run: bool = False) -> Prepared:
    """Validate options, reach the input and output, load the model, plan the shards, reconcile with output.

    `for_run` also pickles the model (it must reach the workers) and takes the output's lease; `plan` does
    neither and writes nothing.
    """
    cfg.validate(need_output=need_output)
    clock = _Stopwatch()
    storage = StorageOptions(cfg.s3_endpoint)
    in_loc = resolve(cfg.input, storage)
    out_loc = resolve(cfg.output, storage) if cfg.output else None
    if out_loc is not None:
        _refuse_overlap(in_loc, out_loc)
    scorer = model_mod.load(model_mod.ModelSpec(cfg.model, cfg.model_args))
    # Pickled now, so that a model that cannot reach the workers is named before Ray starts; a --pool run pickles
    # it only when the pool does not hold it already (a warm pool's run sends nothing).
    model_bytes = scorer.pickled() if for_run and not cfg.pool else b""
    clock.lap("model")
    required = None if scorer.columns is None else list(dict.fromkeys([*scorer.columns, *cfg.key_columns]))
    the_plan = plan(in_loc, cfg.max_rows_per_shard, columns=required)
    if out_loc is not None:
        _refuse_inputs_under_output(the_plan, in_loc, out_loc)
    if for_run and the_plan.ignored:
        print(f"shardscore: warning: {ignored_text(listed(the_plan.ignored))}", file=sys.stderr, flush=True)
    clock.lap("plan")
    if the_plan.schema is not None:  # columns absent from the dataset as a whole: an option error, not N shard errors
        names = the_plan.schema.names
        missing_keys = [c for c in cfg.key_columns if c not in names]
        if missing_keys:
            raise ConfigError(f"--key-columns: {missing_keys} not in the input's columns {names}")
        _refuse_partition_keys(cfg.key_columns, the_plan)
        missing_model = [c for c in scorer.columns or [] if c not in names]
        if missing_model:
            raise ConfigError(f"--model {cfg.model} reads columns {missing_model} that the input does not have "
                              f"(its columns: {names})")
    prefailed = [failed(b.shard_id, in_loc.display(b.path), b.reason) for b in the_plan.bad_files]
    prefailed += [failed(s.shard_id, in_loc.display(s.path), the_plan.schema_mismatches[s.shard_id])
                  for s in the_plan.shards if s.shard_id in the_plan.schema_mismatches]
    store = reconciliation = lease = None
    if out_loc is not None:
        store = OutputStore(out_loc)
        if for_run:
            lease = _take_lease(store, cfg)
            store.generation = lease.holder.generation
        try:
            committed = store.committed()
            sources = model_mod.current_sources({n for r in committed.values() for n in r.loaded_sources})
            reconciliation = reconcile(the_plan.shards, committed, scorer.identity,
                                       options_identity(cfg.key_columns), cfg.overwrite, store.listing(), sources)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        clock.lap("output")
    return Prepared(cfg, in_loc, store, scorer, the_plan, reconciliation, prefailed, model_bytes, lease, clock.laps)


def _refuse_partition_keys(key_columns: list[str], the_plan: Plan) -> None:
    """A key column named like a partition key of the input's folders would make the output unreadable or lie
    (planning.partition_clashes): refused before anything runs."""
    clashes = partition_clashes(key_columns, partition_keys(s.relpath for s in the_plan.shards))
    if clashes:
        column, folder = clashes[0]
        raise ConfigError(f"--key-columns: {column!r} is named like the partition key of the input's folder {folder}, "
                          "which the output keeps: readers would take the column for the partition key (pyarrow and "
                          "pandas refuse to read such an output, DuckDB returns the folder's value in its place). "
                          "Leave it out of --key-columns: readers get it from the folder names")


class _Stopwatch:
    """Named laps of wall time, for the manifest's breakdown of where a run's fixed time goes."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 3)
        self._last = now


def _take_lease(store: OutputStore, cfg: RunConfig) -> Lease:
    try:
        info = store.loc.fs.get_file_info(store.loc.path)
    except OSError as exc:
        raise OutputError(f"output {store.loc.uri}: cannot be reached ({exc})") from exc
    if info.type == pafs.FileType.File:
        raise OutputError(f"output {store.loc.uri}: cannot write there (it is a file, not a directory)")
    try:
        lease = Lease.acquire(store.loc, this_process(cfg.lease_ttl, ray_job_id()))
    except OSError as exc:
        raise OutputError(f"output {store.loc.uri}: cannot write there ({exc})") from exc
    if lease.took_over:
        print(f"shardscore: {lease.took_over}", file=sys.stderr, flush=True)
    lease.start_heartbeat()
    return lease


@cache
def versions() -> dict[str, str]:
    """Versions of what made the output (read from package metadata: importing pandas would cost seconds)."""
    found = {"shardscore": __version__, "python": platform.python_version()}
    for name in ("ray", "pyarrow", "pandas", "numpy", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def execute(prep: Prepared, workers: Workers | None = None, progress_stream: TextIO | None = None) -> dict[str, Any]:
    """Score every shard still to do, then write the manifest (and _SUCCESS when the run succeeded).

    `workers` were started before `prepare` when the run joins an existing cluster; a run that starts its own
    local Ray starts them here, after every check has passed.
    """
    assert prep.lease is not None, "prepare(for_run=True) takes the lease"
    try:
        return _execute(prep, workers, progress_stream)
    finally:
        prep.lease.release()


def _execute(prep: Prepared, workers: Workers | None, progress_stream: TextIO | None) -> dict[str, Any]:
    cfg, store, rec, lease = prep.cfg, prep.store, prep.reconciliation, prep.lease
    assert store is not None and rec is not None and lease is not None
    started = time.time()
    success_before = store.succeeded_before()
    todo, empty = prep.todo, prep.empty
    results: list[ShardResult] = list(prep.prefailed)
    timings: dict[str, float] = {"ray_init": workers.ray_init_seconds if workers else 0.0, "scoring": 0.0}
    if not todo and not empty and not rec.changes:
        # Nothing to score: a good output stays exactly as it was; an unfinished one gets its manifest.
        manifest = _manifest(prep, results, started, timings, status="")
        manifest["status"] = _final_status(prep, manifest)
        if not (success_before and manifest["status"] == "succeeded" and _manifest_matches(store, manifest)):
            _finish(prep, manifest)
        return manifest

    import ray

    from . import ray_executor as rx

    if workers is None:
        workers = start_workers(cfg)
        timings["ray_init"] = workers.ray_init_seconds
    control = workers.control
    actors = workers.actors
    if rec.changes:
        lease.check()
        store.withdraw_success()
        for orphan in rec.orphans:
            store.forget(orphan)
        for _, record, _ in [*rec.stale, *rec.damaged]:
            store.forget(record)
    job = ScoringJob(input_uri=cfg.input, output_uri=cfg.output, storage=StorageOptions(cfg.s3_endpoint),
                     model_identity=prep.scorer.identity, output_options=options_identity(cfg.key_columns),
                     key_columns=tuple(cfg.key_columns), batch_size=cfg.batch_size,
                     casts=tuple(sorted(prep.plan.casts.items())), run_id=lease.holder.run_id,
                     overlap=cfg.overlap == "on" or (cfg.overlap == "auto" and prep.scorer.has_device),
                     partition_keys=tuple(partition_keys(s.relpath for s in prep.plan.shards).items()),
                     columns=model_columns(prep.scorer, cfg.key_columns, prep.plan),
                     lease_generation=lease.holder.generation)
    lease.check()
    store.start({"model": cfg.model, "model_args": cfg.model_args, "model_identity": job.model_identity,
                 "key_columns": cfg.key_columns, "input": cfg.input, "versions": versions(), "started_at": started,
                 "run_id": job.run_id, "lease_generation": lease.holder.generation})
    results += [commit_empty(s, job, prep.input.display(s.path)) for s in empty]

    progress = Progress(len(todo) + len(results), sum(s.num_rows for s in todo), cfg.progress_interval,
                        progress_stream)
    for result in results:
        progress.record(result)
    fatal: list[str] = []
    feed = rx.Feed(None, job, control, lambda r: True, attempts=cfg.max_retries + 1,
                   expected_schema=next((r.prediction_schema for r in rec.done if r.prediction_schema), ""))
    fixed_by = next((r.shard_id for r in rec.done if r.prediction_schema), "")
    ledger = SourceLedger(rec.done)

    def on_result(result: ShardResult | None) -> bool:
        nonlocal fixed_by
        if lease.lost.is_set():
            control.stop("another run took over the output's lease", 0)
        if result is None:
            progress.tick()
            return True
        if result.status == "fatal":
            fatal.append(result.reason)
            return False
        if result.status == "committed" and (conflict := ledger.conflict(result)):
            store.forget(result)  # never keep predictions of other code beside the others under one manifest
            result = failed(result.shard_id, result.input_path, conflict, result.worker)
        if result.status == "committed" and result.output:
            if not feed.expected_schema:
                feed.expected_schema, fixed_by = result.prediction_schema, result.shard_id
            elif result.prediction_schema != feed.expected_schema:
                lease.check()
                store.forget(result)  # never leave a shard that makes the output unreadable as one dataset
                result = failed(result.shard_id, result.input_path, "the model's predictions have another schema "
                                f"than those of shard {fixed_by}: " + schema_difference(
                                    feed.expected_schema, result.prediction_schema)
                                + ". A model must return the same columns and types for every shard", result.worker)
        results.append(result)
        progress.record(result)
        return True

    feed.on_result = on_result
    feed.on_submit = lambda shards: progress.handed_out((s.shard_id, s.num_rows) for s in shards)
    score_started = time.monotonic()
    score_started_wall = time.time()
    if todo:
        placement, slots = workers.placement, workers.slots
        if actors is None:
            bundles = bundle(todo, min_bundles=4 * slots, max_shards=cfg.max_shards_per_task)
            feed.model_ref = ray.put(prep.model_bytes)  # once: every task gets this reference, never the model
            timings["put"] = time.monotonic() - score_started
            rx.run_tasks(bundles, feed, placement,
                         InFlightBound(cfg.max_in_flight, slots, lambda: cluster_slots(placement)))
        else:
            bundles = bundle(todo, min_bundles=4 * len(actors), max_shards=cfg.max_shards_per_task)
            warm = cfg.pool is not None and rx.warm(actors, job.model_identity)
            feed.model_ref = None if warm else ray.put(prep.model_bytes or prep.scorer.pickled())
            timings["put"] = time.monotonic() - score_started
            try:
                rx.run_actors(bundles, actors, feed, cfg.max_retries)
            finally:
                if not cfg.pool:
                    for actor in actors:
                        ray.kill(actor)
        feed.model_ref = None
    progress.close()
    lease.check()  # a run resumed after another took over must not report or write anything of its own
    timings["scoring"] = time.monotonic() - score_started
    worked = [r for r in results if r.status == "committed" and r.output and r.attempt_started_at]
    if worked:
        first = min(worked, key=lambda r: r.attempt_started_at)
        timings["first_shard_start"] = first.attempt_started_at - score_started_wall
        timings["first_batch"] = first.first_batch_seconds
    finishing = time.monotonic()
    committed_now = any(r.status == "committed" for r in results)
    changed = rec.changes or committed_now or (success_before and not store.succeeded_before())
    if fatal or control.stopping:
        reason = fatal[0] if fatal else control.reason
        if changed:
            manifest = _manifest(prep, results, started, timings, status="aborted")
            manifest["error"] = reason
            _finish(prep, manifest)
        done = sum(r.status == "committed" for r in results)
        raise RunAborted(reason + (f" ({done} shard(s) committed by this run stay committed; rerun to finish)"
                                   if done else " (nothing was changed)"))
    manifest = _manifest(prep, results, started, timings, status="")
    manifest["status"] = _final_status(prep, manifest)
    _remove_temporaries(store.loc, lease)
    manifest["seconds"]["breakdown"]["verify_and_manifest"] = round(time.monotonic() - finishing, 3)
    _finish(prep, manifest)
    return manifest


def _final_status(prep: Prepared, manifest: dict[str, Any]) -> str:
    """succeeded only when few enough shards failed and the output holds exactly what the manifest says."""
    assert prep.store is not None
    if manifest["totals"]["failed"] > prep.cfg.max_failed_shards:
        return "failed"
    problems = _verify(prep.store, manifest)
    if problems:
        manifest["verification"] = problems
        return "failed"
    return "succeeded"


def _verify(store: OutputStore, manifest: dict[str, Any]) -> list[str]:
    """What makes the output's files differ from the manifest: one listing, no reads."""
    listing = store.listing()
    committed = [ShardResult.from_dict(s) for s in manifest["shards"] if s["status"] == "committed"]
    problems = [f"shard {r.shard_id}: {why}" for r in committed if (why := file_problem(r, listing))]
    expected = {r.output for r in committed if r.output}
    problems += [f"file {rel} is in the output but in no shard of the manifest" for rel in sorted(listing)
                 if rel not in expected]
    schemas = {r.prediction_schema for r in committed if r.prediction_schema}
    if len(schemas) > 1:
        problems.append("the committed shards have different prediction schemas: " + " | ".join(sorted(schemas)))
    return problems


def _manifest_matches(store: OutputStore, manifest: dict[str, Any]) -> bool:
    from .storage import read_json

    previous = read_json(store.loc, store.loc.join("_manifest.json")) or {}
    return ({s["shard_id"]: s.get("output_mtime_ns") for s in previous.get("shards", [])}
            == {s["shard_id"]: s.get("output_mtime_ns") for s in manifest["shards"]})


def _finish(prep: Prepared, manifest: dict[str, Any]) -> None:
    assert prep.store is not None and prep.lease is not None
    prep.lease.check()  # the manifest and _SUCCESS are written only while this run holds the output
    if manifest["status"] == "failed" and manifest.get("verification"):
        manifest["failures"] += [{"shard_id": "", "path": prep.cfg.output, "reason": p}
                                 for p in manifest["verification"]]
    try:
        prep.store.finish(manifest, success=manifest["status"] == "succeeded")
    except OSError as exc:
        manifest.update(status="failed", error=f"the manifest could not be written: {type(exc).__name__}: {exc}")
        raise OutputUnwritable(unwritable_message(prep.cfg.output, exc), manifest) from exc


def unwritable_message(output: str, exc: OSError) -> str:
    return (f"the output {output} stopped taking writes during the run ({type(exc).__name__}: {exc}): made "
            "read-only, or its disk full? Shards committed by this run stay committed; make it writable and rerun "
            "to finish")


def _remove_temporaries(loc: Location, lease: Lease) -> None:
    """Temporary files of writers killed mid-write (hidden names; readers never saw them): this run's own, untagged
    ones, and those of older lease generations whose holder is gone (`lease.holder_gone`). A newer generation's are
    another run's files in flight: never touched, also when this run's check passed just before that run took over."""
    lease.check()
    mine, gone = lease.holder.generation, {}
    selector = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    for entry in loc.fs.get_file_info(selector):
        generation = temp_generation(entry.base_name)
        if generation is None or generation > mine:
            continue
        if 0 < generation < mine and generation not in gone:
            gone[generation] = holder_gone(loc, generation, lease.holder.host)
        if generation in (0, mine) or gone[generation]:
            delete(loc, entry.path)  # quietly: on an output that stopped taking writes the next run removes it


def _manifest(prep: Prepared, results: list[ShardResult], started: float, timings: dict[str, float],
              status: str) -> dict[str, Any]:
    cfg, rec = prep.cfg, prep.reconciliation
    assert rec is not None
    shards = sorted([*rec.done, *results], key=lambda r: r.shard_id)
    committed = [r for r in shards if r.status == "committed"]
    failures = [r for r in shards if r.status != "committed"]
    new = [r for r in results if r.status == "committed"]
    rows_new = sum(r.rows_in for r in new)
    scoring = timings["scoring"]
    return {
        "status": status,
        "shardscore_version": __version__,
        "input": cfg.input,
        "output": cfg.output,
        "model": {"spec": cfg.model, "args": cfg.model_args, "identity": prep.scorer.identity,
                  "batch_format": prep.scorer.batch_format, "columns": prep.scorer.columns,
                  "sources": len(model_mod.model_sources(cfg.model.partition(":")[0]))},
        "prediction_schema": next((r.prediction_schema for r in committed if r.prediction_schema), ""),
        "options": {"strategy": cfg.strategy, "num_cpus_per_worker": cfg.num_cpus_per_worker,
                    "num_gpus_per_worker": cfg.num_gpus_per_worker, "device": cfg.device,
                    "batch_size": cfg.batch_size, "overlap": cfg.overlap, "max_rows_per_shard": cfg.max_rows_per_shard,
                    "key_columns": cfg.key_columns, "max_failed_shards": cfg.max_failed_shards},
        "versions": versions(),
        "run_id": prep.lease.holder.run_id if prep.lease else "",
        "started_at": started,
        "finished_at": time.time(),
        "seconds": {"total": round(time.time() - started, 3), "ray_init": round(timings["ray_init"], 3),
                    "scoring": round(scoring, 3),
                    "breakdown": {**prep.seconds, **{k: round(v, 3) for k, v in timings.items()}}},
        "totals": {
            "shards": len(shards), "committed": len(committed), "failed": len(failures),
            "skipped_already_committed": len(rec.done), "recomputed_stale": len(rec.stale),
            "rescored_damaged": len(rec.damaged), "removed_orphans": len(rec.orphans),
            "zero_row_shards": sum(1 for r in committed if not r.output),
            "rows_in": sum(r.rows_in for r in committed), "rows_out": sum(r.rows_out for r in committed),
            "rows_scored_this_run": rows_new,
            "rows_per_second_this_run": round(rows_new / scoring, 1) if scoring > 0 else None,
        },
        "input_fingerprints": {s.relpath: s.fingerprint for s in prep.plan.shards},
        "ignored_files": listed(prep.plan.ignored),
        "warnings": [f"symbolic link {loop} not followed: it loops" for loop in prep.plan.loops],
        "shards": [r.to_dict() for r in shards],
        "failures": [{"shard_id": r.shard_id, "path": r.input_path, "reason": r.reason} for r in failures],
    }
