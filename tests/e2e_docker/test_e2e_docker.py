"""The shardscore image on a real Docker engine: Ray head, CPU and GPU-group workers, S3, the RayJob submitter.

Run with `make e2e-docker` (tests/e2e_docker/run.sh builds what these need). Marked `docker`: `make test`
deselects them.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import uuid

import pyarrow.parquet as pq
import pytest

from . import kuberay
from .conftest import BUCKET, LOG_DIR, Cluster, docker

pytestmark = pytest.mark.docker

OUTPUT_PREFIX = "output"


def _manifest(cluster: Cluster) -> dict:
    body = cluster.s3().get_object(Bucket=BUCKET, Key=f"{OUTPUT_PREFIX}/_manifest.json")["Body"].read()
    return json.loads(body)


def _job_status(cluster: Cluster, job_id: str) -> str:
    """`ray job status`, as the submitter would ask it (from the head container, over the Jobs API)."""
    proc = cluster.exec(cluster.head, "ray", "job", "status", "--address", f"http://127.0.0.1:{kuberay.DASHBOARD_PORT}",
                        job_id, check=False)
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    # "Status for job 'x': SUCCEEDED" (older Ray) or "Job 'x' succeeded" / "Job 'x' failed" (Ray 2.60).
    match = re.search(r"[Ss]tatus[^:\n]*: (PENDING|RUNNING|STOPPED|SUCCEEDED|FAILED)\b", text) or \
        re.search(r"Job '[^']*' (succeeded|failed|stopped|is currently (?:pending|running))\b", text)
    if not match:
        return f"unknown ({text[-500:]})"
    return match.group(1).split()[-1].upper()


def _failure(run: dict) -> str:
    proc = run["proc"]
    return (f"submitter exit {proc.returncode}; command:\n{proc.args}\n--- output (tail) ---\n"
            f"{(proc.stdout + proc.stderr)[-4000:]}\n(logs in {LOG_DIR})")


def test_image_metadata_and_tools(cluster: Cluster) -> None:
    info = json.loads(docker("image", "inspect", cluster.image).stdout)[0]
    config = info["Config"]
    assert config["User"] in ("1000:1000", "1000"), config["User"]
    labels = config.get("Labels") or {}
    for key in ("title", "description", "version", "source", "licenses", "revision", "created"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing label org.opencontainers.image.{key}"
    # image/build.sh tags <version> for the CPU variant and <version>-<variant> for the others (none, cu128, ...).
    tag, version = cluster.image.rsplit(":", 1)[-1], labels["org.opencontainers.image.version"]
    variant = labels["io.shardscore.torch-variant"]
    assert tag in (version, f"{version}-{variant}", "latest"), (tag, version, variant)
    # What KubeRay needs from the image, in a plain shell and in a login shell (ENABLE_LOGIN_SHELL).
    for shell in ("-c", "-lc"):
        out = docker("run", "--rm", cluster.image, "bash", shell,
                     "id -u; command -v bash wget ray shardscore python; ray --version; shardscore --version").stdout
        lines = out.splitlines()
        assert lines[0] == "1000", out
        assert len([p for p in lines[1:6] if p.startswith("/")]) == 5, out
        assert "2.60.0" in out, out
    # The chart runs the pods as the image's user.
    sc = cluster.groups[0].pod_spec.get("securityContext") or {}
    assert sc.get("runAsUser", 1000) == 1000


def test_cluster_has_head_cpu_and_gpu_nodes(cluster: Cluster) -> None:
    nodes = [n for n in kuberay_nodes(cluster) if n["state"] == "ALIVE"]
    by_host = {n["hostname"]: n for n in nodes}
    assert set(by_host) == set(cluster.ray_containers()), by_host.keys()
    head = by_host[cluster.head]
    assert head["is_head_node"] and head["resources_total"].get("CPU", 0) == 0
    gpu_workers = cluster.workers("gpu")
    cpu_workers = cluster.workers("cpu")
    assert gpu_workers and cpu_workers
    for name in gpu_workers:
        assert by_host[name]["resources_total"].get("GPU") == 1, by_host[name]
    for name in cpu_workers:
        assert "GPU" not in by_host[name]["resources_total"], by_host[name]
        assert by_host[name]["resources_total"].get("CPU") == 2, by_host[name]


def test_kuberay_exec_health_probes_pass(cluster: Cluster) -> None:
    """The image's wget serves KubeRay's exec probes (raylet health everywhere, GCS health on the head)."""
    containers = {cluster.head: cluster.groups[0]}
    for group in cluster.groups[1:]:
        containers.update({name: group for name in cluster.workers(group.name)})
    for name, group in containers.items():
        probe = kuberay.exec_probe_command(group)
        proc = cluster.exec(name, *probe, check=False, timeout=30)
        assert proc.returncode == 0, (name, probe, proc.stdout, proc.stderr)
        assert "success" in proc.stdout


def kuberay_nodes(cluster: Cluster) -> list[dict]:
    from .conftest import ray_nodes

    nodes = ray_nodes(cluster)
    for n in nodes:
        n["hostname"] = _hostname_of_ip(cluster, n["node_ip"])  # container names are their hostnames
    return nodes


_IPS: dict[str, str] = {}


def _hostname_of_ip(cluster: Cluster, ip: str) -> str:
    if not _IPS:
        for name in cluster.ray_containers():
            fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
            _IPS[docker("inspect", "-f", fmt, name).stdout.strip()] = name
    return _IPS.get(ip, ip)


def test_job_submitted_like_kuberay_succeeds(cluster: Cluster, first_run: dict) -> None:
    proc = first_run["proc"]
    assert proc.returncode == 0, _failure(first_run)
    assert _job_status(cluster, first_run["job_id"]) == "SUCCEEDED", _failure(first_run)
    info = cluster.job_info(first_run["job_id"])
    assert info["status"] == "SUCCEEDED"
    # The entrypoint came from the chart, unchanged (the submitter's bash removed the quoting, as in Kubernetes).
    assert shlex.split(info["entrypoint"]) == shlex.split(cluster.rayjob["spec"]["entrypoint"])
    # `ray job logs --follow` streamed the driver's output: the run summary.
    assert "shards committed" in proc.stdout, _failure(first_run)


def test_every_shard_committed_with_exact_rows(cluster: Cluster, first_run: dict, sample_data: dict) -> None:
    assert first_run["proc"].returncode == 0, _failure(first_run)
    s3 = cluster.s3()
    manifest = _manifest(cluster)
    assert manifest["status"] == "succeeded"
    totals = manifest["totals"]
    n, rows = sample_data["shards"], sample_data["rows_per_shard"]
    assert (totals["shards"], totals["committed"], totals["failed"]) == (n, n, 0), totals
    assert totals["rows_in"] == totals["rows_out"] == n * rows, totals
    assert len(manifest["shards"]) == n
    s3.head_object(Bucket=BUCKET, Key=f"{OUTPUT_PREFIX}/_SUCCESS")
    total = 0
    for shard in manifest["shards"]:
        assert shard["status"] == "committed", shard
        assert shard["rows_in"] == shard["rows_out"] == rows, shard
        body = s3.get_object(Bucket=BUCKET, Key=f"{OUTPUT_PREFIX}/{shard['output']}")["Body"].read()
        table = pq.read_table(io.BytesIO(body))
        assert table.num_rows == rows, (shard["output"], table.num_rows)
        assert "vendor_id" in table.column_names  # --key-columns from the chart values
        total += table.num_rows
    assert total == n * rows


def test_gpu_work_ran_on_the_gpu_group_worker(cluster: Cluster, first_run: dict) -> None:
    assert first_run["proc"].returncode == 0, _failure(first_run)
    manifest = _manifest(cluster)
    assert float(manifest["options"]["num_gpus_per_worker"]) == 1
    gpu_workers = set(cluster.workers("gpu"))
    nodes = {n["node_id"]: n for n in kuberay_nodes(cluster)}
    for shard in manifest["shards"]:
        worker = shard["worker"]
        assert worker.get("hostname") in gpu_workers, (shard["shard_id"], worker, gpu_workers)
        assert nodes[worker["node_id"]]["hostname"] in gpu_workers, worker
        assert worker.get("gpu_ids"), worker  # Ray assigned it a GPU id


def test_containers_and_ray_processes_run_as_non_root(cluster: Cluster, first_run: dict) -> None:
    script = (
        "import json, os\n"
        "procs = []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode(errors='replace')\n"
        "        uid = [l.split()[1:3] for l in open(f'/proc/{pid}/status') if l.startswith('Uid:')][0]\n"
        "    except (OSError, IndexError):\n"
        "        continue\n"
        "    procs.append([uid[0], uid[1], cmd[:200]])\n"
        "print(json.dumps(procs))\n"
    )
    for name in cluster.ray_containers():
        assert cluster.exec(name, "id", "-u").stdout.strip() == "1000"
        procs = json.loads(cluster.exec(name, "python", "-c", script).stdout)
        assert any("raylet" in cmd for _, _, cmd in procs), procs
        assert any("ray start" in cmd for _, _, cmd in procs), procs
        for real, effective, cmd in procs:
            assert real == effective == "1000", f"{name}: process {cmd!r} runs as uid {real}/{effective}"
    # KubeRay's `ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}` reached the Ray processes.
    want = cluster.ulimit_env.get("RAY_START_ULIMIT_OPEN_FILES", "65536")
    limits = (
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        if b'raylet' in open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')[0]:\n"
        "            print([l for l in open(f'/proc/{pid}/limits') if l.startswith('Max open files')][0])\n"
        "    except OSError:\n"
        "        pass\n"
    )
    for name in cluster.ray_containers():
        out = cluster.exec(name, "python", "-c", limits).stdout
        assert re.search(rf"Max open files\s+{want}\s", out), (name, out)


def test_resubmission_is_safe(cluster: Cluster, first_run: dict, sample_data: dict) -> None:
    """A retried submitter (same id) follows the existing job; a new run (new id) skips committed shards."""
    assert first_run["proc"].returncode == 0, _failure(first_run)
    before = {o["Key"]: o["LastModified"] for o in cluster.s3().list_objects_v2(
        Bucket=BUCKET, Prefix=f"{OUTPUT_PREFIX}/")["Contents"] if o["Key"].endswith(".parquet")}

    again = cluster.submit(first_run["job_id"])
    assert again.returncode == 0, again.stdout + again.stderr
    jobs = json.loads(cluster.exec(cluster.head, "python", "-c",
                                   "import json,urllib.request;print(urllib.request.urlopen("
                                   "'http://127.0.0.1:8265/api/jobs/').read().decode())").stdout)
    assert [j["submission_id"] for j in jobs].count(first_run["job_id"]) == 1

    rerun_id = f"shardscore-e2e-{uuid.uuid4().hex[:8]}"
    rerun = cluster.submit(rerun_id)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _job_status(cluster, rerun_id) == "SUCCEEDED"
    totals = _manifest(cluster)["totals"]
    n = sample_data["shards"]
    assert (totals["committed"], totals["skipped_already_committed"], totals["rows_scored_this_run"]) == (n, n, 0)
    after = {o["Key"]: o["LastModified"] for o in cluster.s3().list_objects_v2(
        Bucket=BUCKET, Prefix=f"{OUTPUT_PREFIX}/")["Contents"] if o["Key"].endswith(".parquet")}
    assert after == before  # nothing rewritten
