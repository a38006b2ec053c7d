"""Every input file that is Parquet is scored, whatever its name; nothing else is, and what is left out is listed.

Issue 16 §1 (Parquet named otherwise, Databricks commit markers), §4 (input and output one volume through a bind
mount, input files reached under the output) and §12 (string vs large_string, timestamp units and zero-row pandas
files across writers). Runs are `shardscore run` drivers on the multi-node test cluster, `plan` and refusals run
without one; object-store cases run against the S3 server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import assert_readable, databricks_folder, read_output, sample, taxi_frame, write_with

DUMMY = ["--model", "shardscore.models.dummy:load_model", "--model-arg", "payload_mb=1"]
DB_REASON = "uncommitted Databricks task attempt"


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def ignored(m: dict) -> dict[str, str]:
    return {i["path"]: i["reason"] for i in m["ignored_files"]["first"]}


def named_otherwise(inp: Path) -> int:
    """Parquet as Hive (`000000_0`), Athena (no extension) and upper-case suffixes write it, beside two files that
    are not Parquet; returns the rows of the Parquet files."""
    inp.mkdir(parents=True)
    (inp / "hive").mkdir()
    write_with("pandas", taxi_frame(300, seed=1), inp / "hive" / "000000_0")
    write_with("pandas", taxi_frame(200, seed=2), inp / "hive" / "000001_0")
    write_with("pandas", taxi_frame(100, seed=3), inp / "20240101_000000_00001_abcde_1f2e3d4c")
    write_with("pandas", taxi_frame(50, seed=4), inp / "upper.PARQUET")
    (inp / "notes.txt").write_text("how this folder was made\n")
    (inp / "hive" / "000002_0").write_bytes(b"")  # Hive writes empty files for empty buckets
    return 650


# ---------------------------------------------------------------- §1 Parquet that is not named so
@pytest.mark.ray
def test_parquet_named_otherwise_is_scored_and_other_files_are_listed_as_ignored(shardscore, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    rows = named_otherwise(inp)
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--key-columns", "vendor_id",
                   "--summary-json", str(tmp_path / "summary.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert m["totals"]["rows_in"] == rows and m["totals"]["committed"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["ignored_files"] == m["ignored_files"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "20240101_000000_00001_abcde_1f2e3d4c.parquet", "hive/000000_0.parquet", "hive/000001_0.parquet",
        "upper.parquet"]
    assert_readable(out, m)
    assert m["ignored_files"]["count"] == 2
    reasons = ignored(m)
    assert set(reasons) == {"notes.txt", "hive/000002_0"} and all("no PAR1 magic" in r for r in reasons.values())
    for stream in (r.stdout, r.stderr):  # the summary, and the warning before the run
        assert "ignored 2 input file(s), not scored: hive/000002_0 (not a Parquet file: no PAR1 magic" in stream
        assert "notes.txt (not a Parquet file" in stream


def test_plan_names_what_content_makes_of_each_file(cli, tmp_path: Path):
    """A `.parquet` that is not Parquet fails as a shard; a file with the magic but no valid footer is a bad file
    whatever its name; only a nameless file without the magic is ignored."""
    inp = tmp_path / "in"
    named_otherwise(inp)
    (inp / "fake.parquet").write_text("not parquet at all")
    good = (inp / "hive" / "000001_0").read_bytes()
    (inp / "hive" / "000003_0").write_bytes(good[: len(good) // 2])  # truncated: PAR1 at its start only
    r = cli("plan", "--input", str(inp), *DUMMY, "--json")
    assert r.returncode == 1, r.stderr
    info = json.loads(r.stdout)
    problems = {p["shard_id"]: p["reason"] for p in info["problems"]}
    assert set(problems) == {"fake.parquet", "hive/000003_0"}
    assert "no PAR1 magic at its start or end" in problems["fake.parquet"]
    assert "PAR1 magic at its start but not at its end" in problems["hive/000003_0"]
    assert {i["path"] for i in info["ignored_files"]["first"]} == {"notes.txt", "hive/000002_0"}
    assert info["rows"] == 650 and info["shards"] == 6


def test_two_inputs_that_would_write_one_output_by_content_are_refused(cli, tmp_path: Path):
    for names in (("a.PARQUET", "a.parquet"), ("000000_0", "000000_0.parquet")):
        inp = tmp_path / names[0].replace(".", "_")
        inp.mkdir()
        for name in names:
            write_with("duckdb", taxi_frame(10), inp / name)
        for cmd in ("plan", "run"):
            r = cli(cmd, "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY)
            assert r.returncode == 2, (cmd, names, r.stderr)
            first, second = sorted(names)
            assert f"{first} and {second} would both write {names[1].lower()}" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_ignored_files_are_all_counted_and_the_first_hundred_named(cli, tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    write_with("duckdb", taxi_frame(10), inp / "000000_0")
    for i in range(150):
        (inp / f"log-{i:03d}.txt").write_text(f"line {i}\n")
    r = cli("plan", "--input", str(inp), *DUMMY, "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)["ignored_files"]
    assert listed["count"] == 150 and [i["path"] for i in listed["first"]] == [f"log-{i:03d}.txt" for i in range(100)]
    r = cli("plan", "--input", str(inp), *DUMMY)
    assert "ignored 150 input file(s), not scored: log-000.txt (not a Parquet file: no PAR1 magic at its start or " \
           "end (7 bytes)); log-001.txt" in r.stdout, r.stdout
    assert "; and 145 more (ignored_files in the manifest and in plan --json names the first 100)" in r.stdout, r.stdout


# ---------------------------------------------------------------- §1 Databricks commit markers
def databricks_table(root: Path) -> int:
    """Two partitions written by Databricks: committed files, a failed attempt beside them, an aborted job, and
    a file a later overwrite removed. Returns the committed rows."""
    frame = taxi_frame(100, seed=5)
    databricks_folder(root / "p=1", frame, files={
        "part-00000-tid-111-a1-c000.snappy.parquet": "111",    # committed
        "part-00001-tid-111-a2-c000.snappy.parquet": "111",    # committed
        "part-00001-tid-111-b2-c000.snappy.parquet": "111",    # the attempt of task 1 that lost
        "part-00000-tid-222-c1-c000.snappy.parquet": "222",    # an aborted job: started, never committed
    }, commits={"111": {"added": ["part-00000-tid-111-a1-c000.snappy.parquet",
                                  "part-00001-tid-111-a2-c000.snappy.parquet"], "removed": []}})
    databricks_folder(root / "p=2", frame, files={
        "part-00000-tid-333-d1-c000.snappy.parquet": "333",    # committed, then replaced by tid 444
        "part-00000-tid-444-e1-c000.snappy.parquet": "444",    # committed
    }, commits={"333": {"added": ["part-00000-tid-333-d1-c000.snappy.parquet"], "removed": []},
                "444": {"added": ["part-00000-tid-444-e1-c000.snappy.parquet"],
                        "removed": ["part-00000-tid-333-d1-c000.snappy.parquet"]}})
    return 300


DB_IGNORED = {
    "p=1/part-00001-tid-111-b2-c000.snappy.parquet": 'not in the "added" list of _committed_111',
    "p=1/part-00000-tid-222-c1-c000.snappy.parquet": "no _committed_222 marker",
    "p=2/part-00000-tid-333-d1-c000.snappy.parquet": "removed by p=2/_committed_444",
}


@pytest.mark.ray
def test_only_committed_databricks_attempts_are_scored(shardscore, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    rows = databricks_table(inp)
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY)
    assert r.returncode == 0, r.stderr[-3000:]
    m = manifest(out)
    assert m["totals"]["rows_in"] == rows and m["totals"]["committed"] == 3
    assert_readable(out, m)
    reasons = ignored(m)
    assert set(reasons) == set(DB_IGNORED)
    for path, why in DB_IGNORED.items():
        assert reasons[path].startswith(DB_REASON) and why in reasons[path], reasons[path]
    assert f"ignored 3 input file(s), not scored: p=1/part-00000-tid-222-c1-c000.snappy.parquet ({DB_REASON}" in r.stderr


def test_a_databricks_marker_that_cannot_be_parsed_stops_before_anything_runs(cli, tmp_path: Path):
    inp = tmp_path / "in"
    databricks_table(inp)
    for body in ('{"added": ["part-00000-tid-111-a1-c000.sn', '["part-00000-tid-111-a1-c000.snappy.parquet"]',
                 '{"removed": []}'):
        (inp / "p=1" / "_committed_111").write_text(body)
        for cmd in ("plan", "run"):
            r = cli(cmd, "--input", str(inp), "--output", str(tmp_path / "out"), *DUMMY)
            assert r.returncode == 2, (cmd, body, r.stdout, r.stderr)
            assert f"the Databricks commit marker {inp}/p=1/_committed_111 cannot be parsed" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
@pytest.mark.s3
def test_on_s3_content_decides_and_databricks_markers_hold(shardscore, s3, tmp_path: Path):
    local = tmp_path / "in"
    rows = named_otherwise(local) + databricks_table(local / "db")
    bucket = f"inputs-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for path in local.rglob("*"):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"in/{path.relative_to(local).as_posix()}", Body=path.read_bytes())
    out = tmp_path / "out"
    r = shardscore("run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", *DUMMY,
                   "--s3-endpoint", s3.endpoint)
    assert r.returncode == 0, r.stderr[-3000:]
    for obj in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]:
        if obj["Key"].endswith("/"):
            continue  # a folder marker, no file
        target = out / obj["Key"][len("out/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    m = manifest(out)
    assert m["totals"]["rows_in"] == rows and m["totals"]["committed"] == 7
    assert_readable(out, m)
    assert {"hive/000000_0.parquet", "upper.parquet", "db/p=1/part-00000-tid-111-a1-c000.snappy.parquet"} <= {
        p.relative_to(out).as_posix() for p in out.rglob("*.parquet")}
    assert set(ignored(m)) == {"notes.txt", "hive/000002_0", *(f"db/{p}" for p in DB_IGNORED)}


# ---------------------------------------------------------------- §4 one volume at two paths
@pytest.fixture
def bind_mount():
    """`bind_mount(source, target)`: mount --bind, undone after the test (we run as root in the test container)."""
    mounted: list[Path] = []

    def mount(source: Path, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("bind mounts are not permitted here: `mount --bind` failed "
                        f"({(r.stderr or r.stdout).strip()}), which needs root and CAP_SYS_ADMIN")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)


def _refused(cli, inp: Path, out: Path, how: str) -> None:
    for cmd in ("plan", "run"):
        r = cli(cmd, "--input", str(inp), "--output", str(out), *DUMMY)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert f"--output {out} {how} the input {inp}" in r.stderr, r.stderr
        assert "Started a local Ray instance" not in r.stdout + r.stderr


def volume_input(inp: Path) -> Path:
    """Plain `.parquet` input with a subfolder: what decides in the bind mount cases is the place, not the names."""
    sample(inp, shards=2, rows=50)
    (inp / "sub").mkdir()
    shutil.copy(inp / "part-00000.parquet", inp / "sub" / "part-00000.parquet")
    return inp


def test_output_inside_the_input_through_a_bind_mount_is_refused(cli, bind_mount, tmp_path: Path):
    data = tmp_path / "volume"
    inp = volume_input(data / "in")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    other = bind_mount(data, tmp_path / "mnt" / "other")
    _refused(cli, inp, other / "in" / "preds", "lies inside")        # not there yet: its nearest ancestor tells
    _refused(cli, inp, other / "in" / "sub", "lies inside")          # an existing folder of the input
    _refused(cli, inp, other / "in", "is")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "mnt" not in p.parts) == before


def test_input_inside_the_output_through_a_bind_mount_is_refused(cli, bind_mount, tmp_path: Path):
    out = tmp_path / "volume" / "scores"
    volume_input(out / "in")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    other = bind_mount(tmp_path / "volume", tmp_path / "mnt" / "other")
    _refused(cli, other / "scores" / "in", out, "contains")
    _refused(cli, out / "in" / "sub", other / "scores", "contains")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "mnt" not in p.parts) == before


@pytest.mark.ray
def test_an_input_file_reached_under_the_output_is_refused(shardscore, cli, bind_mount, tmp_path: Path):
    """A link inside the input to the output, or to a bind mount of it: the next run would score the predictions
    as input, and write under the files it reads."""
    inp, out = sample(tmp_path / "in", shards=2, rows=100), tmp_path / "out"
    keys = ["--key-columns", "passenger_count"]  # the predictions hold the model's column: they could be scored
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, *keys)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_readable(out, manifest(out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = bind_mount(out, tmp_path / "mnt" / "other")
    for target in (out, other):
        link = inp / "linked"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        for cmd in ("plan", "run"):
            r = cli(cmd, "--input", str(inp), "--output", str(out), *DUMMY, *keys)
            assert r.returncode == 2, (cmd, target, r.stdout, r.stderr)
            assert f"input file {inp}/linked/part-00000.parquet lies under the --output {out}" in r.stderr, r.stderr
            assert "Started a local Ray instance" not in r.stdout + r.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- §12 one logical schema, several writers
def three_writers(inp: Path, pandas_unit: str = "ns") -> int:
    """The same logical columns as pandas 3 (large_string, timestamp[ns] from a nanosecond frame), polars
    (large_string, us) and DuckDB (string, us) write them."""
    inp.mkdir(parents=True)
    write_with("pandas", taxi_frame(400, seed=1), inp / "pandas.parquet", timestamp_unit=pandas_unit)
    write_with("polars", taxi_frame(300, seed=2), inp / "polars.parquet")
    write_with("duckdb", taxi_frame(200, seed=3), inp / "duckdb.parquet")
    write_with("duckdb", taxi_frame(100, seed=4), inp / "duckdb-2.parquet")
    return 1000


@pytest.mark.ray
@pytest.mark.parametrize("keys,pandas_unit", [("vendor_id", "us"), ("vendor_id,pickup_at", "ns")])
def test_text_and_timestamp_widths_of_different_writers_are_widened_and_plan_agrees(shardscore, cli, keys: str,
                                                                                     pandas_unit: str,
                                                                                     tmp_path: Path):
    """Files that differ only in string vs large_string: `plan` used to say all is well and the run failed (their
    Parquet types are equal); with nanoseconds from pandas too, both refused what converts without loss."""
    inp, out = tmp_path / "in", tmp_path / "out"
    rows = three_writers(inp, pandas_unit)
    widened = {"vendor_id": "large_string", "pickup_at": "timestamp[ns]"}
    r = cli("plan", "--input", str(inp), *DUMMY, "--key-columns", keys, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(r.stdout)
    assert info["problems"] == [] and {f"{k}: {widened[k]}" for k in keys.split(",")} <= set(info["schema"])
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--key-columns", keys)
    assert r.returncode == 0, r.stdout[-3000:]
    m = manifest(out)
    assert m["totals"]["rows_out"] == rows and m["totals"]["failed"] == 0
    assert m["prediction_schema"] == ", ".join([*(f"{k}: {widened[k]}" for k in keys.split(",")), "score: bool"])
    assert_readable(out, m)
    for name in ("pandas", "polars", "duckdb", "duckdb-2"):
        written, source = pq.read_table(out / f"{name}.parquet"), pq.read_table(inp / f"{name}.parquet")
        for key in keys.split(","):  # the same values, in one type
            assert written.schema.field(key).type == pa.type_for_alias(widened[key])
            assert written.column(key).equals(source.column(key).cast(widened[key]))


def test_timestamps_of_other_timezones_are_not_merged(cli, tmp_path: Path):
    inp = tmp_path / "in"
    three_writers(inp)
    write_with("pandas", taxi_frame(10).assign(pickup_at=lambda f: f["pickup_at"].dt.tz_localize("UTC")),
               inp / "utc.parquet")
    r = cli("plan", "--input", str(inp), *DUMMY, "--key-columns", "pickup_at", "--json")
    assert r.returncode == 1
    assert [(p["shard_id"], p["reason"]) for p in json.loads(r.stdout)["problems"]] == [
        ("utc.parquet", "column 'pickup_at' has type timestamp[us, tz=UTC], expected timestamp[ns]")]


@pytest.mark.ray
def test_a_timestamp_the_finer_unit_cannot_hold_fails_its_shard_naming_the_value(shardscore, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    three_writers(inp)
    sentinel = taxi_frame(50, seed=6)
    sentinel.loc[17, "pickup_at"] = pd.Timestamp("9999-12-31")  # Spark's and DuckDB's "no end"
    write_with("duckdb", sentinel, inp / "open-ended.parquet")
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--key-columns", "pickup_at")
    assert r.returncode == 1, r.stdout[-3000:]
    m = manifest(out)
    assert [f["shard_id"] for f in m["failures"]] == ["open-ended.parquet"]
    reason = m["failures"][0]["reason"]
    assert "column 'pickup_at': the value 9999-12-31 00:00:00 (row 17) does not fit timestamp[ns]" in reason, reason
    assert m["totals"]["committed"] == 4 and read_output(out).num_rows == 1000


@pytest.mark.ray
def test_zero_row_and_all_null_pandas_files_do_not_fail_the_run(shardscore, tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    rows = three_writers(inp)
    empty = taxi_frame(0).astype({"vendor_id": object, "passenger_count": object})
    write_with("pandas", empty, inp / "empty-pandas.parquet")
    assert pq.read_schema(inp / "empty-pandas.parquet").field("vendor_id").type == pa.null()
    nulls = taxi_frame(30, seed=8).assign(vendor_id=None)
    write_with("pandas", nulls, inp / "no-vendor.parquet")
    assert pq.read_schema(inp / "no-vendor.parquet").field("vendor_id").type == pa.null()
    r = shardscore("run", "--input", str(inp), "--output", str(out), *DUMMY, "--key-columns", "vendor_id")
    assert r.returncode == 0, r.stdout[-3000:]
    m = manifest(out)
    assert m["totals"]["zero_row_shards"] == 1 and m["totals"]["rows_out"] == rows + 30
    assert_readable(out, m)
    assert pq.read_table(out / "no-vendor.parquet").column("vendor_id").null_count == 30
    assert read_output(out).schema.field("vendor_id").type == pa.large_string()
