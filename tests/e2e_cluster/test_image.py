"""The project's image as the cluster runs it (what the Docker e2e checked before the real operator built the pods).

KubeRay runs `ulimit -n ...; ray start ...` through bash as the image's user; the chart's pods run as uid 1000 with
`ray` and `shardscore` on PATH; the health probes of KubeRay v1.6.2 are HTTP probes (the pods of the other tests
become Ready), those of v1.7.0 may exec `wget`. This checks the image itself: its metadata (from the Docker engine
it was built and loaded from), and, in a pod without the chart's securityContext, its own user and tools in a plain
and a login shell (KubeRay's ENABLE_LOGIN_SHELL).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .clusterlib import appversion, image, log, wait_for

TOOLS = "id -u; command -v bash wget ray shardscore python; ray --version; shardscore --version"


def test_the_image_labels_name_its_version_and_variant():
    if not shutil.which("docker"):
        pytest.skip("no docker here: the image's labels are read from the engine it was built in")
    proc = subprocess.run(["docker", "image", "inspect", image()], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"{image()} is not in this machine's Docker engine: {proc.stderr.strip()}")
    config = json.loads(proc.stdout)[0]["Config"]
    assert config["User"] in ("1000:1000", "1000"), config["User"]
    labels = config.get("Labels") or {}
    for key in ("title", "description", "version", "source", "licenses", "revision", "created"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing label org.opencontainers.image.{key}"
    # image/build.sh tags <version> for the CPU variant and <version>-<variant> for the others.
    assert labels["org.opencontainers.image.version"] == appversion(), labels
    assert labels.get("io.shardscore.torch-variant"), labels


def test_the_image_runs_as_uid_1000_with_bash_wget_ray_and_shardscore(kube, namespace):
    ns = namespace.name
    pods = []
    for shell, name in (("-c", "tools-plain-shell"), ("-lc", "tools-login-shell")):
        pods.append(name)
        kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                    "spec": {"restartPolicy": "Never", "containers": [{
                        "name": "tools", "image": image(), "imagePullPolicy": "IfNotPresent",
                        "command": ["bash", shell, TOOLS],
                        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}}}]}})
    for name in pods:
        pod = wait_for(lambda n=name: kube.get("pod", n, ns),
                       lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), 180, f"pod {name} to finish")
        out = kube("-n", ns, "logs", name).stdout
        log(f"{name}: {out.strip()!r}")
        assert pod["status"]["phase"] == "Succeeded", out
        lines = out.splitlines()
        assert lines[0] == "1000", out  # the image's own user: these pods set no runAsUser
        assert len([p for p in lines[1:6] if p.startswith("/")]) == 5, out
        assert "2.60.0" in out, out
