"""Overlapped scoring (reads ahead, writes behind): the same output as in one thread, bounded memory, and a failure
in either background thread reported as the shard's own. Runs on the CPU; the GPU figures are in bench/."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import corrupt_pages, sample
from shardscore.commit import options_identity
from shardscore.errors import ShardError
from shardscore.model import ModelSpec, load
from shardscore.pipeline import BackgroundWriter, prefetch
from shardscore.planning import plan
from shardscore.scoring import ScoringJob, score_shard
from shardscore.storage import StorageOptions, resolve
from support import wait_for


def _job(tmp_path: Path, out: str, overlap: bool, batch_size: int = 500) -> ScoringJob:
    return ScoringJob(str(tmp_path / "in"), str(tmp_path / out), StorageOptions(), "m", options_identity([]),
                      ("vendor_id",), batch_size, overlap=overlap)


def test_prefetch_keeps_order_and_runs_at_most_depth_ahead():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    taken = []
    for item in prefetch(source(), depth=2):
        taken.append(item)
        # A slow model: the reader gets as far ahead as it may before the next item is taken.
        wait_for(lambda: len(produced) >= min(50, len(taken) + 2 + 1), 10, "the reader to fill its queue",
                 interval=0.001)
        assert len(produced) - len(taken) <= 2 + 1  # the queue, plus the one being put
    assert taken == list(range(50))


def test_prefetch_raises_the_readers_error_in_the_consumer_and_stops_the_reader():
    def source():
        yield 1
        raise OSError("Deserializing page header failed")

    it = prefetch(source())
    assert next(it) == 1
    with pytest.raises(OSError, match="Deserializing page header failed"):
        next(it)
    assert not [t for t in threading.enumerate() if t.name == "shardscore-read"]


def test_background_writer_writes_in_order_and_raises_its_failure_in_the_caller():
    written = []
    writer = BackgroundWriter(written.append)
    for i in range(20):
        writer.submit(i)
    writer.close()
    assert written == list(range(20))

    def fail(item):
        raise OSError("No space left on device")

    writer = BackgroundWriter(fail)
    writer.submit(1)
    with pytest.raises(OSError, match="No space left"):
        for i in range(100):
            writer.submit(i)
        writer.close()


@pytest.mark.parametrize("spec", ["shardscore.models.dummy:load_model", "ray_example_model:load_model"])
def test_overlapped_scoring_writes_the_same_files(tmp_path: Path, spec: str):
    sample(tmp_path / "in", shards=2, rows=5000)
    scorer = load(ModelSpec(spec))
    for shard in plan(resolve(str(tmp_path / "in"))).shards:
        for out, overlap in (("plain", False), ("overlap", True)):
            score_shard(shard, scorer, _job(tmp_path, out, overlap), {})
    for f in sorted((tmp_path / "plain").glob("*.parquet")):
        assert (tmp_path / "overlap" / f.name).read_bytes() == f.read_bytes(), f.name


def test_overlapped_scoring_memory_does_not_grow_with_the_shard(tmp_path: Path):
    def peak(rows: int) -> int:
        sample(tmp_path / f"in{rows}", shards=1, rows=rows)
        scorer = load(ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0}))
        job = replace(_job(tmp_path, f"out{rows}", True, batch_size=2000), input_uri=str(tmp_path / f"in{rows}"))
        seen = [0]
        pa.default_memory_pool().release_unused()
        score_shard(plan(resolve(job.input_uri)).shards[0], scorer, job, {},
                    on_batch=lambda n: seen.__setitem__(0, max(seen[0], pa.total_allocated_bytes())))
        return seen[0]

    small, large = peak(40_000), peak(400_000)  # 20 batches, 200 batches
    assert large < 2 * small + 2**20, (small, large)


def test_a_reader_failure_in_the_background_is_the_shards_own(tmp_path: Path):
    sample(tmp_path / "in", shards=1, rows=3000)
    corrupt_pages(tmp_path / "in" / "part-00000.parquet")
    scorer = load(ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0}))
    shard = plan(resolve(str(tmp_path / "in"))).shards[0]
    with pytest.raises(ShardError, match="(?s)unreadable data .*Deserializing page header failed"):
        score_shard(shard, scorer, _job(tmp_path, "out", True), {})
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_a_writer_failure_in_the_background_fails_the_shard_by_name(tmp_path: Path, monkeypatch):
    from shardscore import ray_worker

    sample(tmp_path / "in", shards=1, rows=3000)
    scorer = load(ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0}))
    shard = plan(resolve(str(tmp_path / "in"))).shards[0]
    calls = []

    def full_disk(self, table, *args, **kwargs):
        calls.append(threading.current_thread().name)
        raise OSError("No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    result = ray_worker._score_one(shard, scorer, _job(tmp_path, "out", True), {}, "", 1, lambda: None, None)
    assert calls and calls[0] == "shardscore-write"  # it did fail in the writer thread
    assert result.status == "failed" and result.shard_id == "part-00000.parquet"
    assert result.reason == "input or output could not be read or written: OSError: No space left on device"
    assert not list((tmp_path / "out").glob("*.parquet"))
