"""The smaller ways a run misled its user (issue 16, §12): readers, stdout, unwritable output, crashes, options.

Runs are `shardscore run` driver processes on the multi-node test cluster, or the CLI with no cluster where the
check happens before Ray starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from datasets import assert_readable, sample

DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=1"]


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


# ---------------------------------------------------------------- readers' check
@pytest.mark.ray
def test_every_reader_reads_an_output_with_subfolders_and_row_group_shards(shardscore, tmp_path: Path):
    inp = tmp_path / "in"
    sample(inp / "2024", shards=2, rows=300, row_group_size=100)
    sample(inp / "2025" / "q1", shards=1, rows=50)
    out = tmp_path / "out"
    r = shardscore("run", "--input", str(inp), "--output", str(out), "--max-rows-per-shard", "200", *DUMMY)
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert m["totals"]["rows_out"] == 650 and (out / "2024" / "part-00000.rg0-1.parquet").exists()
    assert_readable(out, m)
    # README's polars line is the glob because polars refuses the folder itself: keep the docs true on upgrades
    with pytest.raises(pl.exceptions.InvalidOperationError, match="different file extensions"):
        pl.scan_parquet(out).collect()
