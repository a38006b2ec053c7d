"""Scoring one shard without Ray: formats, user models unchanged, key columns, atomic output, shard faults."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import empty, expected_even, sample
from shardscore.commit import options_identity
from shardscore.folder import ParquetFolder
from shardscore.errors import ShardError
from shardscore.model import ModelSpec, load
from shardscore.planning import plan
from shardscore.scoring import ScoringJob, score_shard
from shardscore.storage import StorageOptions, resolve


def _job(tmp_path: Path, key_columns=(), batch_size=256) -> ScoringJob:
    return ScoringJob(str(tmp_path / "in"), str(tmp_path / "out"), StorageOptions(), "m", options_identity(
        list(key_columns)), tuple(key_columns), batch_size)


def _score_all(tmp_path: Path, spec: ModelSpec, **job_kwargs) -> pa.Table:
    scorer = load(spec)
    job = _job(tmp_path, **job_kwargs)
    for shard in plan(resolve(job.input_uri)).shards:
        score_shard(shard, scorer, job, {"hostname": "test"})
    return pq.read_table(str(tmp_path / "out"))


@pytest.mark.parametrize("fmt", ["pyarrow", "numpy", "pandas"])
def test_every_batch_format_gives_the_same_predictions(tmp_path: Path, fmt: str):
    sample(tmp_path / "in", shards=2, rows=1000)
    out = _score_all(tmp_path, ModelSpec("shardscore.models.dummy:load_model",
                                         {"payload_mb": 0, "batch_format": fmt}), key_columns=("vendor_id",))
    assert out.column_names == ["vendor_id", "score"]
    assert out.num_rows == 2000
    assert sum(out.column("score").to_pylist()) == expected_even(tmp_path / "in")


def test_the_ray_example_model_works_unchanged_on_int8(tmp_path: Path):
    """The docs' load_model() declares nothing and does `% 2` on an int8 column: it must see NumPy dtypes."""
    sample(tmp_path / "in", shards=1, rows=1000)
    scorer = load(ModelSpec("ray_example_model:load_model"))
    assert scorer.columns is None and scorer.batch_format == "pandas"
    out = _score_all(tmp_path, ModelSpec("ray_example_model:load_model"))
    assert sum(out.column("score").to_pylist()) == expected_even(tmp_path / "in")


def test_output_appears_atomically_and_commit_follows(tmp_path: Path):
    sample(tmp_path / "in", shards=1, rows=2000)
    scorer = load(ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0}))
    job = _job(tmp_path, batch_size=100)
    shard = plan(resolve(job.input_uri)).shards[0]
    seen = []

    def watch(rows: int) -> None:  # called after each batch is written: the final file must not exist yet
        seen.append(sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".tmp-")))

    score_shard(shard, scorer, job, {}, on_batch=watch)
    assert len(seen) == 20 and all("part-00000.parquet" not in names for names in seen)
    store = ParquetFolder(resolve(str(tmp_path / "out")))
    record = store.committed()["part-00000.parquet"]
    assert (record.rows_in, record.rows_out, record.output) == (2000, 2000, "part-00000.parquet")
    assert pq.ParquetFile(str(tmp_path / "out" / "part-00000.parquet")).metadata.num_rows == 2000
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp-")]


def test_empty_shard_and_model_failure_are_shard_errors_and_leave_nothing(tmp_path: Path):
    sample(tmp_path / "in", shards=1, rows=300)
    empty(tmp_path / "in" / "part-00001.parquet", like=tmp_path / "in" / "part-00000.parquet")
    shards = plan(resolve(str(tmp_path / "in"))).shards
    job = _job(tmp_path)
    with pytest.raises(ShardError, match="empty shard"):
        score_shard(shards[1], load(ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0})), job, {})
    with pytest.raises(ShardError, match=r"the model failed on rows 0\.\.255: ValueError: cannot score vendor"):
        score_shard(shards[0], load(ModelSpec("failing_model:load_model", {"bad_vendor": "VTS"})), job, {})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))
    assert ParquetFolder(resolve(str(tmp_path / "out"))).committed() == {}


def test_model_with_wrong_row_count_is_named(tmp_path: Path):
    sample(tmp_path / "in", shards=1, rows=10)
    shard = plan(resolve(str(tmp_path / "in"))).shards[0]
    scorer = load(ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0}))
    scorer.model = lambda batch: pa.table({"score": [1, 2, 3]})
    with pytest.raises(ShardError, match="returned 3 rows for a batch of 10"):
        score_shard(shard, scorer, _job(tmp_path), {})


def test_progress_reads_well_in_logs_and_is_a_bar_on_a_terminal():
    import io

    from shardscore.commit import ShardResult
    from shardscore.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log, tty = io.StringIO(), Terminal()
    for stream in (log, tty):
        progress = Progress(total_shards=4, total_rows=400, interval=1e-9, stream=stream)
        progress.record(ShardResult("a", "committed", rows_in=100))
        progress.record(ShardResult("b", "failed", reason="x"))
        progress.close()
    assert log.getvalue().splitlines()[0].startswith("shardscore: 1/4 shards (25.0%), 100 rows, ")
    assert log.getvalue().splitlines()[1].endswith("1 failed") and "\r" not in log.getvalue()
    assert tty.getvalue().startswith("\r[######..................] shardscore: 1/4 shards")


def test_progress_eta_stays_honest_while_one_slow_shard_runs_and_names_it():
    import io

    from shardscore.commit import ShardResult
    from shardscore.progress import Progress

    now = [0.0]
    log = io.StringIO()
    progress = Progress(total_shards=4, total_rows=400, interval=0, stream=log, slow_after=10, clock=lambda: now[0])
    progress.handed_out([("a", 100), ("b", 100), ("c", 100), ("slow", 100)])
    now[0] = 1.0
    for sid in "abc":
        progress.record(ShardResult(sid, "committed", rows_in=100, seconds=2.0))
    assert progress.eta() == "0:00:01"  # at the others' pace, 'slow' needs one more second
    now[0] = 3.0  # it is not: the ETA must not claim it is about to finish
    assert progress.eta().startswith("unknown")
    assert "oldest unfinished" not in progress.line()
    now[0] = 12.0
    assert progress.line().endswith("; oldest unfinished: slow, out for 0:00:12")
    progress.handed_out([])
    progress.record(ShardResult("slow", "committed", rows_in=100, seconds=12.0))
    assert progress.eta() == "-" and "oldest" not in progress.line()


def test_partition_folders_are_kept_in_the_output(tmp_path: Path):
    for day in ("2009-01-01", "2009-01-02"):
        sample(tmp_path / "in" / f"day={day}", shards=1, rows=100, seed=int(day[-1]))
    out = _score_all(tmp_path, ModelSpec("shardscore.models.dummy:load_model", {"payload_mb": 0}))
    assert out.num_rows == 200
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.parquet")) == [
        "day=2009-01-01/part-00000.parquet", "day=2009-01-02/part-00000.parquet"]
