"""The run told on the RayJob it runs under: its progress as annotations (`kubectl get rayjob -o ...`, `kubectl
describe rayjob`), and Events at its start, at each failed shard (the first FAILED_SHARD_EVENTS) and at its end.

KubeRay has no progress fields (ray-project/kuberay#4341), so this is what a person who only has `kubectl` sees.

Where: a driver that Ray's job supervisor started for a KubeRay RayJob, with the chart's reporter token mounted at
TOKEN_DIR (rayJob.reportProgress). The RayJob is found from the Ray job's submission id: KubeRay submits it as
`<RayJob name>-<5 random characters>` (utils.GenerateRayJobId, v1.7.0) and keeps it in the RayJob's status.jobId,
which is checked before anything is written. Anywhere else, `from_environment` returns None after reading one
environment variable and looking for one file: no import, no thread, no cost.

Every API call happens in a thread of its own: a refusing API server never fails a run, a slow one delays only
its end, by END_WAIT at most. A refusal (no rights, the RayJob gone) is said once on stderr and ends the reporting.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

#: Where the chart mounts the token of the reporter's ServiceAccount (token, ca.crt, namespace): not the standard
#: in-cluster path, which the chart keeps empty in the Ray container.
TOKEN_DIR = "/var/run/secrets/shardscore.io/rayjob-report"
PREFIX = "shardscore.io/"
#: The progress line, as `shardscore run` prints it (progress.Progress.line); the tick logs it too.
PROGRESS_ANNOTATION = f"{PREFIX}progress"
#: At most one patch of the progress annotations per REPORT_EVERY seconds.
REPORT_EVERY = 10.0
#: Failed shards that get an Event of their own; one more Event says that more failed (the manifest has them all).
FAILED_SHARD_EVENTS = 10
#: Event messages are cut to this many characters (the API server's limit for events.k8s.io is 1 kB).
MESSAGE_CHARS = 1024
#: Seconds each API call may take; how long the run's end waits for the last patch and Events to go out.
REQUEST_TIMEOUT = 10.0
END_WAIT = 5.0


class RayJobApi(Protocol):
    """The three calls the reporter makes, and all its Role allows."""

    def get(self, name: str) -> dict[str, Any] | None: ...

    def annotate(self, name: str, annotations: dict[str, str]) -> None: ...

    def create_event(self, event: dict[str, Any]) -> None: ...


class KubeRayJobApi:
    """RayJobApi over the official `kubernetes` client, authenticated with the token at TOKEN_DIR."""

    def __init__(self, namespace: str, token_dir: str = TOKEN_DIR):
        from kubernetes import client
        from kubernetes.config.incluster_config import InClusterConfigLoader

        configuration = client.Configuration()
        InClusterConfigLoader(f"{token_dir}/token", f"{token_dir}/ca.crt").load_and_set(configuration)
        api = client.ApiClient(configuration)
        self._objects, self._core, self._error = client.CustomObjectsApi(api), client.CoreV1Api(api), client.ApiException
        self._namespace = namespace
        self._where = {"group": "ray.io", "version": "v1", "namespace": namespace, "plural": "rayjobs"}

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._objects.get_namespaced_custom_object(name=name, _request_timeout=REQUEST_TIMEOUT,
                                                               **self._where)
        except self._error as exc:
            if exc.status == 404:
                return None
            raise

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        # A JSON merge patch (the client's default for custom objects): only these annotations change.
        self._objects.patch_namespaced_custom_object(name=name, body={"metadata": {"annotations": annotations}},
                                                     _request_timeout=REQUEST_TIMEOUT, **self._where)

    def create_event(self, event: dict[str, Any]) -> None:
        self._core.create_namespaced_event(self._namespace, event, _request_timeout=REQUEST_TIMEOUT)


def rayjob_name(job_id: str) -> str:
    """The RayJob's name in a job id that KubeRay generated; empty when it cannot be one (a set spec.jobId may
    still match by chance: the RayJob's status.jobId is checked before anything is written)."""
    name, _, suffix = job_id.rpartition("-")
    return name if name and len(suffix) == 5 else ""


def from_environment(token_dir: str = TOKEN_DIR) -> RayJobReport | None:
    """The reporter for this driver, or None outside a KubeRay RayJob whose chart mounted the reporter's token."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST") or not os.path.exists(f"{token_dir}/token"):
        return None
    from ..lease import ray_job_id

    job_id = ray_job_id()
    name = rayjob_name(job_id)
    if not name:
        return None
    with open(f"{token_dir}/namespace", encoding="utf-8") as f:
        namespace = f.read().strip()
    return RayJobReport(lambda: KubeRayJobApi(namespace, token_dir), namespace, name, job_id)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _say(message: str) -> None:
    print(f"shardscore: {message}", file=sys.stderr, flush=True)


class RayJobReport:
    """Follows a run (run.RunWatcher) and tells it on the RayJob. The run's side only queues; the thread talks to
    the API server: each Event as it comes, the progress at most every `every` seconds."""

    def __init__(self, connect: Callable[[], RayJobApi], namespace: str, name: str, job_id: str,
                 every: float = REPORT_EVERY, clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = _say):
        self.connect, self.namespace, self.name, self.job_id = connect, namespace, name, job_id
        self.every, self.clock, self.say = every, clock, say
        self.snapshot: Callable[[], dict[str, Any]] | None = None
        self.failed_shards = 0
        self.host = socket.gethostname()  # the Events' source
        self._identity: dict[str, str] = {}
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="shardscore-rayjob-report", daemon=True)
        self._thread.start()

    # -- the run's side (run.RunWatcher, and cli.py at the end) --------------------------------------------------
    def started(self, run_id: str, output: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self._identity = {f"{PREFIX}run-id": run_id, f"{PREFIX}output": output}
        first = snapshot()
        self._event("Normal", "ScoringStarted", f"run {run_id}: {first['shards_total']} shards, "
                                                f"{first['rows_total']:,} rows to score into {output}")

    def shard_failed(self, shard_id: str, path: str, reason: str) -> None:
        self.failed_shards += 1
        if self.failed_shards <= FAILED_SHARD_EVENTS:
            self._event("Warning", "ShardFailed", f"shard {shard_id} ({path}): {reason}")
        elif self.failed_shards == FAILED_SHARD_EVENTS + 1:
            self._event("Warning", "ShardFailed", f"more than {FAILED_SHARD_EVENTS} shards failed: the run's "
                                                  "manifest names them all (shardscore status <output>)")

    def ended(self, state: str, summary: str) -> None:
        """The run's end (succeeded, failed, aborted): the last progress, the state, an Event; waits END_WAIT s
        at most for them to go out."""
        reason = {"succeeded": "ScoringSucceeded", "aborted": "ScoringAborted"}.get(state, "ScoringFailed")
        self._event("Normal" if state == "succeeded" else "Warning", reason, summary)
        self._queue.put(("end", state))
        self._thread.join(timeout=END_WAIT)

    def _event(self, kind: str, reason: str, message: str) -> None:
        self._queue.put(("event", (kind, reason, message, _now())))

    # -- the thread --------------------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            api, uid = self._open()
        except Exception as exc:  # noqa: BLE001 - reporting must never fail the run
            self.say(f"not reporting progress on RayJob {self.namespace}/{self.name}: {type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}")
            return
        next_patch = self.clock() + self.every
        while True:
            try:
                if self.clock() >= next_patch:
                    self._patch(api, "running")
                    next_patch = self.clock() + self.every
                try:
                    kind, item = self._queue.get(timeout=max(0.0, next_patch - self.clock()))
                except queue.Empty:
                    continue
                if kind == "event":
                    api.create_event(self._event_body(uid, *item))
                else:
                    self._patch(api, item)
                    return
            except Exception as exc:  # noqa: BLE001 - said once, then the run goes on without its report
                self.say(f"stopped reporting on RayJob {self.namespace}/{self.name}: {type(exc).__name__}: {exc}")
                return

    def _open(self) -> tuple[RayJobApi, str]:
        """The API, and the RayJob's uid for its Events, once its status.jobId is this Ray job's."""
        api = self.connect()
        obj = api.get(self.name)
        found = ((obj or {}).get("status") or {}).get("jobId")
        if found != self.job_id:
            raise LookupError(f"the Ray job {self.job_id} is not RayJob {self.name}'s"
                              + (f" (its job is {found})" if obj else " (there is no such RayJob)"))
        return api, obj["metadata"]["uid"]

    def _patch(self, api: RayJobApi, state: str) -> None:
        """The progress annotations and the state (the state alone when the run ended before scoring)."""
        if self.snapshot is None:
            if state != "running":
                api.annotate(self.name, {**self._identity, f"{PREFIX}state": state, f"{PREFIX}updated": _now()})
            return
        progress = dict(self.snapshot())
        api.annotate(self.name, {**self._identity, f"{PREFIX}state": state, PROGRESS_ANNOTATION: progress.pop("text"),
                                 f"{PREFIX}progress-json": json.dumps(progress, sort_keys=True, separators=(",", ":")),
                                 f"{PREFIX}updated": _now()})

    def _event_body(self, uid: str, kind: str, reason: str, message: str, at: str) -> dict[str, Any]:
        host = self.host
        return {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
                "involvedObject": {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": self.name,
                                   "namespace": self.namespace, "uid": uid},
                "type": kind, "reason": reason, "message": message[:MESSAGE_CHARS],
                "firstTimestamp": at, "lastTimestamp": at, "count": 1,
                "source": {"component": "shardscore", "host": host},
                "reportingComponent": "shardscore.io/driver", "reportingInstance": host}
