"""A team's own model on the cluster (issue 21 §2), the two ways docs/models-on-kubernetes.md gives, with a package
that is in no image of the project's: an image derived from shardscore's (image/derived/build.sh, loaded into the
nodes, named by `image.*`), and code shipped at submit time as a runtime_env zip on S3 (`shardscore package`,
`rayJob.runtimeEnvYAML`). In both, every row is scored exactly once by the team's code, and the output's model
identity covers that code: the next version of the zip gets another URI, and a rerun into the same output is refused
until --overwrite re-scores it.
"""

from __future__ import annotations

import json
import subprocess


from support import BIN, base_env, make_tempdir, write_team_project

from .clusterlib import assert_exact, fullname, job_logs, manifest_of, rayjob_succeeded, run_chart_once, write_input

MODEL = "teammodel.score:load_model"


def test_a_derived_image_scores_with_the_teams_package(kube, helm, s3, s3_namespace, derived_image):
    ns = s3_namespace.name
    ref = derived_image
    # As the image runs (uid 1000): the package is in shardscore's venv, and pandas is still shardscore's pin.
    check = subprocess.run(["docker", "run", "--rm", ref, "python", "-c",
                            "import teammodel.score, pandas; print(teammodel.score.__file__, pandas.__version__)"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.startswith("/opt/venv/lib/python3.11/site-packages/teammodel/"), \
        check.stderr
    assert check.stdout.split()[1] == "3.1.1", check.stdout  # requirements.lock's pandas, not a newer one

    data = write_input(s3, ns, "input", shards=3, rows=2000)
    repository, tag = ref.split(":")
    final = run_chart_once(kube, helm, s3, ns, "derived", {"image.repository": repository, "image.tag": tag,
                                                            "job.model": MODEL, "job.input": data.uri,
                                                            "job.output": f"s3://{ns}/scores"})
    assert rayjob_succeeded(final), final["status"]
    manifest = assert_exact(s3, data, "scores")
    assert manifest["model"]["spec"] == MODEL, manifest["model"]


def test_code_shipped_as_a_zip_on_s3_scores_and_its_next_version_is_another_model(kube, helm, s3, s3_namespace):
    ns = s3_namespace.name
    project = write_team_project(make_tempdir("team-") / "teamcode")

    def ship() -> str:
        r = subprocess.run([str(BIN / "shardscore"), "package", str(project), "--to", f"s3://{ns}/code",
                            "--s3-endpoint", s3.endpoint, "--json"], capture_output=True, text=True, timeout=120,
                           env=base_env())
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["uri"]

    data = write_input(s3, ns, "input", shards=3, rows=2000)
    first = ship()
    job = {"job.model": MODEL, "job.input": data.uri, "job.output": f"s3://{ns}/scores"}
    # Both versions on one RayCluster, the first release's: each Ray job gets its own working_dir and workers.
    cluster = fullname("zip1")
    final = run_chart_once(kube, helm, s3, ns, "zip1", {**job, "rayJob.runtimeEnvYAML": f"working_dir: {first}\n"},
                           on=cluster)
    assert rayjob_succeeded(final), final["status"]
    assert_exact(s3, data, "scores")
    identity = manifest_of(s3, ns, "scores")["model"]["identity"]

    write_team_project(project, even=False)
    second = ship()
    assert second != first, (first, second)
    final = run_chart_once(kube, helm, s3, ns, "zip2", {**job, "rayJob.runtimeEnvYAML": f"working_dir: {second}\n"},
                           on=cluster)  # refused
    assert not rayjob_succeeded(final), final["status"]
    said = (final["status"].get("message") or "") + "\n".join(job_logs(kube, ns, fullname("zip2")))
    assert "scored by another model" in said, said[-3000:]
    assert manifest_of(s3, ns, "scores")["model"]["identity"] == identity  # the refused run changed nothing
