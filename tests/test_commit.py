"""Reconciling a plan with what the output already holds: skip, redo, refuse to mix."""

import pytest

from shardscore.commit import ShardResult, reconcile
from shardscore.errors import StaleOutputError
from shardscore.planning import Shard


def _shard(i: int, fp: str = "f") -> Shard:
    return Shard(f"s{i}", f"/in/s{i}", f"s{i}.parquet", None, 10, 100, fp)


def _done(i: int, fp: str = "f", model: str = "m", opts: str = "o") -> ShardResult:
    return ShardResult(f"s{i}", "committed", input_fingerprint=fp, model_identity=model, output_options=opts)


def test_committed_current_shards_are_skipped():
    rec = reconcile([_shard(0), _shard(1)], {"s0": _done(0)}, "m", "o", overwrite=False)
    assert [s.shard_id for s in rec.todo] == ["s1"] and [r.shard_id for r in rec.done] == ["s0"]


@pytest.mark.parametrize("record,why", [
    (_done(0, fp="old"), "input file s0.parquet changed"),
    (_done(0, model="other"), "scored by another model"),
    (_done(0, opts="other"), "--key-columns changed"),
])
def test_stale_output_is_refused_without_overwrite(record, why):
    with pytest.raises(StaleOutputError, match=why):
        reconcile([_shard(0)], {"s0": record}, "m", "o", overwrite=False)
    rec = reconcile([_shard(0)], {"s0": record}, "m", "o", overwrite=True)
    assert [s.shard_id for s in rec.todo] == ["s0"] and len(rec.stale) == 1


def test_outputs_of_removed_input_files_are_orphans():
    with pytest.raises(StaleOutputError, match="s9: its input file is gone"):
        reconcile([_shard(0)], {"s9": _done(9)}, "m", "o", overwrite=False)
    rec = reconcile([_shard(0)], {"s9": _done(9)}, "m", "o", overwrite=True)
    assert [r.shard_id for r in rec.orphans] == ["s9"]


def test_incremental_takes_the_inputs_own_changes_and_refuses_another_model():
    """--incremental: a changed file is redone and a deleted one's shard removed, without --overwrite; a record of
    another model is still refused, named by that reason even when its input changed too."""
    rec = reconcile([_shard(0, fp="new"), _shard(1)], {"s0": _done(0, fp="old"), "s9": _done(9)}, "m", "o",
                    overwrite=False, incremental=True)
    assert [s.shard_id for s in rec.todo] == ["s1", "s0"] and [r.shard_id for r in rec.orphans] == ["s9"]
    for record in (_done(0, model="other"), _done(0, fp="old", model="other"), _done(0, fp="old", opts="other")):
        with pytest.raises(StaleOutputError, match="scored by another model|--key-columns changed"):
            reconcile([_shard(0)], {"s0": record}, "m", "o", overwrite=False, incremental=True)
