"""A partition of the day from templated paths, end to end (issue 18 §1): `shardscore run` drivers on the
multi-node test cluster, on local disks and on the S3 server. The resolution's unit tests and the refusals before
Ray are tests/test_templates.py's; the CronJob tick's --logical-time is tests/test_tick.py's."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, read_output, sample
from support import start_driver

DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=1", "--key-columns", "vendor_id"]
DAYS = {"2026-12-02": (2, 300), "2026-12-03": (3, 500)}  # date -> (files, rows per file)


def lake(root: Path) -> Path:
    """events/date=<day>/ for two days, with other rows each day (seeds), and scores/ with nothing yet."""
    for seed, (day, (files, rows)) in enumerate(DAYS.items()):
        sample(root / "events" / f"date={day}", shards=files, rows=rows, seed=seed + 1)
    return root


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def day_rows(root: Path, day: str) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (root / "events" / f"date={day}").glob("*.parquet"))


@pytest.mark.ray
def test_a_partition_of_the_day_is_scored_from_a_template(shardscore, tmp_path: Path):
    """`events/date={date}/` -> `scores/date={date}/` for one logical time: that day's files only, in that day's
    folder, with the logical time and the templates in the manifest, the run record and the summary; a backfill of
    the day before writes its own folder; the same instant spelled with an offset finds its day done."""
    root = lake(tmp_path / "lake")
    inp, out = f"{root}/events/date={{date}}/", f"{root}/scores/date={{date}}/"
    r = shardscore("run", "--input", inp, "--output", out, "--logical-time", "2026-12-03", *DUMMY,
                   "--summary-json", str(tmp_path / "summary.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    day = root / "scores" / "date=2026-12-03"
    m = manifest(day)
    assert (m["status"], m["input"], m["output"]) == ("succeeded", f"{root}/events/date=2026-12-03/",
                                                      f"{root}/scores/date=2026-12-03/")
    assert m["logical_time"] == "2026-12-03T00:00:00Z"
    assert m["templates"] == {"input": inp, "output": out}
    assert m["totals"]["rows_in"] == day_rows(root, "2026-12-03") == 1500 and m["totals"]["committed"] == 3
    assert read_output(day).num_rows == 1500
    assert_readable(day, m)
    record = json.loads((day / "_shardscore" / "run.json").read_text())
    assert (record["input"], record["logical_time"], record["templates"]) == (m["input"], m["logical_time"],
                                                                             m["templates"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["output"], summary["logical_time"], summary["templates"]) == (m["output"], m["logical_time"],
                                                                                 m["templates"])
    assert (f"logical time 2026-12-03T00:00:00Z: input {root}/events/date=2026-12-03/, output "
            f"{root}/scores/date=2026-12-03/") in r.stdout
    assert sorted(p.name for p in (root / "scores").iterdir()) == ["date=2026-12-03"], "no '{date}' folder"

    backfill = shardscore("run", "--input", inp, "--output", out, "--logical-time", "2026-12-02T23:59:59Z", *DUMMY)
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    before = manifest(root / "scores" / "date=2026-12-02")
    assert before["totals"]["rows_in"] == 600 and before["logical_time"] == "2026-12-02T23:59:59Z"
    assert manifest(day) == m, "the other day's output is left as it was"

    again = shardscore("run", "--input", inp, "--output", out, "--logical-time", "2026-12-03T05:00:00+05:00", *DUMMY,
                       "--summary-json", "-")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["logical_time"] == "2026-12-03T00:00:00Z", "the same instant as 2026-12-03, spelled otherwise"
    assert summary["totals"]["skipped_already_committed"] == 3 and summary["totals"]["rows_scored_this_run"] == 0
    assert manifest(day) == m, "nothing to do: the day's output is left as it was"


@pytest.mark.ray
@pytest.mark.s3
def test_on_s3_a_partition_of_the_day_is_scored_from_a_template(shardscore, s3, tmp_path: Path):
    """s3://b/in/date={date}/ -> s3://b/out/date={date}/: only that day's objects are read and written, the
    manifest on S3 records the logical time and the filled paths; a day with no partition fails naming both."""
    root = lake(tmp_path / "lake")
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for path in (root / "events").rglob("*.parquet"):
        client.put_object(Bucket=bucket, Key=f"in/{path.relative_to(root / 'events').as_posix()}",
                          Body=path.read_bytes())
    inp, out = f"s3://{bucket}/in/date={{date}}/", f"s3://{bucket}/out/date={{date}}/"
    r = shardscore("run", "--input", inp, "--output", out, "--logical-time", "2026-12-03T02:30:00Z", *DUMMY,
                   "--s3-endpoint", s3.endpoint)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert keys and all(k.startswith("out/date=2026-12-03/") or k == "out/" for k in keys), keys  # "out/": a marker
    m = json.loads(client.get_object(Bucket=bucket, Key="out/date=2026-12-03/_manifest.json")["Body"].read())
    assert (m["status"], m["input"], m["output"]) == ("succeeded", f"s3://{bucket}/in/date=2026-12-03/",
                                                      f"s3://{bucket}/out/date=2026-12-03/")
    assert m["logical_time"] == "2026-12-03T02:30:00Z" and m["templates"] == {"input": inp, "output": out}
    assert m["totals"]["rows_in"] == day_rows(root, "2026-12-03") and m["totals"]["committed"] == 3
    assert sorted(k.rsplit("/", 1)[1] for k in keys if k.endswith(".parquet")) == sorted(
        p.name for p in (root / "events" / "date=2026-12-03").glob("*.parquet"))

    missing = shardscore("run", "--input", inp, "--output", out, "--logical-time", "2026-12-04", *DUMMY,
                         "--s3-endpoint", s3.endpoint)
    assert missing.returncode == 2, missing.stderr[-3000:]
    assert (f"input s3://{bucket}/in/date=2026-12-04: no such file or directory (--input '{inp}' for --logical-time "
            "2026-12-04T00:00:00Z)") in missing.stderr


@pytest.mark.ray
def test_two_runs_for_one_logical_time_started_together_one_writes(ray_cluster, tmp_path: Path):
    """Two ticks for one logical time (the instant spelled two ways) started at once resolve to one output: the
    output's lease (lease.Lease) lets one write it, the other exits 2 naming the holder; the day is scored once."""
    root = lake(tmp_path / "lake")
    inp, out = f"{root}/events/date={{date}}/", f"{root}/scores/date={{date}}/"
    slow = ["--model", "slow_model:load_model", "--model-arg", "delay=1", "--batch-size", "100",
            "--key-columns", "vendor_id"]
    drivers = [start_driver(ray_cluster, "run", "--input", inp, "--output", out, "--logical-time", when, *slow)
               for when in ("2026-12-03T02:30:00Z", "2026-12-03T03:30:00+01:00")]
    outputs = [d.communicate(timeout=300)[0] for d in drivers]
    codes = sorted(d.returncode for d in drivers)
    assert codes == [0, 2], outputs
    winner, loser = (outputs[0], outputs[1]) if drivers[0].returncode == 0 else (outputs[1], outputs[0])
    day = root / "scores" / "date=2026-12-03"
    m = manifest(day)
    assert f"is being written by another run (run {m['run_id']} " in loser, loser[-3000:]
    assert m["logical_time"] == "2026-12-03T02:30:00Z" and m["totals"]["committed"] == 3, winner[-3000:]
    assert read_output(day).num_rows == day_rows(root, "2026-12-03") == 1500
    assert len(list((day / "_shardscore" / "runs").glob("*.json"))) == 1, "one run wrote the day"
