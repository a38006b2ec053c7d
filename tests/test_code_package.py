"""Model code shipped at submit time (issue 21 §2): `shardscore package` zips a folder under a name from its content,
Ray's own runtime_env unpacks it where the job imports it, and a worker whose copy of the code differs from the
driver's refuses to score."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import BIN, base_env, make_tempdir, start_ray_cluster, stop_ray_cluster, write_team_project

def package(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "shardscore"), "package", *args], env=base_env(), capture_output=True,
                          text=True, timeout=120)


def test_one_content_one_name_whatever_the_clock_and_the_byte_code(tmp_path: Path):
    from shardscore import code_package

    project = write_team_project(tmp_path / "proj")
    first = code_package.build(str(project))
    (project / "teammodel" / "__pycache__").mkdir()
    (project / "teammodel" / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\0junk")
    (project / "teammodel" / "score.py").touch()
    again = code_package.build(str(project))
    assert (again.name, again.data) == (first.name, first.data)
    assert first.name.startswith("proj-") and first.name.endswith(".zip") and first.files == 3

    write_team_project(project, even=False)
    changed = code_package.build(str(project))
    (project / "teammodel" / "score.py").chmod(0o755)
    executable = code_package.build(str(project))
    assert len({first.name, changed.name, executable.name}) == 3


def test_rays_own_unpacking_puts_the_folders_contents_at_the_working_directorys_root(tmp_path: Path):
    """Ray strips a remote zip's single top folder (packaging.py, unzip_package with remove_top_level_directory=True,
    as download_and_unpack_package calls it for s3:// URIs): what is left must be the folder's contents."""
    from ray._private.runtime_env.packaging import unzip_package

    from shardscore import code_package

    built = code_package.build(str(write_team_project(tmp_path / "proj")))
    zipped = tmp_path / built.name
    zipped.write_bytes(built.data)
    assert {n.split("/")[0] for n in zipfile.ZipFile(zipped).namelist()} == {built.name.removesuffix(".zip")}
    unzip_package(str(zipped), str(tmp_path / "working_dir"), remove_top_level_directory=True, unlink_zip=False)
    assert sorted(p.relative_to(tmp_path / "working_dir").as_posix()
                  for p in (tmp_path / "working_dir").rglob("*") if p.is_file()) == \
        ["pyproject.toml", "teammodel/__init__.py", "teammodel/score.py"]


@pytest.mark.s3
def test_the_zip_goes_up_once_and_the_values_that_ship_it_are_printed(s3, tmp_path: Path):
    bucket, client = s3.new_bucket("code")
    project = write_team_project(tmp_path / "proj")
    first = package(str(project), "--to", f"s3://{bucket}/code/", "--s3-endpoint", s3.endpoint, "--json")
    assert first.returncode == 0, first.stderr
    found = json.loads(first.stdout)
    assert found["uploaded"] and found["uri"].startswith(f"s3://{bucket}/code/proj-")
    key = found["uri"].removeprefix(f"s3://{bucket}/")
    # No temporary left (keys ending in "/" are the folder markers pyarrow's S3 filesystem writes).
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"] if not o["Key"].endswith("/")] == [key]
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == \
        __import__("shardscore.code_package").code_package.build(str(project)).data

    again = package(str(project), "--to", f"s3://{bucket}/code", "--s3-endpoint", s3.endpoint)
    assert again.returncode == 0, again.stderr
    assert f"already at {found['uri']}" in again.stdout
    assert f"rayJob:\n  runtimeEnvYAML: |\n    working_dir: {found['uri']}" in again.stdout


def test_what_cannot_be_packed_or_put_is_named(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    project = write_team_project(tmp_path / "proj")
    for args, named in ((["missing", "--to", str(tmp_path)], "missing is not a folder"),
                        ([str(tmp_path / "file"), "--to", str(tmp_path)], "file is not a folder"),
                        ([str(tmp_path / "empty"), "--to", str(tmp_path)], "empty holds no file to pack"),
                        ([str(project), "--to", str(tmp_path / "file" / "sub")], f"{tmp_path}/file/sub cannot be written")):
        r = package(*args)
        assert r.returncode == 2 and named in r.stderr and len(r.stderr.splitlines()) == 1, (args, r.stderr)


def _load_and_pickle(project: Path, out: Path) -> None:
    """In a process of its own, as the driver: load the team's model from `project` and pickle it for the workers."""
    script = ("import sys, cloudpickle; sys.path.insert(0, sys.argv[1]);"
              "from shardscore.model import ModelSpec, load;"
              "open(sys.argv[2], 'wb').write(cloudpickle.dumps(load(ModelSpec('teammodel.score:load_model'))))")
    subprocess.run([sys.executable, "-c", script, str(project), str(out)], check=True, env=base_env(), timeout=120,
                   cwd=out.parent)


def _check_in_worker(project: Path, pickled: Path) -> subprocess.CompletedProcess:
    """In a process of its own, as a worker whose node has `project`: unpickle the model and check its code."""
    script = ("import sys, cloudpickle; sys.path.insert(0, sys.argv[1]);"
              "s = cloudpickle.loads(open(sys.argv[2], 'rb').read()); s.check_code();"
              "print('checked', sys.modules['teammodel.score'].EVEN)")
    return subprocess.run([sys.executable, "-c", script, str(project), str(pickled)], env=base_env(),
                          capture_output=True, text=True, timeout=120, cwd=pickled.parent)


def test_a_worker_whose_copy_of_the_code_differs_from_the_drivers_refuses_to_score(tmp_path: Path):
    """model.Scorer.check_code: the same files elsewhere pass; other files are refused, naming where they are."""
    driver = write_team_project(tmp_path / "driver")
    pickled = tmp_path / "model.pkl"
    _load_and_pickle(driver, pickled)
    same = _check_in_worker(write_team_project(tmp_path / "same"), pickled)
    assert same.returncode == 0 and same.stdout.strip() == "checked True", same.stderr
    stale = _check_in_worker(write_team_project(tmp_path / "other", even=False), pickled)
    assert stale.returncode == 1, stale.stdout
    assert f"this worker's copy of the code ({tmp_path}/other/teammodel) differs from the driver's" in stale.stderr


@pytest.fixture(scope="module")
def cluster_with_s3(s3):
    """A Ray cluster whose nodes reach the test S3 server as AWS's variables say (AWS_ENDPOINT_URL), as the chart's
    pods do: Ray's runtime_env agent downloads s3:// packages with boto3 (runtime_env/protocol.py)."""
    temp_dir = Path("/tmp") / f"sspk{uuid.uuid4().hex[:6]}"
    cluster = start_ray_cluster(temp_dir, AWS_ENDPOINT_URL=s3.endpoint)
    yield cluster
    stop_ray_cluster(cluster)


def _submit(cluster, working_dir: str, *args: str) -> tuple[bool, str]:
    job_id = f"pk-{uuid.uuid4().hex[:8]}"
    cluster.ray("job", "submit", "--address", cluster.dashboard, "--no-wait", "--submission-id", job_id,
                "--runtime-env-json", json.dumps({"working_dir": working_dir}), "--",
                "shardscore", "run", "--model", "teammodel.score:load_model", "--key-columns", "id", *args)
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, "--follow", job_id, timeout=300).stdout
    status = cluster.ray("job", "status", "--address", cluster.dashboard, job_id)
    return f"Job '{job_id}' succeeded" in status.stdout + status.stderr, logs


@pytest.mark.ray
@pytest.mark.s3
def test_code_shipped_as_a_package_scores_and_a_new_version_is_a_new_model(cluster_with_s3, s3, tmp_path: Path):
    """Through the Jobs API, as KubeRay's submitter submits: the team's package is nowhere on the cluster but in the
    zip; its next version gets another URI, and the output knows it for another model."""
    bucket, _ = s3.new_bucket("code")
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"id": pa.array(range(i * 100, i * 100 + 100)),
                                 "passenger_count": pa.array([j % 7 for j in range(100)], pa.int8())}),
                       inp / f"part-{i}.parquet")
    project = write_team_project(make_tempdir("team-") / "proj")
    run = ["--input", str(inp), "--output", str(out)]

    def ship() -> str:
        r = package(str(project), "--to", f"s3://{bucket}/code", "--s3-endpoint", s3.endpoint, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["uri"]

    first = ship()
    ok, logs = _submit(cluster_with_s3, first, *run)
    assert ok, logs[-3000:]
    scores = pq.read_table(out).sort_by("id")
    assert scores["score"].to_pylist() == [(i % 100) % 7 % 2 == 0 for i in range(300)]

    write_team_project(project, even=False)
    second = ship()
    assert second != first
    ok, logs = _submit(cluster_with_s3, second, *run)
    assert not ok and "scored by another model" in logs, logs[-3000:]
    ok, logs = _submit(cluster_with_s3, second, *run, "--overwrite")
    assert ok, logs[-3000:]
    assert pq.read_table(out).sort_by("id")["score"].to_pylist() == [(i % 100) % 7 % 2 == 1 for i in range(300)]


@pytest.mark.ray
def test_a_warm_pool_that_imported_an_older_version_refuses_the_new_one(ray_cluster, tmp_path: Path):
    """A pool's actors keep the modules they imported from run to run: after the code changed on disk, they would
    score with the old code under the new model identity. They refuse (package_digest is what a process first saw),
    and the new version scores in a pool of another name."""
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"id": pa.array(range(100)), "passenger_count": pa.array(range(100), pa.int8())}),
                   inp / "part-0.parquet")
    project = write_team_project(tmp_path / "proj")

    def run(out: str, pool: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "shardscore"), "run", "--input", str(inp), "--output", str(tmp_path / out),
                               "--model", "teammodel.score:load_model", "--key-columns", "id", "--strategy", "actors",
                               "--num-actors", "1", "--pool", pool, "--pool-idle-timeout", "30"],
                              env={**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address}, cwd=project,
                              capture_output=True, text=True, timeout=300)

    try:
        first = run("v1", "code-pool")
        assert first.returncode == 0, first.stderr[-3000:]
        write_team_project(project, even=False)
        stale = run("v2", "code-pool")
        assert stale.returncode != 0, stale.stdout[-3000:]
        assert "this worker's copy of the code" in stale.stdout + stale.stderr, (stale.stdout + stale.stderr)[-3000:]
        assert not (tmp_path / "v2" / "_SUCCESS").exists()
        fresh = run("v2", "code-pool-2")
        assert fresh.returncode == 0, fresh.stderr[-3000:]
        assert pq.read_table(tmp_path / "v2").sort_by("id")["score"].to_pylist() == [i % 2 == 1 for i in range(100)]
    finally:  # the pools' actors hold a CPU each until they idle out: the next tests need them
        script = ("import ray; ray.init()\nfor name in ('code-pool-0', 'code-pool-2-0'):\n    try:\n"
                  "        ray.kill(ray.get_actor(name, namespace='shardscore'))\n    except ValueError:\n        pass")
        subprocess.run([sys.executable, "-c", script], env={**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address},
                       capture_output=True, timeout=120)
