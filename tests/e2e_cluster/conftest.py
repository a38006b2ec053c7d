"""Fixtures of the cluster e2e: the cluster under test, kubectl, helm, the S3 server on the host, a fresh namespace
per test (or per module, for the checks that share one install), and diagnostics on failure.

Every test here is marked `cluster`: `make test` deselects them (pytest.ini), `make e2e-cluster` runs them on the
local cluster and `make e2e-kind` on a kind cluster (clusterlib.Target says how the two differ).
"""

from __future__ import annotations

import uuid
from importlib.metadata import version
from pathlib import Path

import pytest

from support import make_tempdir, write_team_project

from .clusterlib import (HostS3, Helm, Kube, Namespace, Target, Unavailable, build_derived_image, diagnostics,
                         load_into_nodes, log, model_configmap, namespace_name, s3_secret, skip_without_base_image)

HERE = Path(__file__).resolve().parent


#: The files that run first, in this order: the cluster's own checks, then those that took longest in a parallel run
#: (2026-12-07, 2 workers), longest first, so that no long file starts when the others are done (tests/e2e_cluster/
#: run.sh: --no-loadscope-reorder keeps this order).
FIRST = ("test_cluster_smoke.py", "test_gpu_release.py", "test_mlflow_on_cluster.py", "test_schedules.py",
         "test_stop_paths.py", "test_own_model.py", "test_plain_manifests.py")

#: Test files that `-n N --dist loadfile` (tests/e2e_cluster/run.sh) runs on one pytest-xdist worker, one test after
#: the other, as if they were one file: their pods share the GPU node's two fake GPUs.
SAME_WORKER = {"test_cluster_smoke.py": "test_gpu_release.py",
               # and these two share one derived image (the derived_image fixture)
               "test_own_model.py": "test_mlflow_on_cluster.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: files keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, save SAME_WORKER. A file is one unit of work already (loadfile's LoadFileScheduling), so that
    a module's fixtures (the GPU release, the schedules' long-lived cluster) are made once and its tests run in order.
    Not --dist loadgroup: pytest-xdist 3.8.0 marks a group in the item's nodeid, which pytest 9.2 no longer lets a
    plugin change, so xdist_group marks are silently ignored (pytest-xdist issue 1386)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:  # LoadScopeScheduling's unit of work: here, a file
            path, _, name = super()._split_scope(nodeid).rpartition("/")
            return f"{path}/{SAME_WORKER.get(name, name)}"

    return ByFile(config, log)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test gets the diagnostics of every namespace it used, as a section of its report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        kube = item.funcargs.get("kube")
        for value in item.funcargs.values():
            for ns in _namespaces(value):
                if kube is not None:
                    try:
                        rep.sections.append((f"diagnostics {ns.name}", diagnostics(kube, ns.name)))
                    except Exception as exc:  # noqa: BLE001 - diagnostics must never hide the failure
                        rep.sections.append((f"diagnostics {ns.name}", f"could not gather them: {exc!r}"))


def _namespaces(value) -> list[Namespace]:
    if isinstance(value, Namespace):
        return [value]
    ns = getattr(value, "namespace", None)
    return [ns] if isinstance(ns, Namespace) else []


@pytest.fixture(scope="session")
def target() -> Target:
    try:
        return Target.from_env()
    except Unavailable as exc:
        pytest.skip(f"cluster e2e: {exc}")


@pytest.fixture(scope="session")
def kube(target) -> Kube:
    kube = Kube(target)
    version = kube("version", "-o", "json").stdout
    log(f"cluster under test: {target.kubeconfig} {target.context or ''}; KubeRay {target.kuberay_version}; "
        f"server {__import__('json').loads(version)['serverVersion']['gitVersion']}")
    return kube


@pytest.fixture(scope="session")
def helm(target) -> Helm:
    try:
        return Helm(target)
    except Unavailable as exc:
        pytest.skip(f"cluster e2e: {exc}")


@pytest.fixture(scope="session")
def s3(target) -> HostS3:
    try:
        server = HostS3.start(target.host_address)
    except Unavailable as exc:
        pytest.skip(f"cluster e2e: {exc}")
    log(f"S3 server on the host at {server.endpoint} (log {server.log_path})")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def derived_image(target) -> str:
    """An image derived from shardscore's (image/derived/build.sh) as a team builds one, loaded into the nodes: the
    team's package folder (tests/support.py, write_team_project, module `teammodel`) and the MLflow loader's
    libraries, at this venv's versions (the registry's model is pickled by its scikit-learn). test_own_model.py and
    test_mlflow_on_cluster.py run on one xdist worker (SAME_WORKER) and share it: each built and imported its own
    before (the MLflow scenario's build and import into both nodes: 142 s in a run of 2026-12-07)."""
    skip_without_base_image()
    ref = f"shardscore-derived:e2e-{uuid.uuid4().hex[:6]}"
    build_derived_image(ref, str(write_team_project(make_tempdir("team-") / "teammodel")),
                        f"mlflow-skinny=={version('mlflow-skinny')}", f"scikit-learn=={version('scikit-learn')}")
    load_into_nodes(ref)
    return ref


def make_namespace(kube: Kube, hint: str, s3: HostS3 | None = None, labels: dict | None = None) -> Namespace:
    """A fresh namespace; with s3, also its bucket (named after it), the credentials Secret and the test models."""
    ns = Namespace(namespace_name(hint), kube, labels or {}).create()
    if s3 is not None:
        s3.bucket(ns.name)
        kube.apply([s3_secret(ns.name), model_configmap(ns.name)])
    return ns


@pytest.fixture
def namespace(kube, request):
    """A fresh namespace for this test, without S3 (for objects that never run)."""
    ns = make_namespace(kube, request.node.name)
    yield ns
    ns.delete()


@pytest.fixture
def s3_namespace(kube, s3, request):
    """A fresh namespace for this test, with its S3 bucket (named after it) and the credentials Secret."""
    ns = make_namespace(kube, request.node.name, s3)
    yield ns
    ns.delete()
