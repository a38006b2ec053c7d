"""The run's Ray session: connect, take over SIGTERM and SIGINT, and have Ray start the worker processes first.

A Ray worker process takes a second or more to start and import what scoring needs: longer than the driver takes
to plan the input and load the model. So when a run joins a cluster that is up, the CLI calls `start_workers`
before anything else (this module imports nothing heavier than Ray), and the driver's own work overlaps with the
workers' start.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray

from .config import RunConfig
from .errors import RunAborted


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


def cluster_slots(placement: Placement) -> int:
    """How many workers of this placement the cluster holds right now (at least 1)."""
    resources = ray.cluster_resources()
    slots = []
    if placement.num_cpus:
        slots.append(resources.get("CPU", 0) / placement.num_cpus)
    if placement.num_gpus:
        slots.append(resources.get("GPU", 0) / placement.num_gpus)
    return max(1, int(min(slots))) if slots else 1


class InFlightBound:
    """How many tasks a run keeps submitted: --max-in-flight when given, else twice the slots the cluster has, read
    again every `every` seconds and never lowered. The queued tasks are the demand an autoscaler sees (Ray's
    ResourceDemandScheduler.get_nodes_to_launch, autoscaler/_private/resource_demand_scheduler.py, launches nodes
    for the resource requests of tasks that wait), so a bound fixed at the start would hold a run that starts on
    one worker to two, however far its worker group may scale."""

    def __init__(self, fixed: int | None, slots_now: int, slots: Callable[[], int], every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fixed, self._slots, self._every, self._clock = fixed, slots, every, clock
        self._value, self._read_at = fixed or 2 * slots_now, clock()

    def __call__(self) -> int:
        if not self._fixed and self._clock() - self._read_at >= self._every:
            self._value, self._read_at = max(self._value, 2 * self._slots()), self._clock()
        return self._value


class RunControl:
    """How the driver stops a run early: after a grace period (a signal), or at once (`fail`: an error that ends
    the run, whose reason then wins over a signal's)."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self._stopped_by = ""
        self.fatal = ""

    def stop(self, reason: str, grace: float) -> None:
        """Submit nothing more; give what is in flight `grace` seconds to finish."""
        if self.deadline is None:
            self.deadline, self._stopped_by = time.monotonic() + grace, reason

    def fail(self, reason: str) -> None:
        """Stop now: nothing more is submitted and nothing in flight is waited for."""
        self.fatal = self.fatal or reason
        self.deadline = time.monotonic()

    @property
    def reason(self) -> str:
        return self.fatal or self._stopped_by

    @property
    def stopping(self) -> bool:
        return self.deadline is not None

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@ray.remote
def _warm(module: str) -> int:
    from shardscore import ray_worker  # pyarrow and the scoring code, which every shard needs

    ray_worker.import_quietly(module)
    return os.getpid()


#: At most this many warm-up tasks: on a large cluster, a run over a few files must not start thousands of
#: processes before it knows how many it needs (the others start when their shards come).
MAX_WARM_UP = 64


def warm_up(placement: Placement, slots: int, module: str) -> None:
    """Have Ray start this job's worker processes now, one per slot (up to MAX_WARM_UP), each importing the
    scoring code and the model's module, so that the first shards find them ready.

    Ray keeps a job's idle worker processes and gives them the job's later tasks of the same resources (its worker
    pool), which is what the run then submits.
    """
    task = _warm.options(max_retries=0, **placement.options())
    for _ in range(min(slots, MAX_WARM_UP)):
        task.remote(module)


def connect(address: str | None) -> float:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local one. Returns the seconds it took."""
    import ray

    started = time.monotonic()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=None if address else False, log_to_driver=True)
    return time.monotonic() - started


def _on_signals(control: Any, grace: float) -> None:
    """SIGTERM (what Kubernetes sends a pod it deletes or evicts) and SIGINT: stop submitting, give what is in
    flight `grace` seconds, then end as aborted. A second signal ends the process at once.

    Installed after ray.init, which sets its own SIGTERM handler for the driver (ray/_private/worker.py, init).
    """
    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if control.stopping:
            print(f"shardscore: {name} again: exiting now", file=sys.stderr, flush=True)
            os._exit(RunAborted.exit_code)
        print(f"shardscore: {name} received: no more shards are started; waiting up to {grace:g} s for those in "
              "flight, then the run ends as aborted (send it again to exit now)", file=sys.stderr, flush=True)
        control.stop(f"stopped by {name}", grace)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)


@dataclass
class Workers:
    """The run's Ray side: connected, signals taken over, and its worker processes already starting."""

    ray_init_seconds: float
    placement: Placement
    slots: int
    control: RunControl
    actors: list[Any] | None = None  # the actors strategy's actors, created at once
    started_at: float = field(default_factory=time.monotonic)


def start_workers(cfg: RunConfig) -> Workers:
    """Connect to Ray and have it start this run's worker processes, importing the model's module there.

    Tasks get one warm-up task per slot; actors are created right away instead (an actor takes a process of its
    own, so warm-up tasks would only make Ray start twice as many).
    """
    seconds = connect(cfg.ray_address)
    control = RunControl()
    _on_signals(control, cfg.grace_period)
    placement = Placement(cfg.num_cpus_per_worker, cfg.num_gpus_per_worker, cfg.memory_per_worker,
                          cfg.device, cfg.max_retries)
    slots = cluster_slots(placement)
    module = cfg.model.partition(":")[0]
    workers = Workers(seconds, placement, slots, control)
    if cfg.strategy == "actors":
        from .ray_worker import start_actors

        # Restarted whenever its process dies (-1): a bundle that kills it has max_task_retries tries, but must not
        # leave the pool an actor short for the bundles after it (ray/actor.py, ActorClass.options: max_restarts).
        options = dict(max_restarts=-1, max_task_retries=placement.max_retries, **placement.options())
        workers.actors = start_actors(options, placement.device, cfg.num_actors or slots, module, cfg.pool,
                                      cfg.pool_idle_timeout)
    else:
        warm_up(placement, slots, module)
    return workers


