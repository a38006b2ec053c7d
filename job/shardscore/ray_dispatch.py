"""The driver's side of the Ray layer: one dispatch loop that hands bundles of shards to workers and their reports
back to the run, with two strategies for where bundles go (in the manner of Ray Data's TaskPoolMapOperator and
ActorPoolMapOperator, ray/data/_internal/execution/operators/): a task per bundle, or a pool of actors that keep the
model loaded and whose load the pool tracks itself.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import ray
from ray.exceptions import OutOfMemoryError, RayError

from .commit import failed
from .planning import Shard
from .ray_session import Placement, RunControl
from .ray_worker import BundleReport, committed_this_run, forget_overruns, last_scoring, overruns, score_task
from .schema_rule import SchemaGate
from .scoring import ScoringJob
from .watchdog import timed_out


@dataclass
class Feed:
    """What every bundle is sent with: the model, the job, the output's schema as the driver knows it now."""

    model_ref: ray.ObjectRef | None  # None when every pool actor already holds the model
    job: ScoringJob
    gate: SchemaGate  # the driver's: a bundle submitted once it is fixed conforms to it
    attempts: int = 1  # tries per shard when its input or output cannot be reached
    model_bytes: Callable[[], bytes] | None = field(default=None, repr=False)  # for `send_model`

    @property
    def box(self) -> list[ray.ObjectRef] | None:
        # In a list, so Ray passes the reference itself and each worker resolves it once.
        return None if self.model_ref is None else [self.model_ref]

    def send_model(self) -> None:
        """From now on send the model with every bundle: a pool actor restarted (its process died) without it."""
        if self.model_ref is None:
            assert self.model_bytes is not None, "a warm pool's feed knows how to pickle the model"
            self.model_ref = ray.put(self.model_bytes())


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

    `attempts`: how often Ray ran a bundle whose worker kept dying, for its shards' messages. The shards of such a
    bundle that its worker had not begun are handed out once more, in a bundle of their own.
    """
    queue = deque(bundles)
    pending: dict[ray.ObjectRef, list[Shard]] = {}
    again: Counter[str] = Counter()  # shards handed out again after a bundle-mate's crash
    while (queue and not control.stopping) or pending:
        while queue and strategy.free() and not control.stopping:
            bundle = queue.popleft()
            pending[strategy.submit(bundle, feed)] = bundle
            listener.submitted(bundle)
        ready = _ready(pending, wait)
        for ref in ready:
            bundle = pending.pop(ref)
            strategy.finished(ref)
            report = _report(ref, bundle, feed.job, attempts, again)
            if report.needs_model:
                feed.send_model()
                queue.appendleft(bundle)
                continue
            if report.again:
                again.update(s.shard_id for s in report.again)
                queue.appendleft(report.again)
            listener.reported(report)
        if not ready:
            listener.idle()
        if control.expired():
            for ref in pending:
                ray.cancel(ref, force=False)
            for bundle in pending.values():
                listener.reported(_committed_so_far(bundle, feed.job))
            return


def _committed_so_far(bundle: list[Shard], job: ScoringJob) -> BundleReport:
    """What a bundle cut off at the end of the grace period had committed (its shards' commit records): those
    shards stay committed, and the run's manifest must count them. A bundle reports only when it ends, so a run
    of long bundles, stopped, would otherwise know of none. (One that commits after this look is found by the
    next run, as any commit record of an earlier run.)"""
    return BundleReport(results=[done for shard in bundle if (done := committed_this_run(shard, job)) is not None])


def _ready(pending: dict[ray.ObjectRef, list[Shard]], timeout: float) -> list[ray.ObjectRef]:
    """Wait for at least one result (or the timeout), then take every ready one."""
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout, fetch_local=True)
    if ready:
        more, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        ready = list(dict.fromkeys([*ready, *more]))
    return ready


def _report(ref: ray.ObjectRef, bundle: list[Shard], job: ScoringJob, attempts: int,
            again: Counter[str]) -> BundleReport:
    try:
        return ray.get(ref)
    except RayError as exc:
        return _crashed(bundle, job, exc, attempts, again)


def _crashed(bundle: list[Shard], job: ScoringJob, exc: BaseException, attempts: int,
             again: Counter[str]) -> BundleReport:
    """The report of a bundle whose worker process kept dying, after Ray's retries: shards it committed before
    dying count as committed; the shard it was scoring fails, named as the one the process died on (by a batch that
    overran --batch-timeout, or anything else: the memory it took is the usual cause); the others, which it had not
    begun, go `again` once (they are innocent), after which they fail as not scored because of it. A bundle that
    died before it began a shard goes again whole, once: it may have been queued on a pool actor that another
    bundle's shard kept killing (each death costs every bundle queued there a retry), or its model's loading
    kills the process, which the second time fails it."""
    culprit = last_scoring(bundle, job)
    loc = job.input()
    report = BundleReport()
    for shard in bundle:
        done = committed_this_run(shard, job)
        if done is not None:
            report.results.append(done)
        elif shard is culprit or (culprit is None and again[shard.shard_id]):
            report.results.append(failed(shard.shard_id, loc.display(shard.path), _died(
                shard, job, exc, attempts, "this shard" if culprit else "this shard's bundle")))
        elif not again[shard.shard_id]:
            report.again.append(shard)
        else:
            report.results.append(failed(shard.shard_id, loc.display(shard.path), (
                f"not scored: the worker process scoring its bundle died on shard {culprit.shard_id} "
                f"({loc.display(culprit.path)})")))
    return report


def _died(shard: Shard, job: ScoringJob, exc: BaseException, attempts: int, scoring: str = "this shard") -> str:
    """Why a shard's worker process kept dying: the batches that overran --batch-timeout, else what Ray says."""
    overran = overruns(shard.shard_id, job)
    if overran:
        forget_overruns(shard.shard_id, job)
        return "; ".join(timed_out(o, job.batch_timeout) for o in overran.values()) + (
            f", and --max-retries {attempts - 1} allows no further attempt")
    cause = ("Ray's memory monitor killed it for memory:" if isinstance(exc, OutOfMemoryError)
             else "out of memory?")
    return (f"the worker process died {attempts} time(s) while scoring {scoring} ({cause} try a smaller "
            f"--batch-size or more --memory-per-worker; {_exit_detail(exc)})")


def _exit_detail(exc: BaseException) -> str:
    """What Ray tells of the worker's end. ActorDiedError carries the raylet's "Worker exit detail" (the exit code
    when the process exited by itself: ray/exceptions.py ActorDiedError.__init__, ActorDiedErrorContext.error_message),
    but the pool's actors restart without end (ray_session.start_workers), so a bundle whose retries ran out while
    its actor restarts gets ActorUnavailableError, which tells only that the actor's connection closed;
    WorkerCrashedError tells only that the worker died, and where its log is."""
    text = " ".join(str(exc).split()).replace(" The task may or may not have been executed on the actor.", "")
    detail = re.search(r"exit detail: (.*?)(?: Some common causes|$)", text)
    return f"{type(exc).__name__}: {detail.group(1) if detail else text}"
