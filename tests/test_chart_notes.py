from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import chartlib as c
from chartlib import CPU, CRONJOB, RAYCRONJOB


def notes(values: list[Path], sets: list[str] = ()) -> str:
    args = [c.helm_bin(), "install", c.RELEASE, str(c.CHART), "-n", c.NAMESPACE, "--dry-run=client"]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[proc.stdout.index("NOTES:"):]


@pytest.mark.parametrize("values,needles", [
    (CPU, ["kubectl -n shardscore get rayjob scoring-shardscore", "logs -f job/scoring-shardscore", "ray job logs",
           "Output: s3://shardscore/output", "helm test scoring", "upgradeStrategy Recreate",
           "get secret scoring-shardscore -o jsonpath='{.data.auth_token}'", "NetworkPolicies",
           "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="]),  # the ray CLI sends the token only in token mode
    (CRONJOB, ["CronJob scoring-shardscore-tick", "s3://shardscore/scheduled/run=<UTC YYYYMMDDTHHMMZ>",
               "s3://shardscore/scheduled/_LATEST names the newest complete one",
               "create job --from=cronjob/scoring-shardscore-tick", "each on its own cluster"]),
    ((CRONJOB, "scheduleLayout=incremental"),
     ["scoring the input files no tick has committed into s3://shardscore/scheduled",
      "shardscore runs s3://shardscore/scheduled"]),
    (RAYCRONJOB, ["RayCronJob scoring-shardscore (needs the operator's RayCronJob feature gate)",
                  "get rayjobs -l ray.io/cronjob-name=scoring-shardscore", "each on its own cluster"]),
], ids=["cpu", "cronjob", "incremental", "raycronjob"])
def test_notes(values, needles):
    """values: a values file, or (a values file, one --set)."""
    text = notes([values[0]], values[1:]) if isinstance(values, tuple) else notes([values])
    for needle in needles:
        assert needle in text, text


def test_notes_list_raycronjob_children_by_kuberays_label():
    """KubeRay labels a RayCronJob's children ray.io/cronjob-name=<name> (constructRayJob in
    raycronjob_controller.go) and copies none of the RayCronJob's own labels: the chart's instance label finds none."""
    text = notes([RAYCRONJOB], ["rayJob.ephemeralCluster=false", "cluster.create=true"])
    assert "-l ray.io/cronjob-name=scoring-shardscore" in text and "rayjobs -l app.kubernetes.io/instance" not in text
    assert "KubeRay deletes no child" in text
