"""What runs in Ray's worker processes: a bundle of shards scored one by one, the model kept loaded between them.

Everything about a shard itself (reading, scoring, writing, committing) lives in `scoring`; this module turns a
bundle's outcome into a `BundleReport` for the driver, and holds the model's trip to the workers (pickled once by
the driver, unpickled and placed on its device once per worker process).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray import cloudpickle
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_put

from .commit import ShardResult, failed
from .errors import DeviceError, ModelError, RunAborted, ShardError
from .lease import LeaseLost
from .logs import error_text
from .model import Scorer
from .planning import Shard
from .schema_rule import SchemaGate
from .scoring import ScoringJob, score_shard
from .watchdog import Overrun, Watch, Watchdog

#: Per worker process: the deserialised, device-placed model, keyed by its identity. A worker runs many shards
#: (and a pool actor many runs), and must not deserialise the model or move it to the GPU once per shard.
_WORKER_MODEL: dict[str, Scorer] = {}
_METRICS: dict[str, Any] = {}
_WATCHDOG: list[Watchdog] = []  # this process's, once a run with --batch-timeout comes


@dataclass
class BundleReport:
    """What a worker reports of a bundle: its shards' results, and `stop`, the reason the whole run must stop
    (the input changed, another run took the output over, the model does not load here), or empty."""

    results: list[ShardResult] = field(default_factory=list)
    stop: str = ""
    needs_model: bool = False  # a pool actor restarted since the driver found it warm: send the model, hand it again
    again: list[Shard] = field(default_factory=list)  # shards to hand out again (a bundle-mate's worker died)


def pickle_model(scorer: Scorer) -> bytes:
    """The scorer as the bytes `ray.put` stores once; a model that cannot be pickled is named with the attribute at
    fault, before Ray starts."""
    try:
        return cloudpickle.dumps(scorer)
    except Exception as exc:  # noqa: BLE001 - pickling raises many kinds
        culprit = _unpicklable(scorer.model, "the model")
        raise ModelError(f"--model {scorer.spec.target}: the model cannot be pickled, so it cannot be sent to the "
                         f"workers: {culprit or f'{type(exc).__name__}: {exc}'}. Build such attributes in "
                         "prepare(device), which runs on each worker, or drop them in __getstate__") from exc


def _unpicklable(obj: Any, path: str, depth: int = 3) -> str:
    """The deepest attribute of obj that cannot be pickled, e.g. "attribute the model.lock (a _thread.lock)"."""
    if depth == 0:
        return ""
    for name, value in sorted((getattr(obj, "__dict__", None) or {}).items()):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001
            deeper = _unpicklable(value, f"{path}.{name}", depth - 1)
            return deeper or f"attribute {path}.{name} (a {type(value).__module__}.{type(value).__qualname__}): {exc}"
    return ""


def import_quietly(module: str) -> None:
    """Import the model's module ahead of its first shard (pandas, torch, ...). A failure is left for the model's
    own loading to report, with the spec and the worker named."""
    if module:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - reported when the model is loaded
            pass


#: The histogram buckets of a shard's seconds (from its start to its commit).
SHARD_SECONDS_BUCKETS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]


def _count(result: ShardResult) -> None:
    """Export a finished shard to Ray's metrics (their Prometheus names are ray_<name>, counters with _total:
    helm/shardscore/dashboards read them). Metrics never fail a shard: an error is logged once, then ignored.

    (Ray's Counter.inc rejects 0, which is what a failed shard adds to the rows counter: ray/util/metrics.py.)
    """
    try:
        if not _METRICS:
            from ray.util.metrics import Counter, Histogram

            _METRICS["rows"] = Counter("shardscore_rows_scored", "Rows scored by shardscore workers.")
            _METRICS["rejected"] = Counter("shardscore_rows_rejected",
                                           "Rows the model raised on, set aside within --max-bad-rows.")
            _METRICS["shards"] = Counter("shardscore_shards", "Shards finished by shardscore workers.",
                                         tag_keys=("status",))
            _METRICS["seconds"] = Histogram("shardscore_shard_seconds", "Seconds from a shard's start to its end.",
                                            boundaries=SHARD_SECONDS_BUCKETS)
        if result.rows_in > 0:
            _METRICS["rows"].inc(result.rows_in)
        if result.rows_rejected > 0:
            _METRICS["rejected"].inc(result.rows_rejected)
        _METRICS["shards"].inc(1, tags={"status": result.status.value})
        if result.seconds > 0:
            _METRICS["seconds"].observe(result.seconds)
    except Exception as exc:  # noqa: BLE001 - whatever the metrics library raises
        if not _METRICS.get("warned"):
            _METRICS["warned"] = True
            print(f"shardscore: metrics are off in this worker ({type(exc).__name__}: {exc})", file=sys.stderr)


def _worker_info(device: str) -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"hostname": socket.gethostname(), "node_id": ctx.get_node_id(), "pid": os.getpid(),
            "device": device, "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


def _scorer(model_box: list[ray.ObjectRef] | None, identity: str, device: str) -> Scorer:
    """This process's copy of the model: fetched and placed once, kept while the model identity stays the same."""
    scorer = _WORKER_MODEL.get(identity)
    if scorer is None:
        assert model_box is not None, "score_bundle asks the driver for the model first"
        scorer = cloudpickle.loads(ray.get(model_box[0]))  # the driver put pickle_model's bytes
        scorer.check_code()
        scorer.prepare(device)
        _WORKER_MODEL.clear()
        _WORKER_MODEL[identity] = scorer
    return scorer


def _loaded_identity() -> str | None:
    # A module function, not inline in the actor: Ray ships the decorated class by value, with its own globals.
    return next(iter(_WORKER_MODEL), None)


def committed_this_run(shard: Shard, job: ScoringJob) -> ShardResult | None:
    """The shard's commit record when this run already committed it (a retried task after its worker died).

    A record of another run, or of a superseded generation of the lease (a late write: lease.check_fence), is not.
    """
    record = job.output().record(shard.shard_id)
    if (record and record.run_id == job.run_id and record.lease_generation == job.lease_generation
            and record.input_fingerprint == shard.fingerprint and record.model_identity == job.model_identity):
        return record
    return None


class _RunStops(Exception):
    """A shard's outcome that stops the run, not the shard alone."""


def _score_one(shard: Shard, scorer: Scorer, job: ScoringJob, info: dict[str, Any], expected_schema: str,
               attempts: int, before_publish: Callable[[], None], watch: Watch | None) -> ShardResult:
    """One shard, as its own unit: whatever goes wrong with it becomes its own result, never its bundle-mates'.

    The shard's own faults (its data, the model on its rows) fail it at once. Input or output that could not be
    reached (OSError) is tried again, `attempts` times in all, with a short backoff. Raises _RunStops when the
    input changed, no shard can be written readably, or another run took the output over.
    """
    display = job.input().display(shard.path)
    for attempt in range(1, attempts + 1):
        try:
            return score_shard(shard, scorer, job, info, expected_schema=expected_schema,
                               before_publish=before_publish, watch=watch)
        except ShardError as exc:
            return failed(shard.shard_id, display, exc.reason, info, error_text(exc))
        except (RunAborted, LeaseLost) as exc:
            raise _RunStops(str(exc)) from exc
        except OSError as exc:
            if attempt == attempts:
                tries = f" ({attempts} attempts)" if attempts > 1 else ""
                return failed(shard.shard_id, display, f"input or output could not be read or written{tries}: "
                              f"{type(exc).__name__}: {exc}", info)
            time.sleep(min(10.0, 0.5 * 2 ** (attempt - 1)))
        except Exception as exc:  # noqa: BLE001 - an unexpected fault of this shard stays this shard's
            return failed(shard.shard_id, display, f"{type(exc).__name__}: {exc}", info, error_text(exc))
    raise AssertionError("unreachable")


class _Unpublisher:
    """Withdraws the output's published state once, before the bundle's first file appears (Output.unpublish)."""

    def __init__(self, job: ScoringJob):
        self.output, self.done = job.output(), False

    def __call__(self) -> None:
        if not self.done:
            self.output.unpublish()
            self.done = True


def score_bundle(bundle: list[Shard], model_box: list[ray.ObjectRef] | None, job: ScoringJob,
                 device: str, expected_schema: str, attempts: int) -> BundleReport:
    """Run in a worker: score a bundle of shards, one commit each. Shard faults come back as failed results."""
    if model_box is None and _loaded_identity() != job.model_identity:
        return BundleReport(needs_model=True)
    try:
        scorer = _scorer(model_box, job.model_identity, device)
    except Exception as exc:  # noqa: BLE001 - no device, or the model does not load here: no shard can be scored
        return BundleReport(stop=str(exc) if isinstance(exc, DeviceError) else (
            f"the model could not be loaded on worker {socket.gethostname()}: {type(exc).__name__}: {exc}"))
    info, gate, unpublish = _worker_info(scorer.device), SchemaGate(expected_schema), _Unpublisher(job)
    report = BundleReport()
    key, failed_ids = _scoring_key(bundle, job), []
    _internal_kv_put(key, "[]", overwrite=True, namespace=_KV)
    try:
        for shard in bundle:
            result = committed_this_run(shard, job)
            if result is None:
                watch = _watch(shard, job)
                try:
                    result = _score_one(shard, scorer, job, info, gate.text, attempts, unpublish, watch)
                except _RunStops as stop:  # the driver stops the run: the bundle's other shards are not started
                    report.stop = str(stop)
                    return report
                if watch is not None and watch.earlier:
                    forget_overruns(shard.shard_id, job)
                if not result.committed:
                    failed_ids.append(shard.shard_id)
                    _internal_kv_put(key, json.dumps(failed_ids), overwrite=True, namespace=_KV)
            gate.admit(result)  # the bundle's later shards must match its first
            _count(result)
            report.results.append(result)
    finally:
        _internal_kv_del(key, namespace=_KV)
    return report


#: Ray's internal key-value store (the GCS's) holds, per bundle in flight, that its worker began scoring it and the
#: shards it failed so far: when the worker process dies (os._exit, a segfault, the OOM killer) the driver can name
#: the shard it died on (last_scoring). Two writes a bundle, not one a shard: a GCS round trip cost a tiny shard
#: half a millisecond.
_KV = "shardscore"


def _scoring_key(bundle: list[Shard], job: ScoringJob) -> str:
    return f"scoring:{job.run_id}:{bundle[0].shard_id}"


def _overrun_key(shard_id: str, job: ScoringJob) -> str:
    return f"overrun:{job.run_id}:{shard_id}"


def overruns(shard_id: str, job: ScoringJob) -> dict[tuple[int, int], Overrun]:
    """The shard's batches that overran --batch-timeout in this run's earlier attempts, by (first row, rows)."""
    stored = json.loads(_internal_kv_get(_overrun_key(shard_id, job), namespace=_KV) or b"[]")
    return {(o.first_row, o.rows): o for o in map(Overrun.from_json, stored)}


def forget_overruns(shard_id: str, job: ScoringJob) -> None:
    _internal_kv_del(_overrun_key(shard_id, job), namespace=_KV)


def _watch(shard: Shard, job: ScoringJob) -> Watch | None:
    """The shard's --batch-timeout watch: this process's watchdog, and the overruns of earlier attempts (kept in the
    GCS's key-value store, which outlives the worker process that the watchdog ends)."""
    if not job.batch_timeout:
        return None
    if not _WATCHDOG:
        _WATCHDOG.append(Watchdog())
    earlier = overruns(shard.shard_id, job)

    def record(overrun: Overrun) -> None:
        stored = dict(earlier)
        stored[(overrun.first_row, overrun.rows)] = overrun
        _internal_kv_put(_overrun_key(shard.shard_id, job), json.dumps([o.to_json() for o in stored.values()]),
                         overwrite=True, namespace=_KV)

    return Watch(_WATCHDOG[0], job.batch_timeout, earlier, record)


def last_scoring(bundle: list[Shard], job: ScoringJob) -> Shard | None:
    """Read by the driver after the bundle's worker died: the shard it was scoring, if it had begun the bundle.

    A worker scores its bundle in order, and each shard ends committed (its commit record) or failed (named in the
    bundle's key), so the shard it died on is the first that is neither.
    """
    key = _scoring_key(bundle, job)
    began = _internal_kv_get(key, namespace=_KV)
    _internal_kv_del(key, namespace=_KV)
    if began is None:
        return None
    failed_ids = set(json.loads(began))
    return next((s for s in bundle if s.shard_id not in failed_ids and committed_this_run(s, job) is None), None)


@ray.remote
def score_task(bundle: list[Shard], model_box: list[ray.ObjectRef], job: ScoringJob,
               device: str, expected_schema: str, attempts: int) -> BundleReport:
    return score_bundle(bundle, model_box, job, device, expected_schema, attempts)


@ray.remote
class ShardScorer:
    """Keeps the model loaded; restarted by Ray if its process dies (pending shards are retried on it).

    In a named pool (`--pool`) it outlives the run that created it, so the next run on the same cluster finds
    worker processes already started and the model already loaded; it ends itself after `idle_timeout` seconds
    without work, giving its CPUs and GPUs back.
    """

    def __init__(self, device: str, module: str = "", idle_timeout: float | None = None):
        self.device = device
        import_quietly(module)
        self.busy = 0
        self.last_used = time.monotonic()
        if idle_timeout:
            threading.Thread(target=self._end_when_idle, args=(idle_timeout,), daemon=True).start()

    def loaded(self) -> str | None:
        """The identity of the model this actor holds, if any."""
        return _loaded_identity()

    def score(self, bundle: list[Shard], model_box: list[ray.ObjectRef] | None,
              job: ScoringJob, expected_schema: str, attempts: int) -> BundleReport:
        self.busy += 1
        try:
            return score_bundle(bundle, model_box, job, self.device, expected_schema, attempts)
        finally:
            self.busy -= 1
            self.last_used = time.monotonic()

    def _end_when_idle(self, idle_timeout: float) -> None:
        while True:
            time.sleep(min(idle_timeout, 5.0))
            if not self.busy and time.monotonic() - self.last_used > idle_timeout:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


POOL_NAMESPACE = "shardscore"


def start_actors(options: dict[str, Any], device: str, num_actors: int, module: str, pool: str | None = None,
                 idle_timeout: float | None = None) -> list[ray.actor.ActorHandle]:
    """The run's actors: new ones, or the named pool's (created where missing, reused where alive).

    Creating them returns at once; Ray starts their processes, which import the model's module, meanwhile.
    """
    if pool is None:
        return [ShardScorer.options(**options).remote(device, module) for _ in range(num_actors)]
    options = dict(options, namespace=POOL_NAMESPACE, lifetime="detached", get_if_exists=True)
    return [ShardScorer.options(name=f"{pool}-{i}", **options).remote(device, module, idle_timeout)
            for i in range(num_actors)]


def warm(actors: list[ray.actor.ActorHandle], identity: str) -> bool:
    """True when every actor already holds this model (then it need not be put in the object store again)."""
    return all(loaded == identity for loaded in ray.get([a.loaded.remote() for a in actors]))
