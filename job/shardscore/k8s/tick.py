"""`shardscore tick`: one tick of the Helm chart's Kubernetes CronJob (scheduleMode cronJob).

The CronJob controller names each Job `<cronjob>-<unix minutes of the scheduled time>`; its pod runs this command.
The tick:

1. creates the tick's RayJob `<prefix>-<minutes>` from the chart's template (a ConfigMap, tick.json), with
   `--output <output>/run=<UTC YYYYMMDDTHHMMZ>` and an ownerReference to the tick's Job (the CronJob's history
   limits delete old RayJobs with their Jobs). A retried tick pod finds the same RayJob (AlreadyExists) and waits
   for it instead of starting a second run;
2. waits for it, logging its status as it changes;
3. deletes it when it failed (a failed run, its activeDeadlineSeconds, a failed submitter) or when the tick's own
   deadline passed. KubeRay v1.7.0 stops a Ray job only when its RayJob is deleted (the finalizer in
   RayJobReconciler.Reconcile); on a long-lived cluster (clusterSelector) it deletes nothing for a failed RayJob,
   so without this the failed job could go on running into the next tick.

Exit codes: 0 the run succeeded (or was created, without waiting); 1 it failed and a retried tick may run it again
(the chart's Job retries up to cronJob.backoffLimit); 2 bad configuration; 3 it failed for good: a deadline passed
or the operator refused the RayJob (the chart's podFailurePolicy fails the Job at once on 2 and 3).

The decisions (names, the RayJob object, what each status means) are pure functions below; `run_tick` is the
loop around them and `KubeRayJobs` the thin layer over the official `kubernetes` client (an optional dependency:
`pip install shardscore[kubernetes]`; the image has it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from ..errors import ShardscoreError

TICK_LABEL = "shardscore.io/tick"
SCHEDULED_ANNOTATION = "shardscore.io/scheduled-time"
OUTPUT_ANNOTATION = "shardscore.io/output"
_MINUTES = re.compile(r"-([0-9]{1,10})$")
EXIT_RETRY, EXIT_FINAL = 1, 3


class TickError(ShardscoreError):
    """The tick cannot start: bad configuration, a Job name without minutes, a RayJob that is not this tick's."""


# ----------------------------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class TickConfig:
    """What the chart renders into tick.json."""

    name_prefix: str
    output: str
    argv: list[str]
    output_arg_index: int
    rayjob: dict[str, Any]
    wait: bool = True
    poll_seconds: float = 15.0
    deadline_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TickConfig":
        try:
            cfg = cls(name_prefix=data["namePrefix"], output=data["output"], argv=list(data["argv"]),
                      output_arg_index=int(data["outputArgIndex"]), rayjob=data["rayJob"],
                      wait=bool(data.get("wait", True)), poll_seconds=float(data.get("pollSeconds") or 15),
                      deadline_seconds=None if data.get("deadlineSeconds") is None else float(data["deadlineSeconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TickError(f"tick configuration: missing or bad field: {exc}") from exc
        if not 0 <= cfg.output_arg_index < len(cfg.argv) or cfg.argv[cfg.output_arg_index - 1] != "--output":
            raise TickError(f"tick configuration: argv[{cfg.output_arg_index}] is not the value of --output: {cfg.argv}")
        if cfg.rayjob.get("kind") != "RayJob" or not isinstance(cfg.rayjob.get("spec"), dict):
            raise TickError("tick configuration: rayJob is not a RayJob template")
        if cfg.poll_seconds <= 0:
            raise TickError(f"tick configuration: pollSeconds must be positive, got {cfg.poll_seconds}")
        return cfg

    @classmethod
    def from_file(cls, path: str) -> "TickConfig":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except OSError as exc:
            raise TickError(f"--config {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise TickError(f"--config {path}: not JSON: {exc}") from exc


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


def utc_stamp(minutes: int) -> str:
    return datetime.fromtimestamp(minutes * 60, tz=timezone.utc).strftime("%Y%m%dT%H%MZ")


def run_output(output: str, minutes: int) -> str:
    """Where the tick's run writes: `<output>/run=<UTC YYYYMMDDTHHMMZ>`."""
    return f"{output.rstrip('/')}/run={utc_stamp(minutes)}"


def entrypoint(argv: list[str], output_index: int, output: str) -> str:
    """The RayJob entrypoint: argv with the tick's output, quoted for the submitter's bash and the head's sh."""
    words = list(argv)
    words[output_index] = output
    return shlex.join(words)


def build_rayjob(cfg: TickConfig, namespace: str, job_name: str, job_uid: str, minutes: int) -> dict[str, Any]:
    """The tick's RayJob object: the chart's template with its name, labels, owner and entrypoint."""
    obj = copy.deepcopy(cfg.rayjob)
    meta = obj.setdefault("metadata", {})
    meta["name"] = rayjob_name(cfg.name_prefix, minutes)
    meta["namespace"] = namespace
    meta.setdefault("labels", {})[TICK_LABEL] = str(minutes)
    out = run_output(cfg.output, minutes)
    meta.setdefault("annotations", {}).update({
        SCHEDULED_ANNOTATION: datetime.fromtimestamp(minutes * 60, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        OUTPUT_ANNOTATION: out})
    meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid}]
    obj["spec"]["entrypoint"] = entrypoint(cfg.argv, cfg.output_arg_index, out)
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

class RayJobs(Protocol):
    """The three calls the tick makes (and its Role allows): create, get, delete RayJobs in one namespace."""

    def create(self, body: dict[str, Any]) -> bool:
        """Create; False when a RayJob of that name already exists."""

    def get(self, name: str) -> dict[str, Any] | None:
        """The RayJob, or None when there is none."""

    def delete(self, name: str) -> None:
        """Delete (no error when it is already gone)."""


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
    body = build_rayjob(cfg, namespace, job_name, job_uid, minutes)
    name = body["metadata"]["name"]
    deadline = None if cfg.deadline_seconds is None else minutes * 60 + cfg.deadline_seconds
    say(f"tick {utc_stamp(minutes)} (Job {job_name}): RayJob {namespace}/{name}, output "
        f"{body['metadata']['annotations'][OUTPUT_ANNOTATION]}")

    def wait_gone(why: str) -> bool:
        end = clock() + gone_timeout
        while clock() < end:
            if api.get(name) is None:
                return True
            say(f"RayJob {name} {why}; waiting until it is gone")
            sleep(min(cfg.poll_seconds, 5.0))
        return api.get(name) is None

    while True:  # create, or find this tick's RayJob
        existing = api.get(name)
        if existing is None:
            if deadline is not None and clock() >= deadline:
                say(f"the tick's deadline ({cfg.deadline_seconds:.0f} s after the scheduled time) has passed; "
                    "not starting the run")
                return EXIT_FINAL
            if api.create(body):
                say(f"created RayJob {name}")
                break
            sleep(1.0)  # AlreadyExists: created meanwhile, or still being deleted; look again
            continue
        owner = ownership(existing, job_name, job_uid)
        if owner == "ours":
            say(f"RayJob {name} exists already (a retried tick): waiting for it, not starting a second run")
            break
        if owner == "foreign":
            raise TickError(f"RayJob {namespace}/{name} exists and does not belong to Job {job_name}; delete it "
                            "or run the tick under another Job name")
        if not wait_gone("from an earlier attempt is being deleted"):
            say(f"RayJob {name} was not deleted within {gone_timeout:.0f} s")
            return EXIT_RETRY

    if not cfg.wait:
        say("not waiting (cronJob.waitForCompletion=false)")
        return 0

    last = None
    while True:
        obj = api.get(name)
        if obj is None:
            say(f"RayJob {name} was deleted by someone else")
            return EXIT_FINAL
        decision = decide(obj, clock(), deadline)
        if decision.message != last and not decision.done:
            say(f"RayJob {name}: {decision.message}")
            last = decision.message
        if decision.done:
            break
        sleep(cfg.poll_seconds)

    if decision.succeeded:
        say(f"RayJob {name} succeeded")
        return 0
    say(f"RayJob {name} {decision.message}" + ("" if decision.retry else " (not retried)"))
    if decision.delete:
        say(f"deleting RayJob {name}, so that KubeRay stops its Ray job and a retried tick can start it again")
        api.delete(name)
        if wait_gone("is being deleted (KubeRay stops its Ray job first)"):
            say(f"RayJob {name} deleted")
        else:
            say(f"RayJob {name} still exists after {gone_timeout:.0f} s; its owner Job's deletion removes it later")
    return decision.exit_code


# ----------------------------------------------------------------------------------------------- Kubernetes

class KubeRayJobs:
    """RayJobs (ray.io/v1) of one namespace through the official `kubernetes` client."""

    def __init__(self, namespace: str):
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise TickError("the `kubernetes` package is missing: pip install 'shardscore[kubernetes]'") from exc
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # outside a pod, trying it by hand
        self._api = client.CustomObjectsApi()
        self._error = client.ApiException
        self._namespace = namespace
        self._where = {"group": "ray.io", "version": "v1", "namespace": namespace, "plural": "rayjobs"}

    def create(self, body: dict[str, Any]) -> bool:
        try:
            # Strict: an unknown field fails the create instead of being dropped by the API server.
            self._api.create_namespaced_custom_object(body=body, field_validation="Strict", **self._where)
            return True
        except self._error as exc:
            if exc.status == 409:
                return False
            raise

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._api.get_namespaced_custom_object(name=name, **self._where)
        except self._error as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, name: str) -> None:
        try:
            self._api.delete_namespaced_custom_object(name=name, **self._where)
        except self._error as exc:
            if exc.status != 404:
                raise


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
