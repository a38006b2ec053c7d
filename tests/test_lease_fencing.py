"""A run that lost its lease writes nothing more. Run A is frozen (SIGSTOP: its driver and the Ray workers scoring
its shards, as a frozen pod or node would be) past its lease, run B takes the output over and succeeds, then A is
resumed: A exits naming B, and every byte of the output (B's manifest, `_SUCCESS`, commit records, files, lease
files, a temporary of B's still in flight) is as B left it. Real drivers on the multi-node test cluster."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from shardscore.lease import LEASE_DIR
from datasets import sample
from support import start_driver, wait_for

pytestmark = pytest.mark.ray
TTL = 3
# One actor scores A's shards: A holds one CPU of the cluster's three, and no warm-up task whose worker lease a
# frozen driver could not give back (Ray's owner returns a task's worker lease), so B finds CPUs to score on.
ONE_ACTOR = ["--strategy", "actors", "--num-actors", "1"]
ROWS, BATCHES_PER_SHARD = 2000, 8  # A's model scores a batch of 250 rows a second


class Output:
    """Every file of an output, hidden ones included, read as bytes: on local disk or on the S3 server."""

    def __init__(self, uri: str, s3=None):
        self.uri, self.s3 = uri, s3

    def files(self) -> dict[str, bytes]:
        if self.s3 is None:
            root = Path(self.uri)
            return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        client = self.s3.client()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
                if not o["Key"].endswith("/")]  # pyarrow's empty directory markers
        return {k[len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)}

    def write(self, rel: str, data: bytes) -> None:
        if self.s3 is None:
            (Path(self.uri) / rel).write_bytes(data)
        else:
            bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
            self.s3.client().put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=data)

    def json(self, rel: str) -> dict:
        if self.s3 is None:
            return json.loads((Path(self.uri) / rel).read_text())
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        return json.loads(self.s3.client().get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read())


def _model(pidfile: Path, tag: str, delay: float) -> list[str]:
    return ["--model", "fence_model:load_model", "--model-arg", f"pidfile={pidfile}", "--model-arg", f"tag={tag}",
            "--model-arg", f"delay={delay}", "--batch-size", "250"]


def _batches(pidfile: Path) -> list[int]:
    """The pid of the process that scored each of a run's batches so far, in order."""
    return [int(line) for line in pidfile.read_text().split()] if pidfile.exists() else []


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, sig)


def _lease_expired(out: Output) -> bool:
    lease = out.json(f"{LEASE_DIR}/00000001.json")
    return time.time() - lease["heartbeat_at"] > lease["ttl"] + 1


def _frozen_then_taken_over(ray_cluster, shardscore, tmp_path: Path, out: Output, a_input: Path, b_input: Path,
                            a_ready: Callable[[int], bool], extra: list[str], worker_alone_first: bool = False):
    """A scores until `a_ready(batches scored)`, is frozen, B takes over and succeeds; then A is resumed. Returns
    what A printed, its exit code, B's lease, and the output's files before and after A resumed.

    `worker_alone_first`: A's worker resumes while its driver stays frozen (a partition of the driver's node), and
    the driver only once the worker has started its next shard and finished it (no temporary of A's is left): the
    worker has decided about both shards (published them or not) and nothing of A's driver could stop it first."""
    a_pids, b_pids = tmp_path / "a.pids", tmp_path / "b.pids"
    a = start_driver(ray_cluster, "run", "--input", str(a_input), "--output", out.uri, *_model(a_pids, "a", 1.0),
                     "--lease-ttl", str(TTL), *ONE_ACTOR, *extra)
    try:
        wait_for(lambda: a_ready(len(_batches(a_pids))) or a.poll() is not None, 180, "run A scoring")
        assert a.poll() is None, a.stdout.read()[-3000:]
        workers = sorted(set(_batches(a_pids)))  # every worker process that scored A's batches
        _signal([a.pid, *workers], signal.SIGSTOP)
        try:
            scored = len(_batches(a_pids))
            wait_for(lambda: _lease_expired(out), 60, "run A's lease to expire")
            b = shardscore("run", "--input", str(b_input), "--output", out.uri, *_model(b_pids, "b", 0.0),
                           "--overwrite", *extra, timeout=120)
            assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-3000:]
            b_lease = out.json(f"{LEASE_DIR}/00000002.json")
            assert f"took over the output's lease from run {out.json(f'{LEASE_DIR}/00000001.json')['run_id']}" \
                in b.stderr, b.stderr
            # A temporary of B's generation, as a write of B's still in flight would leave it.
            out.write(f".tmp-g{b_lease['generation']:08d}-part-00000.parquet-{uuid.uuid4().hex}", b"in flight")
            before = out.files()
            if worker_alone_first:
                _signal(workers, signal.SIGCONT)
                next_shard = -(-scored // BATCHES_PER_SHARD) * BATCHES_PER_SHARD + 1
                wait_for(lambda: len(_batches(a_pids)) >= next_shard, 120, "A's worker to start its next shard")
                # ... and to be done with that one too: its temporary moved into place, or removed when fenced.
                wait_for(lambda: not [r for r in out.files() if "/.tmp-g00000001-" in f"/{r}"], 120,
                         "A's temporaries to be gone")
                changed = sorted(set(out.files().items()) ^ set(before.items()))
                assert not changed, f"A's worker, resumed alone, wrote {changed}"
        finally:
            _signal([*workers, a.pid], signal.SIGCONT)  # workers first: the driver finds them running
        printed, _ = a.communicate(timeout=180)
        return printed, a.returncode, b_lease, before, out.files()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()


def _assert_a_wrote_nothing(printed: str, code: int, b_lease: dict, before: dict, after: dict) -> None:
    assert after == before, sorted(set(after.items()) ^ set(before.items()))  # every byte as B left it
    assert code == 3, printed[-3000:]
    assert "another run took over output" in printed and f"run {b_lease['run_id']} on host" in printed, printed[-3000:]
    assert "Nothing more was written by this run" in printed, printed[-3000:]
    assert "stay committed" not in printed
    records = {rel: json.loads(data) for rel, data in after.items() if rel.startswith("_shardscore/commits/")}
    assert records and {r["run_id"] for r in records.values()} == {b_lease["run_id"]}
    assert {r["lease_generation"] for r in records.values()} == {b_lease["generation"]}
    manifest = json.loads(after["_manifest.json"])
    assert manifest["status"] == "succeeded" and manifest["run_id"] == b_lease["run_id"] and "_SUCCESS" in after


def test_a_run_resumed_after_a_takeover_writes_nothing_and_exits_naming_the_new_holder(
        shardscore, ray_cluster, tmp_path: Path):
    """A committed a shard and was frozen mid-shard; B (other model arguments, --overwrite) recomputes them all."""
    inp = sample(tmp_path / "in", shards=4, rows=ROWS)
    out = Output(str(tmp_path / "out"))
    commits = tmp_path / "out" / "_shardscore" / "commits"
    printed, code, b_lease, before, after = _frozen_then_taken_over(
        ray_cluster, shardscore, tmp_path, out, inp, inp,
        lambda scored: scored > BATCHES_PER_SHARD and commits.exists() and any(commits.iterdir()), [])
    _assert_a_wrote_nothing(printed, code, b_lease, before, after)
    manifest = json.loads(after["_manifest.json"])
    assert manifest["model"]["args"]["tag"] == "b" and manifest["totals"]["rows_out"] == 4 * ROWS
    temporaries = [rel for rel in after if rel.rsplit("/", 1)[-1].startswith(".tmp-")]
    assert len(temporaries) == 1 and temporaries[0].startswith(f".tmp-g{b_lease['generation']:08d}-")


def test_a_superseded_workers_late_shard_never_appears(shardscore, ray_cluster, tmp_path: Path):
    """A's worker, frozen mid-shard on a file B does not score, resumes before A's driver: the shard's file and
    commit record never appear, nor anything else of A's."""
    a_input = sample(tmp_path / "a", shards=2, rows=ROWS)
    b_input = tmp_path / "b"
    sample(b_input / "later", shards=2, rows=200)
    out = Output(str(tmp_path / "out"))
    printed, code, b_lease, before, after = _frozen_then_taken_over(
        ray_cluster, shardscore, tmp_path, out, a_input, b_input, lambda scored: scored > 0, [],
        worker_alone_first=True)
    _assert_a_wrote_nothing(printed, code, b_lease, before, after)
    assert "part-00000.parquet" not in after and "part-00001.parquet" not in after
    assert {json.loads(d)["shard_id"] for r, d in after.items() if r.startswith("_shardscore/commits/")} == {
        "later/part-00000.parquet", "later/part-00001.parquet"}


@pytest.mark.s3
def test_on_s3_a_superseded_run_and_its_worker_write_nothing(shardscore, ray_cluster, s3, tmp_path: Path):
    """On S3, A committed a shard, was frozen mid-shard, B recomputed all; A's worker resumes first, then A."""
    bucket = f"fence-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    inp = sample(tmp_path / "in", shards=3, rows=ROWS)
    out = Output(f"s3://{bucket}/scores", s3)
    printed, code, b_lease, before, after = _frozen_then_taken_over(
        ray_cluster, shardscore, tmp_path, out, inp, inp,
        lambda scored: scored > BATCHES_PER_SHARD + 1 and any(r.startswith("_shardscore/commits/")
                                                              for r in out.files()),
        ["--s3-endpoint", s3.endpoint], worker_alone_first=True)
    _assert_a_wrote_nothing(printed, code, b_lease, before, after)
    assert json.loads(after["_manifest.json"])["totals"]["rows_out"] == 3 * ROWS


def test_clean_up_leaves_a_newer_generations_temporaries_in_flight(tmp_path: Path):
    """The clean-up at a run's end removes its own leftovers and a gone older run's, never a newer run's files."""
    from shardscore.folder import ParquetFolder
    from shardscore.lease import Lease, this_process
    from shardscore.storage import resolve

    loc = resolve(str(tmp_path / "out"))
    Lease.acquire(loc, this_process(ttl=30)).release()
    mine = Lease.acquire(loc, this_process(ttl=30))  # generation 2: generation 1 was released
    names = {gen: f".tmp-g{gen:08d}-part-00000.parquet-{uuid.uuid4().hex}" for gen in (1, 2, 3)}
    (tmp_path / "out" / "sub").mkdir()
    for name in names.values():
        (tmp_path / "out" / "sub" / name).write_bytes(b"x")
    (tmp_path / "out" / ".tmp-part-00001.parquet-untagged").write_bytes(b"x")  # a writer of an older version
    # generation 3 started writing after this run's lease check passed
    ParquetFolder(loc, mine.holder.generation).remove_temporaries(mine.holder.host)
    left = sorted(p.name for p in (tmp_path / "out").rglob(".tmp-*"))
    assert left == [names[3]], left
