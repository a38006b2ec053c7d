"""Issue 22 §1: the run told on its RayJob (job/shardscore/k8s/rayjob_report.py).

The reporter is driven here against FakeRayJobApi, an in-memory stand-in for the API server (named as such: the
real one is tests/e2e_cluster/test_rayjob_report.py's, on the local cluster with the KubeRay operator). The clock
is the test's, so the rate limit is counted, not timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shardscore.k8s import rayjob_report
from shardscore.k8s.rayjob_report import FAILED_SHARD_EVENTS, PREFIX, RayJobReport, rayjob_name

REPO = Path(__file__).resolve().parents[1]


class FakeRayJobApi:
    """An in-memory RayJob and the calls the reporter makes (a stand-in for the API server: see the module doc)."""

    def __init__(self, job_id: str = "nightly-abcde", refuse: str = ""):
        self.obj = {"metadata": {"name": "nightly", "uid": "u-1", "annotations": {}}, "status": {"jobId": job_id}}
        self.refuse = refuse
        self.patches: list[dict[str, str]] = []
        self.events: list[dict] = []

    def get(self, name: str) -> dict | None:
        return self.obj if name == "nightly" else None

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        if self.refuse == "patch":
            raise PermissionError("rayjobs.ray.io \"nightly\" is forbidden")
        self.patches.append(annotations)
        self.obj["metadata"]["annotations"].update(annotations)

    def create_event(self, event: dict) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snapshot(done: int = 0, failed: int = 0) -> dict:
    return {"shards_finished": done, "shards_total": 400, "shards_failed": failed, "rows": done * 1000,
            "rows_total": 400_000, "rows_per_second": 1200.0, "elapsed_seconds": 10.0, "eta": "0:04:10",
            "text": f"{done}/400 shards, {done}k rows, ETA 0:04:10, {failed} failed"}


def reporter(api: FakeRayJobApi, clock: Clock, said: list[str]) -> RayJobReport:
    return RayJobReport(lambda: api, "scoring", "nightly", "nightly-abcde", every=10.0, clock=clock, say=said.append)


def test_the_run_is_told_in_order_and_the_progress_at_most_once_per_interval():
    api, clock, said = FakeRayJobApi(), Clock(), []
    report = reporter(api, clock, said)
    state = {"done": 0}
    report.started("run-1", "s3://bucket/scores", lambda: snapshot(state["done"]))
    for n in range(30):  # many events within one interval: the progress is not patched for each
        state["done"] = n
        report.shard_failed(f"s{n:03d}", f"s3://bucket/in/part-{n}.parquet", "ValueError: bad row")
    clock.now = 10.0  # one interval later: the next thing the thread does is one patch
    report.shard_failed("s100", "s3://bucket/in/part-100.parquet", "ValueError: bad row")
    report.ended("failed", "run failed: 369/400 shards committed, 31 failed")
    assert not said
    reasons = [e["reason"] for e in api.events]
    assert reasons == ["ScoringStarted", *["ShardFailed"] * (FAILED_SHARD_EVENTS + 1), "ScoringFailed"]
    assert "400 shards, 400,000 rows to score into s3://bucket/scores" in api.events[0]["message"]
    assert api.events[1]["message"] == "shard s000 (s3://bucket/in/part-0.parquet): ValueError: bad row"
    assert api.events[1]["type"] == "Warning" and api.events[0]["type"] == "Normal"
    assert "more than 10 shards failed" in api.events[FAILED_SHARD_EVENTS + 1]["message"]
    assert all(e["involvedObject"] == {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "nightly",
                                       "namespace": "scoring", "uid": "u-1"} for e in api.events)
    # One patch at the interval (running), one at the end (failed); none for the 30 events before.
    assert [p[f"{PREFIX}state"] for p in api.patches] == ["running", "failed"]
    final = api.obj["metadata"]["annotations"]
    assert final[f"{PREFIX}progress"] == "29/400 shards, 29k rows, ETA 0:04:10, 0 failed"
    assert json.loads(final[f"{PREFIX}progress-json"])["shards_total"] == 400
    assert final[f"{PREFIX}run-id"] == "run-1" and final[f"{PREFIX}output"] == "s3://bucket/scores"


def test_a_run_that_ends_before_scoring_still_says_why():
    api, clock, said = FakeRayJobApi(), Clock(), []
    reporter(api, clock, said).ended("failed", "no input at s3://bucket/in")
    assert [(e["reason"], e["message"]) for e in api.events] == [("ScoringFailed", "no input at s3://bucket/in")]
    assert api.patches == [{f"{PREFIX}state": "failed", f"{PREFIX}updated": api.patches[0][f"{PREFIX}updated"]}]


@pytest.mark.parametrize("job_id", ["nightly-zzzzz", ""])
def test_a_rayjob_of_another_ray_job_is_never_written(job_id: str):
    """The name was guessed from the submission id: the RayJob's status.jobId must be this Ray job's."""
    api, clock, said = FakeRayJobApi(job_id=job_id), Clock(), []
    report = reporter(api, clock, said)
    report.started("run-1", "out", snapshot)
    report.ended("succeeded", "done")
    assert not api.patches and not api.events
    assert len(said) == 1 and "the Ray job nightly-abcde is not RayJob nightly's" in said[0], said


def test_a_refusal_is_said_once_and_the_run_goes_on():
    api, clock, said = FakeRayJobApi(refuse="patch"), Clock(), []
    report = reporter(api, clock, said)
    report.started("run-1", "out", snapshot)
    clock.now = 10.0
    report.shard_failed("s1", "p", "r")
    report.ended("succeeded", "done")  # returns: the thread has stopped reporting
    assert len(said) == 1 and said[0].startswith("stopped reporting on RayJob scoring/nightly: PermissionError"), said


@pytest.mark.parametrize(("job_id", "name"), [("ticks-shardscore-29941519-2gkjt", "ticks-shardscore-29941519"),
                                              ("nightly-abcde", "nightly"), ("my-own-job-id", ""), ("", "")])
def test_the_rayjob_is_named_by_kuberays_job_id(job_id: str, name: str):
    assert rayjob_name(job_id) == name


def test_outside_kubernetes_nothing_is_imported_and_no_thread_starts(tmp_path: Path):
    code = ("import sys, threading; from shardscore.k8s import rayjob_report as r; "
            f"print(r.from_environment(token_dir={str(tmp_path)!r}), 'kubernetes' in sys.modules, "
            "threading.active_count())")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "job"),
           "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"metadata": {"job_submission_id": "nightly-abcde"}})}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False", "1"]
    # In a pod (the API server's address set) without the chart's token: nothing either.
    env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "False", "1"]


def test_with_the_token_the_reporter_follows_the_rayjob_of_its_ray_job(tmp_path: Path, monkeypatch):
    for name, text in (("token", "t"), ("ca.crt", ""), ("namespace", "scoring\n")):
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {"job_submission_id": "nightly-abcde"}}))
    monkeypatch.setattr(rayjob_report, "KubeRayJobApi", lambda namespace, token_dir: FakeRayJobApi())
    report = rayjob_report.from_environment(token_dir=str(tmp_path))
    assert report is not None and (report.namespace, report.name, report.job_id) == ("scoring", "nightly",
                                                                                    "nightly-abcde")
    report.ended("succeeded", "done")
