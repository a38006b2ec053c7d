"""A run from options to manifest: check everything, plan, skip what is committed, score the rest on Ray.

The order is deliberate: options, input, output and model are all checked before Ray starts or any shard is
scored, so a typo costs seconds and never leaves partial output behind.
"""

from __future__ import annotations

import platform
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any, TextIO

import pyarrow.fs as pafs

from . import __version__
from . import model as model_mod
from .commit import OutputStore, Reconciliation, ShardResult, options_identity, reconcile
from .config import RunConfig
from .errors import InputError, OutputError, RunAborted
from .planning import Plan, Shard, bundle, plan
from .progress import Progress
from .scoring import ScoringJob, failed
from .storage import Location, StorageOptions, delete, resolve, write_json


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

    @property
    def todo(self) -> list[Shard]:
        bad = {r.shard_id for r in self.prefailed}
        shards = self.reconciliation.todo if self.reconciliation else self.plan.shards
        return [s for s in shards if s.shard_id not in bad]


def _check_writable(loc: Location) -> None:
    probe = loc.join("_shardscore", f".probe-{uuid.uuid4().hex}")
    try:
        write_json(loc, probe, {"probe": True})
        delete(loc, probe)
    except OSError as exc:
        raise OutputError(f"output {loc.uri}: cannot write there ({exc})") from exc


def prepare(cfg: RunConfig, need_output: bool = True) -> Prepared:
    """Validate options, reach the input and output, load the model, plan the shards, reconcile with output."""
    cfg.validate(need_output=need_output)
    storage = StorageOptions(cfg.s3_endpoint)
    in_loc = resolve(cfg.input, storage)
    scorer = model_mod.load(model_mod.ModelSpec(cfg.model, cfg.model_args))
    required = None if scorer.columns is None else list(dict.fromkeys([*scorer.columns, *cfg.key_columns]))
    the_plan = plan(in_loc, cfg.max_rows_per_shard, columns=required)
    if the_plan.schema is not None:  # columns absent from the dataset as a whole: an option error, not N shard errors
        names = the_plan.schema.names
        missing_keys = [c for c in cfg.key_columns if c not in names]
        if missing_keys:
            raise InputError(f"--key-columns: {missing_keys} not in the input's columns {names}")
        missing_model = [c for c in scorer.columns or [] if c not in names]
        if missing_model:
            raise InputError(f"--model {cfg.model} reads columns {missing_model} that the input does not have "
                             f"(its columns: {names})")
    prefailed = [failed(b.shard_id, in_loc.display(b.path), b.reason) for b in the_plan.bad_files]
    prefailed += [failed(s.shard_id, in_loc.display(s.path), the_plan.schema_mismatches[s.shard_id])
                  for s in the_plan.shards if s.shard_id in the_plan.schema_mismatches]
    prefailed += [failed(s.shard_id, in_loc.display(s.path), "empty shard: it has no rows to score")
                  for s in the_plan.shards if s.num_rows == 0 and s.shard_id not in the_plan.schema_mismatches]
    store = reconciliation = None
    if need_output:
        store = OutputStore(resolve(cfg.output, storage))
        _check_writable(store.loc)
        reconciliation = reconcile(the_plan.shards, store.committed(), scorer.identity,
                                   options_identity(cfg.key_columns), cfg.overwrite)
    return Prepared(cfg, in_loc, store, scorer, the_plan, reconciliation, prefailed)


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


def connect(address: str | None) -> float:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one. Returns the seconds it took."""
    import ray

    started = time.monotonic()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=None if address else False, log_to_driver=True)
    return time.monotonic() - started



def execute(prep: Prepared, progress_stream: TextIO | None = None) -> dict[str, Any]:
    """Score every shard still to do, then write the manifest (and _SUCCESS when the run succeeded)."""
    import ray

    from . import ray_executor as rx

    cfg, store, rec = prep.cfg, prep.store, prep.reconciliation
    assert store is not None and rec is not None
    started = time.time()
    ray_init_seconds = connect(cfg.ray_address)
    for orphan in rec.orphans:
        store.forget(orphan)
    for shard, _, _ in rec.stale:
        store.uncommit(shard.shard_id)
    identity = prep.scorer.identity
    run_record = {"model": cfg.model, "model_args": cfg.model_args, "model_identity": identity,
                  "key_columns": cfg.key_columns, "input": cfg.input, "versions": versions(),
                  "started_at": started}
    store.start(run_record)

    todo = prep.todo
    results: list[ShardResult] = list(prep.prefailed)
    progress = Progress(len(todo) + len(prep.prefailed), sum(s.num_rows for s in todo), cfg.progress_interval,
                        progress_stream)
    for result in prep.prefailed:
        progress.record(result)
    fatal: list[str] = []

    def on_result(result: ShardResult | None) -> bool:
        if result is None:
            progress.tick()
            return True
        if result.status == "fatal":
            fatal.append(result.reason)
            return False
        results.append(result)
        progress.record(result)
        return True

    job = ScoringJob(input_uri=cfg.input, output_uri=cfg.output, storage=StorageOptions(cfg.s3_endpoint),
                     model_identity=identity, output_options=options_identity(cfg.key_columns),
                     key_columns=tuple(cfg.key_columns), batch_size=cfg.batch_size)
    placement = rx.Placement(cfg.num_cpus_per_worker, cfg.num_gpus_per_worker, cfg.memory_per_worker,
                             cfg.device, cfg.max_retries)
    score_started = time.monotonic()
    if todo:
        slots = rx.cluster_slots(placement)
        if cfg.strategy == "tasks":
            bundles = bundle(todo, min_bundles=4 * slots, max_shards=cfg.max_shards_per_task)
            model_ref = ray.put(prep.scorer)  # once: every task gets this reference, never the model
            rx.run_tasks(bundles, model_ref, job, placement, cfg.max_in_flight or 2 * slots, on_result)
        else:
            actors = rx.start_actors(placement, cfg.num_actors or slots, cfg.pool, cfg.pool_idle_timeout)
            bundles = bundle(todo, min_bundles=4 * len(actors), max_shards=cfg.max_shards_per_task)
            model_ref = None if cfg.pool and rx.warm(actors, identity) else ray.put(prep.scorer)
            try:
                rx.run_actors(bundles, actors, model_ref, job, on_result)
            finally:
                if not cfg.pool:
                    for actor in actors:
                        ray.kill(actor)
        del model_ref
    progress.close()
    scoring_seconds = time.monotonic() - score_started
    if fatal:
        manifest = _manifest(prep, results, started, ray_init_seconds, scoring_seconds, status="aborted")
        manifest["error"] = fatal[0]
        store.finish(manifest, success=False)
        raise RunAborted(fatal[0])
    failures = [r for r in results if r.status != "committed"]
    ok = len(failures) <= cfg.max_failed_shards
    manifest = _manifest(prep, results, started, ray_init_seconds, scoring_seconds,
                         status="succeeded" if ok else "failed")
    if ok:
        _remove_temporaries(store.loc)
    store.finish(manifest, success=ok)
    return manifest


def _remove_temporaries(loc: Location) -> None:
    """Temporary files of writers killed mid-write (hidden names; readers never saw them)."""
    if not loc.is_local:
        return
    for entry in loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)):
        if entry.base_name.startswith(".tmp-"):
            delete(loc, entry.path)


def _manifest(prep: Prepared, results: list[ShardResult], started: float, ray_init_seconds: float,
              scoring_seconds: float, status: str) -> dict[str, Any]:
    cfg, rec = prep.cfg, prep.reconciliation
    assert rec is not None
    shards = sorted([*rec.done, *results], key=lambda r: r.shard_id)
    committed = [r for r in shards if r.status == "committed"]
    failures = [r for r in shards if r.status != "committed"]
    new = [r for r in results if r.status == "committed"]
    rows_new = sum(r.rows_in for r in new)
    return {
        "status": status,
        "shardscore_version": __version__,
        "input": cfg.input,
        "output": cfg.output,
        "model": {"spec": cfg.model, "args": cfg.model_args, "identity": prep.scorer.identity,
                  "batch_format": prep.scorer.batch_format, "columns": prep.scorer.columns},
        "options": {"strategy": cfg.strategy, "num_cpus_per_worker": cfg.num_cpus_per_worker,
                    "num_gpus_per_worker": cfg.num_gpus_per_worker, "device": cfg.device,
                    "batch_size": cfg.batch_size, "max_rows_per_shard": cfg.max_rows_per_shard,
                    "key_columns": cfg.key_columns, "max_failed_shards": cfg.max_failed_shards},
        "versions": versions(),
        "started_at": started,
        "finished_at": time.time(),
        "seconds": {"total": round(time.time() - started, 3), "ray_init": round(ray_init_seconds, 3),
                    "scoring": round(scoring_seconds, 3)},
        "totals": {
            "shards": len(shards), "committed": len(committed), "failed": len(failures),
            "skipped_already_committed": len(rec.done), "recomputed_stale": len(rec.stale),
            "removed_orphans": len(rec.orphans),
            "rows_in": sum(r.rows_in for r in committed), "rows_out": sum(r.rows_out for r in committed),
            "rows_scored_this_run": rows_new,
            "rows_per_second_this_run": round(rows_new / scoring_seconds, 1) if scoring_seconds > 0 else None,
        },
        "input_fingerprints": {s.relpath: s.fingerprint for s in prep.plan.shards},
        "shards": [r.to_dict() for r in shards],
        "failures": [{"shard_id": r.shard_id, "path": r.input_path, "reason": r.reason} for r in failures],
    }
