"""The driver's side of the Ray layer: one dispatch loop that hands bundles of shards to workers and their reports
back to the run, with two strategies for where bundles go (in the manner of Ray Data's TaskPoolMapOperator and
ActorPoolMapOperator, ray/data/_internal/execution/operators/): a task per bundle, or a pool of actors that keep the
model loaded and whose load the pool tracks itself.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import ray
from ray.exceptions import RayError

from .commit import failed
from .planning import Shard
from .ray_session import Placement, RunControl
from .ray_worker import BundleReport, committed_this_run, last_scoring, score_task
from .schema_rule import SchemaGate
from .scoring import ScoringJob


@dataclass
class Feed:
    """What every bundle is sent with: the model, the job, the output's schema as the driver knows it now."""

    model_ref: ray.ObjectRef | None  # None when every pool actor already holds the model
    job: ScoringJob
    gate: SchemaGate  # the driver's: a bundle submitted once it is fixed conforms to it
    attempts: int = 1  # tries per shard when its input or output cannot be reached

    @property
    def box(self) -> list[ray.ObjectRef] | None:
        # In a list, so Ray passes the reference itself and each worker resolves it once.
        return None if self.model_ref is None else [self.model_ref]


class Strategy(Protocol):
    """Where bundles run."""

    def free(self) -> bool:
        """Whether another bundle may be submitted now."""

    def submit(self, bundle: list[Shard], feed: Feed) -> ray.ObjectRef:
        """Start the bundle; its report is the reference's value."""

    def finished(self, ref: ray.ObjectRef) -> None:
        """The bundle of `ref` is done (reported or crashed)."""


class TaskPool:
    """One task per bundle, at most `max_in_flight()` submitted at once (it may grow during the run)."""

    def __init__(self, placement: Placement, max_in_flight: Callable[[], int]):
        self.task = score_task.options(max_retries=placement.max_retries, **placement.options())
        self.device, self.max_in_flight = placement.device, max_in_flight
        self.in_flight = 0

    def free(self) -> bool:
        return self.in_flight < self.max_in_flight()

    def submit(self, bundle: list[Shard], feed: Feed) -> ray.ObjectRef:
        self.in_flight += 1
        return self.task.remote(bundle, feed.box, feed.job, self.device, feed.gate.text, feed.attempts)

    def finished(self, ref: ray.ObjectRef) -> None:
        self.in_flight -= 1


class ActorPool:
    """Actors that keep the model loaded: each bundle goes to the least loaded actor with a free slot."""

    def __init__(self, actors: list[Any], per_actor: int = 2):
        self.actors, self.per_actor = actors, per_actor
        self.load = [0] * len(actors)
        self.owner: dict[ray.ObjectRef, int] = {}

    def free(self) -> bool:
        return min(self.load) < self.per_actor

    def submit(self, bundle: list[Shard], feed: Feed) -> ray.ObjectRef:
        i = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[i] += 1
        ref = self.actors[i].score.remote(bundle, feed.box, feed.job, feed.gate.text, feed.attempts)
        self.owner[ref] = i
        return ref

    def finished(self, ref: ray.ObjectRef) -> None:
        self.load[self.owner.pop(ref)] -= 1


@dataclass
class Listener:
    """What the run hears of the dispatch: bundles handed out, reports back, and a tick when a second passes
    with nothing finished (for progress lines and the lease's check)."""

    submitted: Callable[[list[Shard]], None]
    reported: Callable[[BundleReport], None]
    idle: Callable[[], None]


def dispatch(bundles: Iterable[list[Shard]], strategy: Strategy, feed: Feed, control: RunControl,
             listener: Listener, attempts: int, wait: float = 1.0) -> None:
    """Keep the strategy busy until every bundle has reported, or `control` stops the run and its grace ends.

    `attempts`: how often Ray ran a bundle whose worker kept dying, for its shards' messages.
    """
    queue = deque(bundles)
    pending: dict[ray.ObjectRef, list[Shard]] = {}
    while (queue and not control.stopping) or pending:
        while queue and strategy.free() and not control.stopping:
            bundle = queue.popleft()
            pending[strategy.submit(bundle, feed)] = bundle
            listener.submitted(bundle)
        ready = _ready(pending, wait)
        for ref in ready:
            bundle = pending.pop(ref)
            strategy.finished(ref)
            listener.reported(_report(ref, bundle, feed.job, attempts))
        if not ready:
            listener.idle()
        if control.expired():
            for ref in pending:
                ray.cancel(ref, force=False)
            return


def _ready(pending: dict[ray.ObjectRef, list[Shard]], timeout: float) -> list[ray.ObjectRef]:
    """Wait for at least one result (or the timeout), then take every ready one."""
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout, fetch_local=True)
    if ready:
        more, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        ready = list(dict.fromkeys([*ready, *more]))
    return ready


def _report(ref: ray.ObjectRef, bundle: list[Shard], job: ScoringJob, attempts: int) -> BundleReport:
    try:
        return ray.get(ref)
    except RayError as exc:
        return _crashed(bundle, job, exc, attempts)


def _crashed(bundle: list[Shard], job: ScoringJob, exc: BaseException, attempts: int) -> BundleReport:
    """The report of a bundle whose worker process kept dying: shards it committed before dying count as
    committed; the shard it was scoring is named as the one the process exited on, the others as not scored
    because of it."""
    culprit = last_scoring(bundle, job)
    loc = job.input()
    how = f"the worker process exited while scoring it, {attempts} time(s) ({_exit_detail(exc)})"
    if culprit is None:  # it died before it began a shard, or between them
        reason = f"the worker process exited while scoring this shard's bundle, {attempts} time(s) " \
                 f"({_exit_detail(exc)})"
    else:
        reason = (f"not scored: the worker process scoring its bundle exited on shard {culprit.shard_id} "
                  f"({loc.display(culprit.path)})")
    return BundleReport([committed_this_run(shard, job) or failed(shard.shard_id, loc.display(shard.path),
                                                                  how if shard is culprit else reason)
                         for shard in bundle])


def _exit_detail(exc: BaseException) -> str:
    """What Ray tells of the worker's end. ActorDiedError carries the raylet's "Worker exit detail" (the exit code
    when the process exited by itself: ray/exceptions.py ActorDiedError.__init__, ActorDiedErrorContext.error_message);
    WorkerCrashedError tells only that the worker died, and where its log is."""
    text = " ".join(str(exc).split())
    detail = re.search(r"exit detail: (.*?)(?: Some common causes|$)", text)
    return f"{type(exc).__name__}: {detail.group(1) if detail else text}"
