"""`shardscore tick`: one tick of the Helm chart's Kubernetes CronJob (scheduleMode cronJob).

The CronJob controller names each Job `<cronjob>-<unix minutes of the scheduled time>`; its pod runs this command.
The tick:

1. creates the tick's RayJob `<prefix>-<minutes>` from the chart's template (a ConfigMap, tick.json), with
   `--output <output>/run=<UTC YYYYMMDDTHHMMZ> ... --logical-time <the scheduled time> --latest-pointer
   <output>/_LATEST` and an ownerReference to
   the tick's Job (the CronJob's history limits delete old RayJobs with their Jobs). The logical time fills the
   placeholders of --input and --output (templates.py): a late or retried tick, or one started by hand for a past
   minute, reads and writes what its scheduled time names. A retried tick pod finds the same RayJob
   (AlreadyExists) and waits for it instead of starting a second run;
2. waits for it, logging its status as it changes;
3. deletes it when it failed (a failed run, its activeDeadlineSeconds, a failed submitter) or when the tick's own
   deadline passed. KubeRay v1.7.0 stops a Ray job only when its RayJob is deleted (the finalizer in
   RayJobReconciler.Reconcile); on a long-lived cluster (clusterSelector) it deletes nothing for a failed RayJob,
   so without this the failed job could go on running into the next tick.

Exit codes: 0 the run succeeded (or was created, without waiting); 1 it failed and a retried tick may run it again
(the chart's Job retries up to cronJob.backoffLimit); 2 bad configuration; 3 it failed for good: a deadline passed
or the operator refused the RayJob (the chart's podFailurePolicy fails the Job at once on 2 and 3).

The decisions (names, the RayJob object, what each status means) are pure functions below; `run_tick` is the
loop around them. What the chart gives the tick (tick.json) is tickconfig's; the calls to the Kubernetes API are
rayjobs'.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from ..templates import fill, iso
from .rayjob_report import PROGRESS_ANNOTATION
from .rayjobs import KubeRayJobs, RayJobs
from .tickconfig import LATEST_POINTER, LOGICAL_TIME, TickConfig, TickError

TICK_LABEL = "shardscore.io/tick"
SCHEDULED_ANNOTATION = "shardscore.io/scheduled-time"
OUTPUT_ANNOTATION = "shardscore.io/output"
_MINUTES = re.compile(r"-([0-9]{1,10})$")
EXIT_RETRY, EXIT_FINAL = 1, 3


# ----------------------------------------------------------------------------------------------- pure decisions

def scheduled_minutes(job_name: str) -> int:
    """The scheduled time, in unix minutes, from the tick Job's name `<cronjob>-<minutes>`."""
    match = _MINUTES.search(job_name or "")
    if not match:
        raise TickError(f"cannot read the scheduled minute from the Job name {job_name!r} (expected "
                        "<cronjob>-<unix minutes>); to run a tick by hand: kubectl create job "
                        "--from=cronjob/<cronjob> <cronjob>-$(( $(date +%s) / 60 ))")
    return int(match.group(1))


def rayjob_name(prefix: str, minutes: int) -> str:
    """The tick's RayJob: the same name for every retry of one tick, another for every tick."""
    return f"{prefix}-{minutes}"


def scheduled_time(minutes: int) -> datetime:
    """The tick's scheduled time, in UTC."""
    return datetime.fromtimestamp(minutes * 60, tz=timezone.utc)


def utc_stamp(minutes: int) -> str:
    return scheduled_time(minutes).strftime("%Y%m%dT%H%MZ")


def run_output(output: str, minutes: int) -> str:
    """Where the tick's run writes: `<output>/run=<UTC YYYYMMDDTHHMMZ>`."""
    return f"{output.rstrip('/')}/run={utc_stamp(minutes)}"


def entrypoint(argv: list[str], output_index: int, output: str, minutes: int, latest: str | None) -> str:
    """The RayJob entrypoint: argv with the tick's output, its logical time (the scheduled time) and the pointer to
    the newest complete tick's output (when there is one), quoted for the submitter's bash and the head's sh. argv
    holds neither option (tickconfig.check_templates)."""
    words = list(argv)
    words[output_index] = output
    return shlex.join([*words, LOGICAL_TIME, iso(scheduled_time(minutes)),
                       *([LATEST_POINTER, latest] if latest else [])])


def layout_output(cfg: TickConfig, minutes: int) -> tuple[str, str | None]:
    """Where the tick's run writes, and its --latest-pointer: per tick, a run folder and the pointer beside them;
    per date and incremental, the output itself (its placeholders the run fills), which needs no pointer."""
    if cfg.layout == "perTick":
        return run_output(cfg.output, minutes), latest_pointer(cfg.output, minutes)
    return cfg.output, None


def latest_pointer(output: str, minutes: int) -> str:
    """`<output>/_LATEST` (its placeholders filled): each tick's run moves it to its own folder once it succeeded,
    only forward (latest.py), so a consumer of the per-tick folders reads the newest complete one there."""
    return fill(output.rstrip("/"), scheduled_time(minutes), "--output") + "/_LATEST"


def build_rayjob(cfg: TickConfig, namespace: str, job_name: str, job_uid: str, minutes: int) -> dict[str, Any]:
    """The tick's RayJob object: the chart's template with its name, labels, owner and entrypoint."""
    obj = copy.deepcopy(cfg.rayjob)
    meta = obj.setdefault("metadata", {})
    meta["name"] = rayjob_name(cfg.name_prefix, minutes)
    meta["namespace"] = namespace
    meta.setdefault("labels", {})[TICK_LABEL] = str(minutes)
    out, latest = layout_output(cfg, minutes)
    meta.setdefault("annotations", {}).update({
        SCHEDULED_ANNOTATION: iso(scheduled_time(minutes)),
        OUTPUT_ANNOTATION: fill(out, scheduled_time(minutes), "--output")})  # where the run writes: filled
    meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}]
    obj["spec"]["entrypoint"] = entrypoint(cfg.argv, cfg.output_arg_index, out, minutes, latest)
    return obj


def ownership(obj: dict[str, Any], job_name: str, job_uid: str) -> str:
    """'ours' (owned by this tick's Job), 'stale' (being deleted, or owned by an earlier Job of the same name,
    which the garbage collector is removing), or 'foreign'."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "stale"
    jobs = [o for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"]
    if any(o.get("uid") == job_uid for o in jobs):
        return "ours"
    if any(o.get("name") == job_name for o in jobs):
        return "stale"
    return "foreign"


@dataclass(frozen=True)
class Decision:
    """What to do after looking at the RayJob: keep waiting, or finish (and whether to delete it first)."""

    done: bool
    succeeded: bool = False
    delete: bool = False
    retry: bool = False
    message: str = ""

    @property
    def exit_code(self) -> int:
        return 0 if self.succeeded else EXIT_RETRY if self.retry else EXIT_FINAL


def status_text(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    text = f"{status.get('jobDeploymentStatus') or 'New'}/{status.get('jobStatus') or '-'}"
    return text + (f" ({status['reason']})" if status.get("reason") else "")


def decide(obj: dict[str, Any], now: float, deadline: float | None) -> Decision:
    """The meaning of a RayJob's status (KubeRay v1.7.0 jobDeploymentStatus / jobStatus) for the tick."""
    status = obj.get("status") or {}
    deployment, job = status.get("jobDeploymentStatus") or "", status.get("jobStatus") or ""
    detail = status.get("message") or ""
    if deployment == "Complete":
        if job == "SUCCEEDED":
            return Decision(done=True, succeeded=True, message="succeeded")
        # STOPPED (someone stopped it on purpose) or another terminal state: nothing runs any more.
        return Decision(done=True, message=f"ended as {status_text(obj)} {detail}".strip())
    if deployment == "Failed":
        # A failed run, a failed submitter, or activeDeadlineSeconds. On a long-lived cluster the Ray job may still
        # be running: only deleting the RayJob makes KubeRay stop it. A retry may help, except after the deadline
        # (KubeRay's own backoffLimit does not retry DeadlineExceeded either).
        return Decision(done=True, delete=True, retry=status.get("reason") != "DeadlineExceeded",
                        message=f"failed: {status_text(obj)} {detail}".strip())
    if deployment == "ValidationFailed":
        # The operator refused the spec: nothing was started, keep the RayJob to show why.
        return Decision(done=True, message=f"was refused by the KubeRay operator: {detail}")
    if deadline is not None and now >= deadline:
        return Decision(done=True, delete=True, message=f"passed the tick's deadline while {status_text(obj)}")
    return Decision(done=False, message=status_text(obj))


# ----------------------------------------------------------------------------------------------- the loop

def log(message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} shardscore tick: {message}", flush=True)


def run_tick(cfg: TickConfig, api: RayJobs, namespace: str, job_name: str, job_uid: str, *,
             clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
             say: Callable[[str], None] = log, gone_timeout: float = 300.0) -> int:
    """One tick, from creating its RayJob to its end. Returns the exit code."""
    if not job_uid:
        raise TickError("the pod has no batch.kubernetes.io/controller-uid label: it must run in a Job")
    minutes = scheduled_minutes(job_name)
    deadline = None if cfg.deadline_seconds is None else minutes * 60 + cfg.deadline_seconds
    tick = _Tick(cfg, api, build_rayjob(cfg, namespace, job_name, job_uid, minutes), job_name, job_uid, deadline,
                 clock, sleep, say, gone_timeout)
    say(f"tick {utc_stamp(minutes)} (Job {job_name}): RayJob {namespace}/{tick.name}, output "
        f"{tick.body['metadata']['annotations'][OUTPUT_ANNOTATION]}")
    code = tick.start()
    if code is not None:
        return code
    if not cfg.wait:
        say("not waiting (cronJob.waitForCompletion=false)")
        return 0
    decision = tick.watch()
    if decision is None:
        say(f"RayJob {tick.name} was deleted by someone else")
        return EXIT_FINAL
    return tick.finish(decision)


@dataclass
class _Tick:
    """One tick's RayJob (`body`) and what looking after it takes: the API, the clock, the log."""

    cfg: TickConfig
    api: RayJobs
    body: dict[str, Any]
    job_name: str
    job_uid: str
    deadline: float | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    say: Callable[[str], None]
    gone_timeout: float

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def start(self) -> int | None:
        """Create this tick's RayJob, or find it (a retried tick). An exit code when the tick ends here."""
        while True:
            existing = self.api.get(self.name)
            if existing is None:
                if self.deadline is not None and self.clock() >= self.deadline:
                    self.say(f"the tick's deadline ({self.cfg.deadline_seconds:.0f} s after the scheduled time) has "
                             "passed; not starting the run")
                    return EXIT_FINAL
                if self.api.create(self.body):
                    self.say(f"created RayJob {self.name}")
                    return None
                self.sleep(1.0)  # AlreadyExists: created meanwhile, or still being deleted; look again
                continue
            owner = ownership(existing, self.job_name, self.job_uid)
            if owner == "ours":
                self.say(f"RayJob {self.name} exists already (a retried tick): waiting for it, not starting a "
                         "second run")
                return None
            if owner == "foreign":
                raise TickError(f"RayJob {self.body['metadata']['namespace']}/{self.name} exists and does not belong "
                                f"to Job {self.job_name}; delete it or run the tick under another Job name")
            if not self.wait_gone("from an earlier attempt is being deleted"):
                self.say(f"RayJob {self.name} was not deleted within {self.gone_timeout:.0f} s")
                return EXIT_RETRY

    def watch(self) -> Decision | None:
        """Follow the RayJob's status, logging each change, until it ends the tick; None when it is gone."""
        last = progress = None
        while True:
            obj = self.api.get(self.name)
            if obj is None:
                return None
            decision = decide(obj, self.clock(), self.deadline)
            if decision.done:
                return decision
            if decision.message != last:
                self.say(f"RayJob {self.name}: {decision.message}")
                last = decision.message
            # The run's own progress, which its driver keeps on the RayJob (rayjob_report.py).
            now = (obj.get("metadata", {}).get("annotations") or {}).get(PROGRESS_ANNOTATION)
            if now and now != progress:
                self.say(f"RayJob {self.name}: {now}")
                progress = now
            self.sleep(self.cfg.poll_seconds)

    def finish(self, decision: Decision) -> int:
        """Log how the run ended and delete its RayJob when the decision says so. Returns the exit code."""
        if decision.succeeded:
            self.say(f"RayJob {self.name} succeeded")
            return 0
        self.say(f"RayJob {self.name} {decision.message}" + ("" if decision.retry else " (not retried)"))
        if decision.delete:
            self.say(f"deleting RayJob {self.name}, so that KubeRay stops its Ray job and a retried tick can start "
                     "it again")
            self.api.delete(self.name)
            if self.wait_gone("is being deleted (KubeRay stops its Ray job first)"):
                self.say(f"RayJob {self.name} deleted")
            else:
                self.say(f"RayJob {self.name} still exists after {self.gone_timeout:.0f} s; its owner Job's "
                         "deletion removes it later")
        return decision.exit_code

    def wait_gone(self, why: str) -> bool:
        """Wait up to gone_timeout for the RayJob to disappear (KubeRay's finalizer stops its Ray job first)."""
        end = self.clock() + self.gone_timeout
        while self.clock() < end:
            if self.api.get(self.name) is None:
                return True
            self.say(f"RayJob {self.name} {why}; waiting until it is gone")
            self.sleep(min(self.cfg.poll_seconds, 5.0))
        return self.api.get(self.name) is None


# ----------------------------------------------------------------------------------------------- command line

def add_parser(subparsers: Any) -> None:
    tick = subparsers.add_parser("tick", help="one tick of the Helm chart's CronJob: create this tick's RayJob, "
                                              "wait for it, delete it when it fails")
    tick.add_argument("--config", default="/etc/shardscore/tick.json", help="tick.json from the chart's ConfigMap")
    tick.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"), help="default: POD_NAMESPACE")
    tick.add_argument("--job-name", default=os.environ.get("TICK_JOB_NAME"),
                      help="the tick's Job, <cronjob>-<unix minutes> (default: TICK_JOB_NAME)")
    tick.add_argument("--job-uid", default=os.environ.get("TICK_JOB_UID"), help="its uid (default: TICK_JOB_UID)")


def _stop(signum: int, _frame: Any) -> None:
    log(f"stopped by signal {signum}; the RayJob stays with its owner Job (deleting the Job deletes it)")
    sys.exit(128 + signum)


def main(args: argparse.Namespace) -> int:
    cfg = TickConfig.from_file(args.config)
    if not args.namespace:
        raise TickError("no namespace: set POD_NAMESPACE or --namespace")
    signal.signal(signal.SIGTERM, _stop)
    try:
        return run_tick(cfg, KubeRayJobs(args.namespace), args.namespace, args.job_name or "", args.job_uid or "")
    except TickError:
        raise
    except Exception as exc:  # the API refused or failed: name it, exit 1 so that the Job may retry
        log(f"error: {type(exc).__name__}: {exc}")
        return EXIT_RETRY
