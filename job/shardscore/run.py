"""A run from options to manifest, in named phases: prepare, start, dispatch, collect, finish.

The order is deliberate: options, input, output and model are all checked, and the output's lease is taken,
before Ray starts or any shard is scored, so a typo or a second writer costs seconds and never leaves partial
output behind. The output changes only once the run is about to change it: a run with nothing to do, or one that
stops before any shard is written, leaves a good output (its published state and manifest) as it was.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, TextIO

import pyarrow.fs as pafs

from . import latest, manifest, runlog, table_fit
from . import model as model_mod
from .checks import Checked, Stopwatch, check
from .commit import Reconciliation, ShardResult, SourceLedger, failed, options_identity
from .config import RunConfig
from .errors import OutputError, OutputUnwritable, RunAborted
from .lease import Lease, LeaseHeld, ray_job_id, this_process
from .logs import LOGS_DIR, BoundedLog, write_logs
from .output import Output, open_output
from .planning import Plan, Shard, bundle, ignored_text, listed, partition_keys
from .progress import Progress
from .schema_rule import SchemaGate
from .scoring import ScoringJob, commit_empty
from .status import ProgressBeacon
from .storage import Location, StorageOptions, resolve

if TYPE_CHECKING:
    from .ray_session import Workers
    from .ray_worker import BundleReport


@dataclass(frozen=True)
class Work:
    """What a run must still do, given what the output holds."""

    reconciliation: Reconciliation
    todo: list[Shard]  # for workers
    empty: list[Shard]  # zero-row shards, committed by the driver

    @classmethod
    def of(cls, checked: Checked, rec: Reconciliation) -> "Work":
        bad = {r.shard_id for r in checked.problems}
        todo = [s for s in rec.todo if s.shard_id not in bad and s.num_rows > 0]
        empty = [s for s in rec.todo if s.num_rows == 0 and s.shard_id not in checked.plan.schema_mismatches]
        return cls(rec, todo, empty)

    @property
    def nothing(self) -> bool:
        return not (self.todo or self.empty or self.reconciliation.changes)


@dataclass(frozen=True)
class PlanView:
    """`shardscore plan`'s answer: the checked input and model, and with an output, what a run would do there."""

    checked: Checked
    work: Work | None


def model_columns(scorer: model_mod.Scorer, key_columns: list[str], the_plan: Plan) -> tuple[str, ...]:
    """The columns every batch of every shard reaches the model with, in this order whatever each file's own: the
    model's declared `columns` then the key columns, or else the plan's reference schema (the most common file's
    columns and order; a file's columns beyond it are not read). A model that takes columns by position (to_numpy(),
    arrays for XGBoost, tensors) so sees the same features everywhere."""
    if scorer.columns is not None:
        return tuple(dict.fromkeys([*scorer.columns, *key_columns]))
    return tuple(the_plan.schema.names) if the_plan.schema is not None else ()


def scoring_job(checked: Checked, run_id: str = "", generation: int = 0) -> ScoringJob:
    """What every shard of the run shares; the run id and lease generation once the lease is taken."""
    cfg = checked.cfg
    assert checked.output is not None
    return ScoringJob(input_uri=checked.input.uri, output_uri=checked.output.uri, storage=StorageOptions(cfg.s3_endpoint),
                      model_identity=checked.scorer.identity, output_options=options_identity(cfg.key_columns),
                      key_columns=tuple(cfg.key_columns), batch_size=cfg.batch_size,
                      casts=tuple(sorted(checked.plan.casts.items())), run_id=run_id,
                      overlap=cfg.overlap == "on" or (cfg.overlap == "auto" and checked.scorer.has_device),
                      partition_keys=tuple(partition_keys(s.relpath for s in checked.plan.shards).items()),
                      columns=model_columns(checked.scorer, cfg.key_columns, checked.plan),
                      lease_generation=generation, max_bad_rows=cfg.max_bad_rows,
                      batch_timeout=cfg.batch_timeout or 0, output_kind=checked.output_kind)


def plan_view(cfg: RunConfig) -> PlanView:
    """What `plan` shows: no lease is taken and nothing is written."""
    checked = check(cfg, need_output=bool(cfg.output))
    if checked.output is None:
        return PlanView(checked, None)
    return PlanView(checked, Work.of(checked, _reconcile(checked, _open(checked))))


def _open(checked: Checked, generation: int = 0) -> Output:
    assert checked.output is not None
    return open_output(checked.output, generation, checked.output_kind, checked.table)


def _reconcile(checked: Checked, output: Output) -> Reconciliation:
    committed = output.committed()
    sources = model_mod.current_sources({n for r in committed.values() for n in r.loaded_sources})
    return output.reconcile(checked.plan.shards, committed, checked.scorer.identity,
                            options_identity(checked.cfg.key_columns), checked.cfg.overwrite, sources,
                            incremental=checked.cfg.incremental)


class RunWatcher(Protocol):
    """What follows a run from outside it (k8s.rayjob_report on Kubernetes): told when scoring starts and of each
    failed shard, it reads the progress from `snapshot` when it likes. It must return at once: the run never waits
    on it."""

    def started(self, run_id: str, output: str, snapshot: Callable[[], dict[str, Any]]) -> None: ...

    def shard_failed(self, shard_id: str, path: str, reason: str) -> None: ...


class Run:
    """One `shardscore run`. `prepare` checks everything and takes the output's lease; `execute` runs the rest
    (start, dispatch with `collect` as each bundle reports, finish) and always releases the lease.

    `workers` were started before `prepare` when the run joins an existing cluster; a run that starts its own
    local Ray starts them in `start`, after every check has passed.
    """

    def __init__(self, cfg: RunConfig, workers: Workers | None = None, progress_stream: TextIO | None = None,
                 driver_log: BoundedLog | None = None, watcher: RunWatcher | None = None):
        self.cfg, self.workers, self.progress_stream, self.driver_log = cfg, workers, progress_stream, driver_log
        self.watcher = watcher
        self.started = 0.0  # when execute began: the manifest's started_at and total seconds
        self.timings: dict[str, float] = {"ray_init": workers.ray_init_seconds if workers else 0.0, "scoring": 0.0}
        self.results: list[ShardResult] = []
        self.beacon: ProgressBeacon | None = None  # writes the progress into the output while the run scores

    # -- prepare -----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check, pickle the model (it must reach the workers), take the output's lease, reconcile with it."""
        self.checked = checked = check(self.cfg)
        self.results = list(checked.problems)
        clock = Stopwatch()
        # Pickled now, so that a model that cannot reach the workers is named before Ray starts; a --pool run
        # pickles it only when the pool does not hold it already (a warm pool's run sends nothing).
        # Also pickled before the table check below calls the model: what reaches the workers is the model as loaded.
        fit_check = table_fit.needed(checked)
        self.model_bytes = b"" if self.cfg.pool and not fit_check else _pickle(checked.scorer)
        if fit_check:
            table_fit.refuse_unfit(checked, scoring_job(checked))
        clock.lap("model")
        if checked.plan.ignored:
            print(f"shardscore: warning: {ignored_text(listed(checked.plan.ignored))}", file=sys.stderr, flush=True)
        assert checked.output is not None  # check(need_output=True)
        self.lease = _take_lease(checked.output, self.cfg)
        self.output = _open(checked, self.lease.holder.generation)
        try:
            self.work = Work.of(checked, _reconcile(checked, self.output))
        except BaseException:
            self.lease.release()
            raise
        clock.lap("output")
        checked.seconds["model"] = round(checked.seconds["model"] + clock.laps["model"], 3)
        checked.seconds["output"] = clock.laps["output"]

    def execute(self) -> dict[str, Any]:
        """Score every shard still to do, then publish the manifest (and the output, when the run succeeded)."""
        self.started = time.time()
        try:
            if self.work.nothing:
                return self._leave_as_is()
            self.start()
            self.dispatch()
            self._stop_beacon()  # no progress write races the run's last ones
            return self.finish()
        finally:
            self._stop_beacon()
            self.lease.release()

    def _stop_beacon(self) -> None:
        if self.beacon is not None:
            self.beacon.stop()

    def _leave_as_is(self) -> dict[str, Any]:
        """Nothing to score: a good output stays exactly as it was; an unfinished one gets its manifest."""
        self.success_before = self.output.published()
        result = self._manifest(status="")
        result["status"] = self._final_status(result)
        if not (self.success_before and result["status"] == "succeeded" and self.output.same_as_published(result)):
            self._publish(result)
        return result

    # -- start -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Ray and its workers up, the output cleared of what is redone, the run recorded, zero-row shards
        committed."""
        from .ray_session import start_workers

        rec, lease = self.work.reconciliation, self.lease
        self.success_before = self.output.published()
        if self.workers is None:
            self.workers = start_workers(self.cfg)
            self.timings["ray_init"] = self.workers.ray_init_seconds
        if rec.changes:
            lease.check()
            self.output.unpublish()
            for record in [*rec.orphans, *(r for _, r, _ in [*rec.stale, *rec.damaged])]:
                self.output.forget(record)
            for relpath in rec.leftovers:
                self.output.discard(relpath)
        self.job = self._job()
        lease.check()
        self.output.start({"model": self.cfg.model, "model_args": self.cfg.model_args,
                           "model_identity": self.job.model_identity, "key_columns": self.cfg.key_columns,
                           "input": self.cfg.input, **self.cfg.given_paths().record(),
                           "versions": manifest.versions(), "started_at": self.started,
                           "run_id": self.job.run_id, "lease_generation": lease.holder.generation})
        self.results += [commit_empty(s, self.job, self.checked.input.display(s.path)) for s in self.work.empty]
        self.progress = Progress(len(self.work.todo) + len(self.results), sum(s.num_rows for s in self.work.todo),
                                 self.cfg.progress_interval, self.progress_stream)
        for result in self.results:
            self.progress.record(result)
        self.beacon = ProgressBeacon(self.output.loc, self.job.run_id, lease.holder.generation, self.progress.snapshot)
        self.beacon.start()
        if self.watcher is not None:
            self.watcher.started(self.job.run_id, self.cfg.output, self.progress.snapshot)
        for result in self.results:
            self._tell_failed(result)
        self.gate, self.ledger = SchemaGate.of(rec.done), SourceLedger(rec.done)
        if not self.gate.text and self.checked.table is not None:
            self.gate = self.checked.table.schema_gate()

    def _job(self) -> ScoringJob:
        return scoring_job(self.checked, self.lease.holder.run_id, self.lease.holder.generation)

    # -- dispatch ----------------------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand the shards to workers in bundles, as tasks or to the actor pool; `collect` each report."""
        from . import ray_dispatch as rd

        todo, workers, cfg = self.work.todo, self.workers, self.cfg
        assert workers is not None
        begun, begun_wall = time.monotonic(), time.time()
        if todo:
            strategy, slots, model_bytes = self._strategy()
            feed = rd.Feed(self._model_ref(model_bytes), self.job, self.gate, attempts=cfg.max_retries + 1,
                           model_bytes=lambda: self.model_bytes or _pickle(self.checked.scorer))
            self.timings["put"] = time.monotonic() - begun
            listener = rd.Listener(self._handed_out, self.collect, self._idle)
            try:
                rd.dispatch(bundle(todo, min_bundles=4 * slots, max_shards=cfg.max_shards_per_task), strategy,
                            feed, workers.control, listener, attempts=cfg.max_retries + 1)
            finally:
                self._release_actors()
        self.progress.close()
        self.lease.check()  # a run resumed after another took over must not report or write anything of its own
        self.timings["scoring"] = time.monotonic() - begun
        self._time_first_shard(begun_wall)

    def _strategy(self) -> tuple[Any, int, bytes | None]:
        """The strategy, how many workers it has, and the model's bytes to send (None: the warm pool holds it)."""
        from . import ray_dispatch as rd
        from .ray_session import InFlightBound, cluster_slots
        from .ray_worker import warm

        workers = self.workers
        assert workers is not None
        if workers.actors is None:
            placement = workers.placement
            bound = InFlightBound(self.cfg.max_in_flight, workers.slots, lambda: cluster_slots(placement))
            return rd.TaskPool(placement, bound), workers.slots, self.model_bytes
        is_warm = self.cfg.pool is not None and warm(workers.actors, self.job.model_identity)
        return (rd.ActorPool(workers.actors), len(workers.actors),
                None if is_warm else self.model_bytes or _pickle(self.checked.scorer))

    @staticmethod
    def _model_ref(model_bytes: bytes | None) -> Any:
        import ray

        return None if model_bytes is None else ray.put(model_bytes)  # once: tasks get the reference, not the model

    def _release_actors(self) -> None:
        workers = self.workers
        if workers is not None and workers.actors is not None and not self.cfg.pool:
            import ray

            for actor in workers.actors:
                ray.kill(actor)

    def _handed_out(self, shards: list[Shard]) -> None:
        self.progress.handed_out((s.shard_id, s.num_rows) for s in shards)

    def _idle(self) -> None:
        self._watch_lease()
        self.progress.tick()

    def _watch_lease(self) -> None:
        if self.lease.lost.is_set():
            assert self.workers is not None
            self.workers.control.stop("another run took over the output's lease", 0)

    # -- collect -----------------------------------------------------------------------------------------------
    def collect(self, report: BundleReport) -> None:
        """A bundle's report: each result through the run's rules, then a stop the worker asked for."""
        self._watch_lease()
        for result in report.results:
            self._admit(result)
        if report.stop:
            assert self.workers is not None
            self.workers.control.fail(report.stop)

    def _admit(self, result: ShardResult) -> None:
        """Keep a committed shard only if it was scored by the same model code (SourceLedger) and has the output's
        prediction schema (SchemaGate); else withdraw it and count it failed."""
        why = result.committed and (self.ledger.conflict(result) or self.gate.admit(result))
        if why:
            self.lease.check()
            self.output.forget(result)  # never a shard of other code or another schema beside the others
            result = failed(result.shard_id, result.input_path, why, result.worker)
        self.results.append(result)
        self.progress.record(result)
        self._tell_failed(result)

    def _tell_failed(self, result: ShardResult) -> None:
        if self.watcher is not None and not result.committed:
            self.watcher.shard_failed(result.shard_id, result.input_path, result.reason)

    # -- finish ------------------------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Publish what the run did: the manifest always, the output's published state only on success; an
        aborted run raises RunAborted once its manifest is written."""
        assert self.workers is not None
        control = self.workers.control
        if control.stopping:
            self._abort(control.reason)
        finishing = time.monotonic()
        result = self._manifest(status="")
        result["status"] = self._final_status(result)
        self.lease.check()
        self.output.remove_temporaries(self.lease.holder.host)
        result["seconds"]["breakdown"]["verify_and_manifest"] = round(time.monotonic() - finishing, 3)
        self._record_run(result)
        self._publish(result)
        if result["status"] == "succeeded" and self.cfg.latest_pointer:
            result["latest_pointer"] = self._point_latest(result)
        return result

    def _point_latest(self, result: dict[str, Any]) -> str:
        """After _SUCCESS: --latest-pointer moved to this output, or kept at a newer one (latest.py)."""
        parent, _, name = self.cfg.latest_pointer.rstrip("/").rpartition("/")
        try:
            return latest.point(resolve(parent or ".", StorageOptions(self.cfg.s3_endpoint)), name, result,
                                self.cfg.lease_ttl)
        except (OSError, LeaseHeld) as exc:
            raise OutputUnwritable(f"the run succeeded, but --latest-pointer {self.cfg.latest_pointer} could not be "
                                   f"updated ({type(exc).__name__}: {exc}); rerun to update it", result) from exc

    def _record_run(self, result: dict[str, Any]) -> None:
        """What this run added, replaced and removed, kept beside the earlier runs' before _SUCCESS (runlog.py)."""
        records = runlog.run_records(result, self.work.reconciliation, self.results, self.output.recorded_runs())
        if records:
            self.lease.check()
        for record in records:
            self.output.record_run(record)

    def _abort(self, reason: str) -> None:
        committed_now = [r for r in self.results if r.committed]
        changed = (self.work.reconciliation.changes or committed_now
                   or (self.success_before and not self.output.published()))
        if changed:
            result = self._manifest(status="aborted")
            result["error"] = reason
            self._record_run(result)
            self._publish(result)
        raise RunAborted(reason + (f" ({len(committed_now)} shard(s) committed by this run stay committed; rerun "
                                   "to finish)" if committed_now else " (nothing was changed)"))

    def _time_first_shard(self, begun_wall: float) -> None:
        worked = [r for r in self.results if r.committed and r.output and r.attempt_started_at]
        if worked:
            first = min(worked, key=lambda r: r.attempt_started_at)
            self.timings["first_shard_start"] = first.attempt_started_at - begun_wall
            self.timings["first_batch"] = first.first_batch_seconds

    def _manifest(self, status: str) -> dict[str, Any]:
        return manifest.build(self.checked, self.work.reconciliation, self.results, self.lease.holder.run_id,
                              self.started, self.timings, status)

    def _final_status(self, result: dict[str, Any]) -> str:
        """succeeded only when few enough shards failed and the output holds exactly what the manifest says."""
        if result["totals"]["failed"] > self.cfg.max_failed_shards:
            return "failed"
        committed = [ShardResult.from_dict(s) for s in result["shards"] if s["status"] == "committed"]
        problems = self.output.verify(committed)
        if problems:
            result["verification"] = problems
            return "failed"
        return "succeeded"

    def _publish(self, result: dict[str, Any]) -> None:
        self.lease.check()  # the manifest and the published state are written only while this run holds the output
        if result["status"] == "failed" and result.get("verification"):
            result["failures"] += [{"shard_id": "", "path": self.cfg.output, "reason": p}
                                   for p in result["verification"]]
        try:
            self._write_logs(result)
            self.output.publish(result, success=result["status"] == "succeeded")
        except OSError as exc:
            result.update(status="failed", error=f"the manifest could not be written: {type(exc).__name__}: {exc}")
            raise OutputUnwritable(unwritable_message(self.cfg.output, exc), result) from exc

    def _write_logs(self, result: dict[str, Any]) -> None:
        """The driver's log and the failed shards' errors into the output before the manifest, which names them."""
        run_id = self.lease.holder.run_id
        logged = write_logs(self.output.loc, run_id, self.lease.holder.generation, self.driver_log,
                            [r for r in self.results if not r.committed])
        for failure in result["failures"]:
            if failure["shard_id"] in logged:
                failure["log"] = logged[failure["shard_id"]]
        result["logs"] = f"{LOGS_DIR}/{run_id}/"


def unwritable_message(output: str, exc: OSError) -> str:
    return (f"the output {output} stopped taking writes during the run ({type(exc).__name__}: {exc}): made "
            "read-only, or its disk full? Shards committed by this run stay committed; make it writable and rerun "
            "to finish")


def _pickle(scorer: model_mod.Scorer) -> bytes:
    from .ray_worker import pickle_model

    return pickle_model(scorer)


def _take_lease(loc: Location, cfg: RunConfig) -> Lease:
    try:
        info = loc.fs.get_file_info(loc.path)
    except OSError as exc:
        raise OutputError(f"output {loc.uri}: cannot be reached ({exc})") from exc
    if info.type == pafs.FileType.File:
        raise OutputError(f"output {loc.uri}: cannot write there (it is a file, not a directory)")
    try:
        lease = Lease.acquire(loc, this_process(cfg.lease_ttl, ray_job_id()))
    except OSError as exc:
        raise OutputError(f"output {loc.uri}: cannot write there ({exc})") from exc
    if lease.took_over:
        print(f"shardscore: {lease.took_over}", file=sys.stderr, flush=True)
    lease.start_heartbeat()
    return lease
