"""Fixtures of the cluster e2e: the cluster under test, kubectl, helm, the S3 server on the host, a fresh namespace
per test (or per module, for the checks that share one install), and diagnostics on failure.

Every test here is marked `cluster`: `make test` deselects them (pytest.ini), `make e2e-cluster` runs them on the
local cluster and `make e2e-kind` on a kind cluster (clusterlib.Target says how the two differ).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .clusterlib import (HostS3, Helm, Kube, Namespace, Target, Unavailable, diagnostics, log, model_configmap,
                         namespace_name, s3_secret)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


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
