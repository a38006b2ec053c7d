"""The thin Ray layer: put the model in the object store once, then run shards as tasks or on an actor pool.

Everything about a shard itself (reading, scoring, writing, committing) lives in `scoring`; this module only
decides where and when shards run, bounds what is in flight, and turns Ray failures into shard results.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ray
from ray.exceptions import RayError

from .commit import ShardResult
from .errors import DeviceError, ShardError
from .model import Scorer
from .planning import Shard
from .scoring import ScoringJob, failed, score_shard
from .storage import read_json

#: Per worker process: the deserialised, device-placed model, keyed by its identity. A worker runs many shards
#: (and a pool actor many runs), and must not deserialise the model or move it to the GPU once per shard.
_WORKER_MODEL: dict[str, Scorer] = {}
_METRICS: dict[str, Any] = {}


@dataclass(frozen=True)
class Placement:
    """Resources each task or actor asks Ray for, and how far ahead the driver submits."""

    num_cpus: float
    num_gpus: float
    memory: int | None
    device: str
    max_retries: int

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            opts["memory"] = self.memory
        return opts


def _metrics() -> dict[str, Any]:
    if not _METRICS:
        from ray.util.metrics import Counter

        _METRICS["rows"] = Counter("shardscore_rows_scored", "Rows scored by shardscore workers.")
        _METRICS["shards"] = Counter("shardscore_shards", "Shards finished by shardscore workers.",
                                     tag_keys=("status",))
    return _METRICS


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
        scorer = ray.get(model_box[0])
        scorer.prepare(device)
        _WORKER_MODEL.clear()
        _WORKER_MODEL[identity] = scorer
    return scorer


def _loaded_identity() -> str | None:
    # A module function, not inline in the actor: Ray ships the decorated class by value, with its own globals.
    return next(iter(_WORKER_MODEL), None)


def _score(bundle: list[Shard], model_box: list[ray.ObjectRef] | None, job: ScoringJob,
           device: str) -> list[ShardResult]:
    """Run in a worker: score a bundle of shards, one commit each. Shard faults come back as failed results."""
    try:
        scorer = _scorer(model_box, job.model_identity, device)
    except Exception as exc:  # no device, or the model does not load here: no shard can be scored, stop the run
        reason = str(exc) if isinstance(exc, DeviceError) else (
            f"the model could not be loaded on worker {socket.gethostname()}: {type(exc).__name__}: {exc}")
        return [ShardResult(shard_id=bundle[0].shard_id, status="fatal", reason=reason, worker=_worker_info(device))]
    info = _worker_info(scorer.device)
    metrics = _metrics()
    results = []
    for shard in bundle:
        try:
            result = score_shard(shard, scorer, job, info)
        except ShardError as exc:
            result = failed(shard.shard_id, job.input().display(shard.path), exc.reason, info)
        metrics["rows"].inc(result.rows_in)
        metrics["shards"].inc(1, tags={"status": result.status})
        results.append(result)
    return results


@ray.remote
def _score_task(bundle: list[Shard], model_box: list[ray.ObjectRef], job: ScoringJob,
                device: str) -> list[ShardResult]:
    return _score(bundle, model_box, job, device)


@ray.remote
class ShardScorer:
    """Keeps the model loaded; restarted by Ray if its process dies (pending shards are retried on it).

    In a named pool (`--pool`) it outlives the run that created it, so the next run on the same cluster finds
    worker processes already started and the model already loaded; it ends itself after `idle_timeout` seconds
    without work, giving its CPUs and GPUs back.
    """

    def __init__(self, device: str, idle_timeout: float | None = None):
        self.device = device
        self.busy = 0
        self.last_used = time.monotonic()
        if idle_timeout:
            threading.Thread(target=self._end_when_idle, args=(idle_timeout,), daemon=True).start()

    def loaded(self) -> str | None:
        """The identity of the model this actor holds, if any."""
        return _loaded_identity()

    def score(self, bundle: list[Shard], model_box: list[ray.ObjectRef] | None,
              job: ScoringJob) -> list[ShardResult]:
        self.busy += 1
        try:
            return _score(bundle, model_box, job, self.device)
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


def start_actors(placement: Placement, num_actors: int, pool: str | None = None,
                 idle_timeout: float | None = None) -> list[ray.actor.ActorHandle]:
    """The run's actors: new ones, or the named pool's (created where missing, reused where alive)."""
    options: dict[str, Any] = dict(max_restarts=placement.max_retries, max_task_retries=placement.max_retries,
                                   **placement.options())
    if pool is None:
        return [ShardScorer.options(**options).remote(placement.device) for _ in range(num_actors)]
    options.update(namespace=POOL_NAMESPACE, lifetime="detached", get_if_exists=True)
    return [ShardScorer.options(name=f"{pool}-{i}", **options).remote(placement.device, idle_timeout)
            for i in range(num_actors)]


def warm(actors: list[ray.actor.ActorHandle], identity: str) -> bool:
    """True when every actor already holds this model (then it need not be put in the object store again)."""
    return all(loaded == identity for loaded in ray.get([a.loaded.remote() for a in actors]))


def cluster_slots(placement: Placement) -> int:
    """How many workers of this placement the cluster holds right now (at least 1)."""
    resources = ray.cluster_resources()
    slots = []
    if placement.num_cpus:
        slots.append(resources.get("CPU", 0) / placement.num_cpus)
    if placement.num_gpus:
        slots.append(resources.get("GPU", 0) / placement.num_gpus)
    return max(1, int(min(slots))) if slots else 1


def _crashed(bundle: list[Shard], job: ScoringJob, exc: BaseException) -> list[ShardResult]:
    """Results for a bundle whose worker kept dying: shards it committed before dying count as committed."""
    text = str(exc).strip().splitlines()
    reason = f"gave up after retries: {exc.__class__.__name__}: {text[-1] if text else ''}"
    loc, store = job.input(), job.output()
    results = []
    for shard in bundle:
        record = read_json(store.loc, store.commit_path(shard.shard_id))
        if (record and record.get("input_fingerprint") == shard.fingerprint
                and record.get("model_identity") == job.model_identity):
            results.append(ShardResult.from_dict(record))
        else:
            results.append(failed(shard.shard_id, loc.display(shard.path), reason))
    return results


def run_tasks(bundles: Iterable[list[Shard]], model_ref: ray.ObjectRef, job: ScoringJob, placement: Placement,
              max_in_flight: int, on_result: Callable[[ShardResult | None], bool]) -> None:
    """One task per bundle of shards, at most `max_in_flight` submitted at once.

    on_result gets each result (None on an idle tick) and returns False to stop the run early.
    """
    task = _score_task.options(max_retries=placement.max_retries, retry_exceptions=[OSError],
                               **placement.options())
    box = [model_ref]  # in a list, so Ray passes the reference itself and tasks resolve it once per worker
    queue = deque(bundles)
    pending: dict[ray.ObjectRef, list[Shard]] = {}
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            bundle = queue.popleft()
            pending[task.remote(bundle, box, job, placement.device)] = bundle
        if not _drain(pending, job, on_result):
            _cancel(pending)
            return


def run_actors(bundles: Iterable[list[Shard]], actors: list[ray.actor.ActorHandle], model_ref: ray.ObjectRef | None,
               job: ScoringJob, on_result: Callable[[ShardResult | None], bool], per_actor: int = 2) -> None:
    """Feed bundles to actors that keep the model loaded: each goes to the next actor with a free slot.

    model_ref is None when every actor already holds the model (a warm pool).
    """
    box = None if model_ref is None else [model_ref]
    load = {i: 0 for i in range(len(actors))}
    queue = deque(bundles)
    pending: dict[ray.ObjectRef, list[Shard]] = {}
    owner: dict[ray.ObjectRef, int] = {}
    while queue or pending:
        for i in sorted(load, key=load.get):  # least loaded first
            while queue and load[i] < per_actor:
                bundle = queue.popleft()
                ref = actors[i].score.remote(bundle, box, job)
                pending[ref], owner[ref] = bundle, i
                load[i] += 1
        submitted = set(pending)
        keep_going = _drain(pending, job, on_result)
        for ref in submitted - set(pending):
            load[owner.pop(ref)] -= 1
        if not keep_going:
            _cancel(pending)
            return


def _drain(pending: dict[ray.ObjectRef, list[Shard]], job: ScoringJob,
           on_result: Callable[[ShardResult | None], bool], timeout: float = 1.0) -> bool:
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
            results = _crashed(bundle, job, exc)
        for result in results:
            keep_going = on_result(result) and keep_going
    if not ready:
        keep_going = on_result(None)  # a tick with nothing finished: lets the driver print progress
    return keep_going


def _cancel(pending: dict[ray.ObjectRef, list[Shard]]) -> None:
    for ref in pending:
        ray.cancel(ref, force=False)
