"""The pointer to the newest complete output (issue 18 §3, --latest-pointer): written after _SUCCESS, only forward
by logical time, never to a failed run; runs are `shardscore run` driver processes on the multi-node test cluster
and on the S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.ray

MODEL = ["--model", "bad_rows_model:load_model", "--key-columns", "id", "--batch-size", "100"]


def _input(inp: Path) -> Path:
    inp.mkdir()
    pq.write_table(pa.table({"id": np.arange(300, dtype=np.int64)}), inp / "a.parquet")
    return inp


def _tick(shardscore, inp: str, root: str, day: str, *args: str, bad: str = "[]"):
    return shardscore("run", "--input", inp, "--output", f"{root}/run={{date}}", "--logical-time", day,
                      "--latest-pointer", f"{root}/_LATEST", *MODEL, "--model-arg", f"bad={bad}", *args)


def test_the_pointer_moves_only_forward_and_only_to_a_run_that_succeeded(shardscore, tmp_path: Path):
    inp, root = _input(tmp_path / "in"), tmp_path / "scores"
    r = _tick(shardscore, str(inp), str(root), "2026-12-03")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pointer = json.loads((root / "_LATEST").read_text())
    assert pointer["output"] == f"{root}/run=2026-12-03" and pointer["logical_time"] == "2026-12-03T00:00:00Z"
    assert (Path(pointer["output"]) / "_SUCCESS").exists()
    assert f"--latest-pointer {root}/_LATEST now names {root}/run=2026-12-03" in r.stdout, r.stdout
    # A backfill of an older day succeeds, and leaves the pointer where it was.
    r = _tick(shardscore, str(inp), str(root), "2026-11-30")
    assert r.returncode == 0 and json.loads((root / "_LATEST").read_text()) == pointer, r.stdout[-2000:]
    assert f"{root}/_LATEST kept: it names {root}/run=2026-12-03 (logical time 2026-12-03T00:00:00Z), newer than " \
           "this run's 2026-11-30T00:00:00Z" in r.stdout, r.stdout
    # A newer day whose run fails does not move it.
    r = _tick(shardscore, str(inp), str(root), "2026-12-04", bad="[7]")
    assert r.returncode == 1 and json.loads((root / "_LATEST").read_text()) == pointer
    # Rerun, it succeeds, and the pointer moves.
    r = _tick(shardscore, str(inp), str(root), "2026-12-04")
    assert r.returncode == 0 and json.loads((root / "_LATEST").read_text())["output"] == f"{root}/run=2026-12-04"


def test_a_pointer_inside_the_output_is_refused_before_ray(cli, tmp_path: Path):
    inp = _input(tmp_path / "in")
    r = cli("run", "--input", str(inp), "--output", str(tmp_path / "out"), "--latest-pointer",
            str(tmp_path / "out" / "_LATEST"), *MODEL, "--model-arg", "bad=[]")
    assert r.returncode == 2 and f"--latest-pointer {tmp_path}/out/_LATEST: inside --output {tmp_path}/out" \
        in r.stderr, r.stderr


@pytest.mark.s3
def test_the_pointer_on_s3(shardscore, s3, tmp_path: Path):
    bucket, client = s3.new_bucket("latest")
    client.upload_file(str(_input(tmp_path / "in") / "a.parquet"), bucket, "in/a.parquet")
    root = f"s3://{bucket}/scores"
    for day in ("2026-12-04", "2026-12-03"):
        r = _tick(shardscore, f"s3://{bucket}/in", root, day, "--s3-endpoint", s3.endpoint)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pointer = json.loads(client.get_object(Bucket=bucket, Key="scores/_LATEST")["Body"].read())
    assert pointer["output"] == f"{root}/run=2026-12-04"
