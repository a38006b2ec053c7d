"""The thin Ray layer: put the model in the object store once, then run shards as tasks or on an actor pool.

Everything about a shard itself (reading, scoring, writing, committing) lives in `scoring`; this module only
decides where and when shards run, bounds what is in flight, and turns Ray failures into shard results.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ray
from ray import cloudpickle
from ray.exceptions import RayError
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_put

from .commit import ShardResult
from .errors import DeviceError, RunAborted, ShardError
from .lease import LeaseLost
from .model import Scorer
from .planning import Shard
from .scoring import ScoringJob, failed, score_shard
from .session import Placement, RunControl, _import_quietly
from .storage import read_json

#: Per worker process: the deserialised, device-placed model, keyed by its identity. A worker runs many shards
#: (and a pool actor many runs), and must not deserialise the model or move it to the GPU once per shard.
_WORKER_MODEL: dict[str, Scorer] = {}
_METRICS: dict[str, Any] = {}


def _count(result: ShardResult) -> None:
    """Export a finished shard to Ray's metrics. Metrics never fail a shard: an error is logged once, then ignored.

    (Ray's Counter.inc rejects 0, which is what a failed shard adds to the rows counter: ray/util/metrics.py.)
    """
    try:
        if not _METRICS:
            from ray.util.metrics import Counter

            _METRICS["rows"] = Counter("shardscore_rows_scored", "Rows scored by shardscore workers.")
            _METRICS["shards"] = Counter("shardscore_shards", "Shards finished by shardscore workers.",
                                         tag_keys=("status",))
        if result.rows_in > 0:
            _METRICS["rows"].inc(result.rows_in)
        _METRICS["shards"].inc(1, tags={"status": result.status})
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
        if model_box is None:  # a pool actor restarted since the driver found it warm: this run stops, and
            raise RuntimeError(f"model {identity} is not loaded in this worker and was not sent")  # the next sends it
        scorer = cloudpickle.loads(ray.get(model_box[0]))  # the driver put the pickled scorer (Scorer.pickled)
        scorer.prepare(device)
        _WORKER_MODEL.clear()
        _WORKER_MODEL[identity] = scorer
    return scorer


def _loaded_identity() -> str | None:
    # A module function, not inline in the actor: Ray ships the decorated class by value, with its own globals.
    return next(iter(_WORKER_MODEL), None)


def _committed_this_run(shard: Shard, job: ScoringJob) -> ShardResult | None:
    """The shard's commit record when this run already committed it (a retried task after its worker died).

    A record of another run, or of a superseded generation of the lease (a late write: lease.check_fence), is not.
    """
    store = job.output()
    record = read_json(store.loc, store.commit_path(shard.shard_id))
    if (record and record.get("run_id") == job.run_id and record.get("lease_generation", 0) == job.lease_generation
            and record.get("input_fingerprint") == shard.fingerprint
            and record.get("model_identity") == job.model_identity):
        return ShardResult.from_dict(record)
    return None


def _score_one(shard: Shard, scorer: Scorer, job: ScoringJob, info: dict[str, Any], expected_schema: str,
               attempts: int, before_publish: Callable[[], None]) -> ShardResult:
    """One shard, as its own unit: whatever goes wrong with it becomes its own result, never its bundle-mates'.

    The shard's own faults (its data, the model on its rows) fail it at once. Input or output that could not be
    reached (OSError) is tried again, `attempts` times in all, with a short backoff.
    """
    display = job.input().display(shard.path)
    for attempt in range(1, attempts + 1):
        try:
            return score_shard(shard, scorer, job, info, expected_schema=expected_schema,
                               before_publish=before_publish)
        except ShardError as exc:
            return failed(shard.shard_id, display, exc.reason, info)
        except (RunAborted, LeaseLost) as exc:  # the input changed, no shard can be written readably, or another
            # run took the output over: the run must stop, not this shard alone
            return ShardResult(shard_id=shard.shard_id, status="fatal", input_path=display, reason=str(exc),
                               worker=info)
        except OSError as exc:
            if attempt == attempts:
                tries = f" ({attempts} attempts)" if attempts > 1 else ""
                return failed(shard.shard_id, display, f"input or output could not be read or written{tries}: "
                              f"{type(exc).__name__}: {exc}", info)
            time.sleep(min(10.0, 0.5 * 2 ** (attempt - 1)))
        except Exception as exc:  # noqa: BLE001 - an unexpected fault of this shard stays this shard's
            return failed(shard.shard_id, display, f"{type(exc).__name__}: {exc}", info)
    raise AssertionError("unreachable")


def _score(bundle: list[Shard], model_box: list[ray.ObjectRef] | None, job: ScoringJob,
           device: str, expected_schema: str, attempts: int) -> list[ShardResult]:
    """Run in a worker: score a bundle of shards, one commit each. Shard faults come back as failed results."""
    try:
        scorer = _scorer(model_box, job.model_identity, device)
    except Exception as exc:  # no device, or the model does not load here: no shard can be scored, stop the run
        reason = str(exc) if isinstance(exc, DeviceError) else (
            f"the model could not be loaded on worker {socket.gethostname()}: {type(exc).__name__}: {exc}")
        return [ShardResult(shard_id=bundle[0].shard_id, status="fatal", reason=reason, worker=_worker_info(device))]
    info = _worker_info(scorer.device)
    store = job.output()
    withdrawn = False

    def before_publish() -> None:  # the output is about to change: a reader must stop trusting _SUCCESS
        nonlocal withdrawn
        if not withdrawn:
            store.withdraw_success()
            withdrawn = True

    results = []
    try:
        for shard in bundle:
            result = _committed_this_run(shard, job)
            if result is None:
                _internal_kv_put(_scoring_key(bundle, job), shard.shard_id, overwrite=True, namespace=_KV)
                result = _score_one(shard, scorer, job, info, expected_schema, attempts, before_publish)
            if result.status == "committed" and not expected_schema:
                expected_schema = result.prediction_schema  # the bundle's later shards must match its first
            _count(result)
            results.append(result)
            if result.status == "fatal":
                break  # the driver stops the run: the bundle's other shards are not started
    finally:
        _internal_kv_del(_scoring_key(bundle, job), namespace=_KV)
    return results


#: Ray's internal key-value store (the GCS's) holds, per bundle in flight, the shard its worker is scoring: when the
#: worker process dies (os._exit, a segfault, the OOM killer) the driver can name the shard it died on.
_KV = "shardscore"


def _scoring_key(bundle: list[Shard], job: ScoringJob) -> str:
    return f"scoring:{job.run_id}:{bundle[0].shard_id}"


@ray.remote
def _score_task(bundle: list[Shard], model_box: list[ray.ObjectRef], job: ScoringJob,
                device: str, expected_schema: str, attempts: int) -> list[ShardResult]:
    return _score(bundle, model_box, job, device, expected_schema, attempts)


@ray.remote
class ShardScorer:
    """Keeps the model loaded; restarted by Ray if its process dies (pending shards are retried on it).

    In a named pool (`--pool`) it outlives the run that created it, so the next run on the same cluster finds
    worker processes already started and the model already loaded; it ends itself after `idle_timeout` seconds
    without work, giving its CPUs and GPUs back.
    """

    def __init__(self, device: str, module: str = "", idle_timeout: float | None = None):
        self.device = device
        _import_quietly(module)
        self.busy = 0
        self.last_used = time.monotonic()
        if idle_timeout:
            threading.Thread(target=self._end_when_idle, args=(idle_timeout,), daemon=True).start()

    def loaded(self) -> str | None:
        """The identity of the model this actor holds, if any."""
        return _loaded_identity()

    def score(self, bundle: list[Shard], model_box: list[ray.ObjectRef] | None,
              job: ScoringJob, expected_schema: str, attempts: int) -> list[ShardResult]:
        self.busy += 1
        try:
            return _score(bundle, model_box, job, self.device, expected_schema, attempts)
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


def start_actors(placement: Placement, num_actors: int, module: str, pool: str | None = None,
                 idle_timeout: float | None = None) -> list[ray.actor.ActorHandle]:
    """The run's actors: new ones, or the named pool's (created where missing, reused where alive).

    Creating them returns at once; Ray starts their processes, which import the model's module, meanwhile.
    """
    options: dict[str, Any] = dict(max_restarts=placement.max_retries, max_task_retries=placement.max_retries,
                                   **placement.options())
    if pool is None:
        return [ShardScorer.options(**options).remote(placement.device, module) for _ in range(num_actors)]
    options.update(namespace=POOL_NAMESPACE, lifetime="detached", get_if_exists=True)
    return [ShardScorer.options(name=f"{pool}-{i}", **options).remote(placement.device, module, idle_timeout)
            for i in range(num_actors)]


def warm(actors: list[ray.actor.ActorHandle], identity: str) -> bool:
    """True when every actor already holds this model (then it need not be put in the object store again)."""
    return all(loaded == identity for loaded in ray.get([a.loaded.remote() for a in actors]))


def _crashed(bundle: list[Shard], job: ScoringJob, exc: BaseException, attempts: int) -> list[ShardResult]:
    """Results for a bundle whose worker process kept dying: shards it committed before dying count as committed;
    the shard it was scoring is named as the one the process exited on, the others as not scored because of it."""
    key = _scoring_key(bundle, job)
    scoring = (_internal_kv_get(key, namespace=_KV) or b"").decode()
    _internal_kv_del(key, namespace=_KV)
    loc = job.input()
    culprit = next((s for s in bundle if s.shard_id == scoring), None)
    how = f"the worker process exited while scoring it, {attempts} time(s) ({_exit_detail(exc)})"
    if culprit is None:  # it died before it began a shard, or between them
        reason = f"the worker process exited while scoring this shard's bundle, {attempts} time(s) " \
                 f"({_exit_detail(exc)})"
    else:
        reason = (f"not scored: the worker process scoring its bundle exited on shard {culprit.shard_id} "
                  f"({loc.display(culprit.path)})")
    return [_committed_this_run(shard, job) or failed(shard.shard_id, loc.display(shard.path),
                                                      how if shard is culprit else reason)
            for shard in bundle]


def _exit_detail(exc: BaseException) -> str:
    """What Ray tells of the worker's end. ActorDiedError carries the raylet's "Worker exit detail" (the exit code
    when the process exited by itself: ray/exceptions.py ActorDiedError.__init__, ActorDiedErrorContext.error_message);
    WorkerCrashedError tells only that the worker died, and where its log is."""
    text = " ".join(str(exc).split())
    detail = re.search(r"exit detail: (.*?)(?: Some common causes|$)", text)
    return f"{type(exc).__name__}: {detail.group(1) if detail else text}"


@dataclass
class Feed:
    """What the driver feeds workers with: the model, the job, and the prediction schema once it is fixed."""

    model_ref: ray.ObjectRef | None  # None when every pool actor already holds the model
    job: ScoringJob
    control: RunControl
    on_result: Callable[[ShardResult | None], bool]  # False: stop the run now
    attempts: int = 1  # tries per shard when its input or output cannot be reached
    expected_schema: str = ""  # set by the driver from the first committed shard
    on_submit: Callable[[list[Shard]], None] = lambda bundle: None

    @property
    def box(self) -> list[ray.ObjectRef] | None:
        # In a list, so Ray passes the reference itself and each worker resolves it once.
        return None if self.model_ref is None else [self.model_ref]


def run_tasks(bundles: Iterable[list[Shard]], feed: Feed, placement: Placement,
              max_in_flight: Callable[[], int]) -> None:
    """One task per bundle of shards, at most `max_in_flight()` submitted at once (it may grow during the run)."""
    task = _score_task.options(max_retries=placement.max_retries, **placement.options())
    queue = deque(bundles)
    pending: dict[ray.ObjectRef, list[Shard]] = {}
    while (queue and not feed.control.stopping) or pending:
        while queue and len(pending) < max_in_flight() and not feed.control.stopping:
            bundle = queue.popleft()
            ref = task.remote(bundle, feed.box, feed.job, placement.device, feed.expected_schema, feed.attempts)
            pending[ref] = bundle
            feed.on_submit(bundle)
        if not _drain(pending, feed, placement.max_retries + 1) or feed.control.expired():
            _cancel(pending)
            return


def run_actors(bundles: Iterable[list[Shard]], actors: list[ray.actor.ActorHandle], feed: Feed,
               max_retries: int, per_actor: int = 2) -> None:
    """Feed bundles to actors that keep the model loaded: each goes to the next actor with a free slot."""
    load = {i: 0 for i in range(len(actors))}
    queue = deque(bundles)
    pending: dict[ray.ObjectRef, list[Shard]] = {}
    owner: dict[ray.ObjectRef, int] = {}
    while (queue and not feed.control.stopping) or pending:
        for i in sorted(load, key=load.get):  # least loaded first
            while queue and load[i] < per_actor and not feed.control.stopping:
                bundle = queue.popleft()
                ref = actors[i].score.remote(bundle, feed.box, feed.job, feed.expected_schema, feed.attempts)
                pending[ref], owner[ref] = bundle, i
                load[i] += 1
                feed.on_submit(bundle)
        submitted = set(pending)
        keep_going = _drain(pending, feed, max_retries + 1)
        for ref in submitted - set(pending):
            load[owner.pop(ref)] -= 1
        if not keep_going or feed.control.expired():
            _cancel(pending)
            return


def _drain(pending: dict[ray.ObjectRef, list[Shard]], feed: Feed, attempts: int, timeout: float = 1.0) -> bool:
    """Wait for at least one result (or the timeout), then hand over every ready one."""
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout, fetch_local=True)
    if ready:
        more, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        ready = list(dict.fromkeys([*ready, *more]))
    keep_going = True
    for ref in ready:
        bundle = pending.pop(ref)
        try:
            results = ray.get(ref)
        except RayError as exc:
            results = _crashed(bundle, feed.job, exc, attempts)
        for result in results:
            keep_going = feed.on_result(result) and keep_going
    if not ready:
        keep_going = feed.on_result(None)  # a tick with nothing finished: lets the driver print progress
    return keep_going


def _cancel(pending: dict[ray.ObjectRef, list[Shard]]) -> None:
    for ref in pending:
        ray.cancel(ref, force=False)
