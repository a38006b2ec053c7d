"""`shardscore tick` (job/shardscore/k8s/tick.py): its decisions, and its loop against an in-memory RayJob API.

The in-memory API stands in for the Kubernetes API server only in these unit tests: it keeps objects by name,
answers AlreadyExists, and deletes through a finalizer the way KubeRay's does (the object lingers with a
deletionTimestamp for a few reads). The tick against the real API server and the real KubeRay operator is the
cluster e2e's (issue 12).
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess

import pytest

from shardscore import cli
from shardscore.k8s import rayjobs, tick, tickconfig

MINUTES = 29395530  # 2025-11-21T13:30Z
JOB = f"scoring-shardscore-tick-{MINUTES}"
UID = "3f1c6a52-6a5e-4d4c-9f7e-0d1f2a3b4c5d"
NAME = f"scoring-shardscore-{MINUTES}"
ARGV = ["shardscore", "run", "--input", "s3://b/in", "--output", "s3://b/scheduled/", "--model", "pkg.mod:load",
        "--key-columns", "id,ts"]
TEMPLATED = ["shardscore", "run", "--input", "s3://b/in/date={date}/", "--output", "s3://b/scores/date={date}/",
             "--model", "pkg.mod:load"]


def config(**overrides) -> tickconfig.TickConfig:
    data = {"namePrefix": "scoring-shardscore", "output": "s3://b/scheduled", "argv": ARGV,
            "rayJob": {"apiVersion": "ray.io/v1", "kind": "RayJob",
                       "metadata": {"namespace": "ignored", "labels": {"app.kubernetes.io/instance": "scoring"}},
                       "spec": {"submissionMode": "K8sJobMode", "clusterSelector": {"ray.io/cluster": "c"}}},
            "wait": True, "pollSeconds": 15, "deadlineSeconds": None}
    data.update(overrides)
    return tickconfig.TickConfig.from_dict(data)


# ------------------------------------------------------------------------------------------- pure functions

def test_scheduled_minutes_come_from_the_job_name():
    assert tick.scheduled_minutes(JOB) == MINUTES
    assert tick.scheduled_minutes("x-0") == 0
    for bad in ("manual-run", "scoring-shardscore-tick", "tick-12345678901", "", "tick-12a"):
        with pytest.raises(tickconfig.TickError, match="scheduled minute"):
            tick.scheduled_minutes(bad)


def test_names_and_output_are_the_ticks():
    assert tick.rayjob_name("scoring-shardscore", MINUTES) == NAME
    assert tick.utc_stamp(MINUTES) == "20251121T1330Z"
    assert tick.run_output("s3://b/scheduled/", MINUTES) == "s3://b/scheduled/run=20251121T1330Z"
    assert tick.run_output("s3://b/scheduled", MINUTES + 60) == "s3://b/scheduled/run=20251121T1430Z"


def shell_words(command: str, shell: str) -> list[str]:
    out = subprocess.run([shell, "-c", f'printf "%s\\0" {command}'], capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:-1]


def test_entrypoint_reaches_the_head_as_argv():
    """The submitter's bash splits the entrypoint, `ray job submit` joins the words (shlex.join), the head's sh
    splits them again: the head must get the argv with the tick's output and its logical time, placeholders
    untouched by either shell (no brace expansion)."""
    for argv, out in [(ARGV, "s3://b/scheduled/run=20251121T1330Z"),
                      (TEMPLATED, "s3://b/scores/date={date}/h={hour:%H%M}/run=20251121T1330Z")]:
        words = shell_words(tick.entrypoint(argv, 5, out, MINUTES, "s3://b/{date}/_LATEST"), "bash")
        assert shell_words(shlex.join(words), "sh") == [*argv[:5], out, *argv[6:], "--logical-time",
                                                         "2025-11-21T13:30:00Z", "--latest-pointer",
                                                         "s3://b/{date}/_LATEST"]


def test_build_rayjob_fills_in_the_template_only():
    cfg = config()
    before = copy.deepcopy(cfg.rayjob)
    obj = tick.build_rayjob(cfg, "scoring", JOB, UID, MINUTES)
    assert cfg.rayjob == before, "the template is not modified"
    meta = obj["metadata"]
    assert meta["name"] == NAME and meta["namespace"] == "scoring"
    assert meta["labels"] == {"app.kubernetes.io/instance": "scoring", tick.TICK_LABEL: str(MINUTES)}
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": JOB, "uid": UID}]
    assert meta["annotations"] == {tick.SCHEDULED_ANNOTATION: "2025-11-21T13:30:00Z",
                                   tick.OUTPUT_ANNOTATION: "s3://b/scheduled/run=20251121T1330Z"}
    assert shlex.split(obj["spec"]["entrypoint"]) == [*ARGV[:5], "s3://b/scheduled/run=20251121T1330Z", *ARGV[6:],
                                                      "--logical-time", "2025-11-21T13:30:00Z",
                                                      "--latest-pointer", "s3://b/scheduled/_LATEST"]
    assert obj["spec"]["clusterSelector"] == {"ray.io/cluster": "c"}
    assert tick.build_rayjob(cfg, "scoring", JOB, "other-uid", MINUTES)["metadata"]["name"] == NAME


@pytest.mark.parametrize("layout, out, latest", [
    ("perTick", "s3://b/scheduled/run=20251121T1330Z", ["--latest-pointer", "s3://b/scheduled/_LATEST"]),
    ("perDate", "s3://b/scheduled", []),
    ("incremental", "s3://b/scheduled", []),
])
def test_each_layout_writes_where_it_says(layout: str, out: str, latest: list[str]):
    """perTick: a run folder and the pointer beside them; perDate and incremental: the output itself (the run
    fills its placeholders from --logical-time), with no pointer."""
    obj = tick.build_rayjob(config(layout=layout), "scoring", JOB, UID, MINUTES)
    words = shlex.split(obj["spec"]["entrypoint"])
    assert words == [*ARGV[:5], out, *ARGV[6:], "--logical-time", "2025-11-21T13:30:00Z", *latest]
    assert obj["metadata"]["annotations"][tick.OUTPUT_ANNOTATION] == out


def test_the_output_is_found_by_name_in_argv():
    """tick.json's argv may hold --output anywhere (tickconfig.FIELDS); the first one's value is the tick's."""
    moved = ["shardscore", "run", "--model", "pkg.mod:load", "--output", "s3://b/scheduled/", "--input", "s3://b/in",
             "--output", "s3://b/other"]
    cfg = config(argv=moved)
    assert cfg.output_arg_index == 5
    obj = tick.build_rayjob(cfg, "scoring", JOB, UID, MINUTES)
    assert shlex.split(obj["spec"]["entrypoint"]) == [*moved[:5], "s3://b/scheduled/run=20251121T1330Z", *moved[6:],
                                                      "--logical-time", "2025-11-21T13:30:00Z",
                                                      "--latest-pointer", "s3://b/scheduled/_LATEST"]


def test_the_ticks_scheduled_time_fills_the_runs_templates():
    """The entrypoint carries the templates and the scheduled time; parsed by the run's own CLI, they give the
    paths of the tick's date. The annotation names the folder the run writes, filled."""
    obj = tick.build_rayjob(config(output="s3://b/scores/date={date}/h={hour:%H%M}", argv=TEMPLATED), "scoring", JOB,
                            UID, MINUTES)
    assert obj["metadata"]["annotations"][tick.OUTPUT_ANNOTATION] == \
        "s3://b/scores/date=2025-11-21/h=1330/run=20251121T1330Z"
    argv = shlex.split(obj["spec"]["entrypoint"])
    run = cli.config.load(cli._flags(cli._parser().parse_args(argv[1:])), env={})
    assert run.input == "s3://b/in/date=2025-11-21/"
    assert run.output == "s3://b/scores/date=2025-11-21/h=1330/run=20251121T1330Z"
    assert run.given_paths().record() == {
        "logical_time": "2025-11-21T13:30:00Z",
        "templates": {"input": "s3://b/in/date={date}/", "output": "s3://b/scores/date={date}/h={hour:%H%M}/run=20251121T1330Z"}}
    late = tick.build_rayjob(config(argv=TEMPLATED), "scoring", JOB.replace(str(MINUTES), str(MINUTES - 1440)), UID,
                             MINUTES - 1440)
    assert shlex.split(late["spec"]["entrypoint"])[-3] == "2025-11-20T13:30:00Z", "a backfill tick: its own minute"
    assert run.latest_pointer == "s3://b/scores/date=2025-11-21/h=1330/_LATEST"  # filled: the pointer has no template


@pytest.mark.parametrize("change,needle", [
    ({"argv": [*ARGV, "--logical-time", "2025-01-01"]}, "argv sets --logical-time, which the tick sets"),
    ({"argv": [*ARGV, "--logical-time=2025-01-01"]}, "argv sets --logical-time"),
    ({"layout": "daily"}, "layout 'daily': choose one of perTick, perDate, incremental"),
    ({"argv": [*ARGV, "--latest-pointer", "s3://b/x"]}, "argv sets --latest-pointer, which the tick sets to "
                                                        "<job.output>/_LATEST"),
    ({"argv": [*ARGV[:3], "s3://b/in/{day}", *ARGV[4:]]}, "--input 's3://b/in/{day}': unknown placeholder {day}"),
    ({"argv": [*ARGV[:5], "s3://b/o/{date:%Q}", *ARGV[6:]]}, "--output 's3://b/o/{date:%Q}': bad format"),
    ({"output": "s3://b/o/{date"}, "--output 's3://b/o/{date': expected '}'"),
    ({"argv": ARGV[:4] + ARGV[6:]}, "argv has no value of --output"),
    ({"argv": ARGV[:5]}, "argv has no value of --output"),
    ({"rayJob": {"kind": "RayCluster", "spec": {}}}, "not a RayJob template"),
    ({"pollSeconds": -1}, "pollSeconds"),
    ({"namePrefix": None, "argv": None}, "missing or bad field"),
])
def test_bad_configuration_is_refused(change, needle):
    with pytest.raises(tickconfig.TickError, match=needle):
        config(**change)


def status(deployment: str = "", job: str = "", reason: str = "", message: str = "") -> dict:
    s = {k: v for k, v in {"jobDeploymentStatus": deployment, "jobStatus": job, "reason": reason,
                           "message": message}.items() if v}
    return {"metadata": {"name": NAME}, "status": s}


@pytest.mark.parametrize("obj,now,deadline,expect", [
    # (done, succeeded, delete, exit code)
    (status(), 0, None, (False, False, False, None)),
    (status("Initializing"), 0, None, (False, False, False, None)),
    (status("Running", "RUNNING"), 0, None, (False, False, False, None)),
    (status("Retrying"), 0, None, (False, False, False, None)),
    (status("Complete", "SUCCEEDED"), 0, None, (True, True, False, 0)),
    # Succeeded just after the deadline: still a success.
    (status("Complete", "SUCCEEDED"), 100, 50, (True, True, False, 0)),
    (status("Complete", "STOPPED"), 0, None, (True, False, False, 3)),
    (status("Failed", "FAILED", "AppFailed"), 0, None, (True, False, True, 1)),
    (status("Failed", "RUNNING", "SubmissionFailed"), 0, None, (True, False, True, 1)),
    (status("Failed", "RUNNING", "DeadlineExceeded"), 0, None, (True, False, True, 3)),
    (status("ValidationFailed", "", "ValidationFailed", "bad spec"), 0, None, (True, False, False, 3)),
    (status("Running", "RUNNING"), 100, 100, (True, False, True, 3)),
    (status("Running", "RUNNING"), 99, 100, (False, False, False, None)),
])
def test_decide(obj, now, deadline, expect):
    d = tick.decide(obj, now, deadline)
    assert (d.done, d.succeeded, d.delete) == expect[:3], d
    if d.done:
        assert d.exit_code == expect[3]


def test_ownership():
    def obj(owners, deleting=False):
        meta = {"ownerReferences": owners}
        if deleting:
            meta["deletionTimestamp"] = "2025-11-21T13:31:00Z"
        return {"metadata": meta}
    mine = {"kind": "Job", "name": JOB, "uid": UID}
    assert tick.ownership(obj([mine]), JOB, UID) == "ours"
    assert tick.ownership(obj([mine], deleting=True), JOB, UID) == "stale"
    assert tick.ownership(obj([{**mine, "uid": "older"}]), JOB, UID) == "stale"
    assert tick.ownership(obj([]), JOB, UID) == "foreign"
    assert tick.ownership(obj([{"kind": "Job", "name": "other", "uid": "x"}]), JOB, UID) == "foreign"


# ------------------------------------------------------------------------------------------- the loop

class FakeRayJobs:
    """RayJobs by name. `script` gives the statuses the operator writes, one per `get` while waiting; delete()
    marks the object deleting for `finalizer_reads` reads before it is gone (KubeRay's finalizer)."""

    def __init__(self, script=(), finalizer_reads=2, existing=None):
        self.objects = {} if existing is None else {existing["metadata"]["name"]: existing}
        self.script = list(script)
        self.finalizer_reads = finalizer_reads
        self.calls = []
        self._deleting = {}

    def create(self, body):
        self.calls.append(("create", body["metadata"]["name"]))
        name = body["metadata"]["name"]
        if name in self.objects:
            return False
        self.objects[name] = copy.deepcopy(body)
        return True

    def get(self, name):
        self.calls.append(("get", name))
        if name in self._deleting:
            self._deleting[name] -= 1
            if self._deleting[name] < 0:
                del self._deleting[name]
                self.objects.pop(name, None)
        obj = self.objects.get(name)
        if obj is not None and self.script and name not in self._deleting:
            obj["status"] = self.script.pop(0)
        return copy.deepcopy(obj)

    def delete(self, name):
        self.calls.append(("delete", name))
        if name in self.objects:
            self.objects[name].setdefault("metadata", {})["deletionTimestamp"] = "now"
            self._deleting[name] = self.finalizer_reads

    def count(self, verb):
        return sum(1 for c in self.calls if c[0] == verb)


class Clock:
    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def run(api, cfg=None, start=MINUTES * 60 + 30, job=JOB, uid=UID):
    clock, lines = Clock(start), []
    code = tick.run_tick(cfg or config(), api, "scoring", job, uid, clock=clock, sleep=clock.sleep,
                         say=lines.append, gone_timeout=60)
    return code, lines, clock


def st(deployment, job="", reason=""):
    return status(deployment, job, reason)["status"]


def test_a_successful_tick_creates_one_rayjob_and_waits_for_it():
    api = FakeRayJobs([st("Initializing"), st("Running", "RUNNING"), st("Running", "RUNNING"),
                       st("Complete", "SUCCEEDED")])
    code, lines, _ = run(api)
    assert code == 0
    assert api.count("create") == 1 and api.count("delete") == 0
    assert api.objects[NAME]["metadata"]["ownerReferences"][0]["uid"] == UID
    text = "\n".join(lines)
    assert "RayJob scoring/" + NAME in text and "run=20251121T1330Z" in text
    # Each status is logged once, when it changes.
    assert sum("Running/RUNNING" in line for line in lines) == 1 and "succeeded" in lines[-1]


def test_a_retried_tick_finds_its_rayjob_instead_of_starting_another():
    first = FakeRayJobs([st("Running", "RUNNING")])
    first.create(tick.build_rayjob(config(), "scoring", JOB, UID, MINUTES))
    first.script = [st("Running", "RUNNING"), st("Complete", "SUCCEEDED")]
    code, lines, _ = run(first)
    assert code == 0 and first.count("create") == 1, first.calls  # only the original create
    assert any("exists already" in line for line in lines)


def test_a_failed_run_is_deleted_so_that_kuberay_stops_it_and_a_retry_may_run_it():
    api = FakeRayJobs([st("Running", "RUNNING"), st("Failed", "FAILED", "AppFailed")])
    code, lines, _ = run(api)
    assert code == tick.EXIT_RETRY == 1
    assert api.count("delete") == 1 and NAME not in api.objects
    assert any("deleted" in line for line in lines)
    # The retried pod of the same tick starts the run again (it resumes from the commit records).
    api.script = [st("Complete", "SUCCEEDED")]
    code, _, _ = run(api)
    assert code == 0 and api.count("create") == 2


def test_a_failed_submitter_is_deleted_too():
    api = FakeRayJobs([st("Failed", "RUNNING", "SubmissionFailed")])
    assert run(api)[0] == 1 and api.count("delete") == 1


def test_the_rayjob_deadline_deletes_and_is_final():
    api = FakeRayJobs([st("Running", "RUNNING"), st("Failed", "RUNNING", "DeadlineExceeded")])
    code, lines, _ = run(api)
    assert code == tick.EXIT_FINAL and api.count("delete") == 1
    assert "not retried" in "\n".join(lines)


def test_the_ticks_own_deadline_deletes_the_run_and_a_retry_does_not_start_it_again():
    api = FakeRayJobs([st("Running", "RUNNING")] * 100)
    cfg = config(deadlineSeconds=120, pollSeconds=15)
    code, lines, clock = run(api, cfg, start=MINUTES * 60 + 10)
    assert code == tick.EXIT_FINAL and api.count("delete") == 1
    assert MINUTES * 60 + 120 <= clock.now < MINUTES * 60 + 120 + 60
    assert any("deadline" in line for line in lines)
    api.script = []
    code, lines, _ = run(api, cfg, start=MINUTES * 60 + 200)
    assert code == tick.EXIT_FINAL and api.count("create") == 1, "no new run after the deadline"


def test_a_refused_rayjob_is_kept_and_final():
    api = FakeRayJobs([st("ValidationFailed", "", "ValidationFailed")])
    code, lines, _ = run(api)
    assert code == tick.EXIT_FINAL and api.count("delete") == 0 and NAME in api.objects


def test_a_stopped_run_is_final_and_kept():
    api = FakeRayJobs([st("Complete", "STOPPED")])
    assert run(api)[0] == tick.EXIT_FINAL and api.count("delete") == 0


def test_a_rayjob_from_an_earlier_attempt_being_deleted_is_waited_for():
    old = tick.build_rayjob(config(), "scoring", JOB, "earlier-uid", MINUTES)
    api = FakeRayJobs(existing=old, finalizer_reads=2)
    api.delete(NAME)  # the garbage collector removes the earlier Job's RayJob
    api.script = [st("Complete", "SUCCEEDED")]
    code, lines, _ = run(api)
    assert code == 0 and api.count("create") == 1
    assert api.objects[NAME]["metadata"]["ownerReferences"][0]["uid"] == UID
    assert any("earlier attempt" in line for line in lines)


def test_a_foreign_rayjob_of_the_same_name_is_not_touched():
    foreign = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": NAME}, "spec": {}}
    api = FakeRayJobs(existing=foreign)
    with pytest.raises(tickconfig.TickError, match="does not belong"):
        run(api)
    assert api.count("create") == 0 and api.count("delete") == 0


def test_without_waiting_the_tick_only_creates():
    api = FakeRayJobs()
    assert run(api, config(wait=False))[0] == 0
    assert api.count("create") == 1 and api.count("get") == 1


def test_a_rayjob_deleted_by_someone_else_fails_the_tick():
    api = FakeRayJobs([st("Running", "RUNNING")] * 5)
    real_get = api.get

    def get(name):
        obj = real_get(name)
        if api.count("get") > 2:  # the lookup before create, one status poll, then it is gone
            api.objects.pop(name, None)
            return None
        return obj

    api.get = get
    code, lines, _ = run(api)
    assert code == tick.EXIT_FINAL and "deleted by someone else" in lines[-1]


def test_a_tick_outside_a_job_or_with_a_bad_name_does_nothing():
    api = FakeRayJobs()
    with pytest.raises(tickconfig.TickError, match="controller-uid"):
        run(api, uid="")
    with pytest.raises(tickconfig.TickError, match="scheduled minute"):
        run(api, job="manual-run")
    assert not api.calls


# ------------------------------------------------------------------------------------------- the command

def test_tick_is_a_shardscore_subcommand(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "scoring")
    monkeypatch.setenv("TICK_JOB_NAME", JOB)
    monkeypatch.setenv("TICK_JOB_UID", UID)
    args = cli._parser().parse_args(["tick", "--config", str(tmp_path / "tick.json")])
    assert (args.command, args.namespace, args.job_name, args.job_uid) == ("tick", "scoring", JOB, UID)
    # A missing configuration is an error naming it (exit 2), before any API call.
    assert cli.main(["tick", "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"namePrefix": "x"}))
    assert cli.main(["tick", "--config", str(tmp_path / "bad.json")]) == 2
    assert "missing or bad field" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the client layer

class FakeAPIServer:
    """Just enough of the Kubernetes API for RayJobs in one namespace, over HTTP: what KubeRayJobs sends."""

    def __init__(self):
        import http.server
        import threading

        self.objects, self.requests = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def status(self, code, reason):
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                  "code": code})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(("POST", self.path, self.headers.get("Authorization")))
                name = body["metadata"]["name"]
                if name in server.objects:
                    return self.status(409, "AlreadyExists")
                server.objects[name] = body
                self.reply(201, body)

            def do_GET(self):
                server.requests.append(("GET", self.path, self.headers.get("Authorization")))
                obj = server.objects.get(self.path.rsplit("/", 1)[-1])
                return self.reply(200, obj) if obj else self.status(404, "NotFound")

            def do_DELETE(self):
                server.requests.append(("DELETE", self.path, self.headers.get("Authorization")))
                name = self.path.rsplit("/", 1)[-1]
                if server.objects.pop(name, None) is None:
                    return self.status(404, "NotFound")
                self.reply(200, {"kind": "Status", "status": "Success"})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_kubernetes_client_layer_calls_the_rayjob_endpoints(tmp_path, monkeypatch):
    pytest.importorskip("kubernetes", reason="the kubernetes client is not installed (make venv)")
    server = FakeAPIServer()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": server.url}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            "users": [{"name": "t", "user": {"token": "tick-token"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        api = rayjobs.KubeRayJobs("scoring")
        body = tick.build_rayjob(config(), "scoring", JOB, UID, MINUTES)
        assert api.get(NAME) is None
        assert api.create(body) is True
        assert api.create(body) is False  # AlreadyExists
        assert api.get(NAME)["metadata"]["ownerReferences"][0]["uid"] == UID
        api.delete(NAME)
        api.delete(NAME)  # already gone: no error
        assert api.get(NAME) is None
        base = "/apis/ray.io/v1/namespaces/scoring/rayjobs"
        assert [(m, p.split("?")[0]) for m, p, _ in server.requests] == [
            ("GET", f"{base}/{NAME}"), ("POST", base), ("POST", base), ("GET", f"{base}/{NAME}"),
            ("DELETE", f"{base}/{NAME}"), ("DELETE", f"{base}/{NAME}"), ("GET", f"{base}/{NAME}")]
        assert "fieldValidation=Strict" in server.requests[1][1]
        assert {auth for _, _, auth in server.requests} == {"Bearer tick-token"}
    finally:
        server.close()


# ------------------------------------------------------------------------------------------- the package boundary

def test_only_the_cli_imports_the_k8s_package():
    """shardscore.k8s (the tick, the preStop hook) is no part of a run: no module of the core imports it."""
    import ast
    from pathlib import Path

    package = Path(tick.__file__).resolve().parents[1]
    importers = set()
    for path in package.rglob("*.py"):
        if "k8s" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if any("k8s" in f"{module}.{name}".split(".") for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"cli.py"}
