"""Paths templated by the run's logical time (job/shardscore/templates.py, config.resolved): the syntax, the time
zones, and every refusal, each naming the option and the value (issue 18 §1). No Ray, no S3: the CLI's refusals
here all happen before Ray starts; the runs are tests/test_logical_time.py's."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from datasets import sample
from shardscore import templates
from shardscore.config import RunConfig, load, resolved
from shardscore.errors import ConfigError

UTC = timezone.utc
WHEN = datetime(2026, 12, 3, 2, 30, 5, tzinfo=UTC)


# ------------------------------------------------------------------------------------------- the logical time

@pytest.mark.parametrize("text,expect", [
    ("2026-12-03", datetime(2026, 12, 3, tzinfo=UTC)),  # a date alone: its midnight UTC
    ("20261203", datetime(2026, 12, 3, tzinfo=UTC)),
    ("2026-12-03T02:30:05Z", WHEN),
    ("2026-12-03T02:30:05", WHEN),  # no offset: UTC, not the machine's zone
    ("2026-12-03 02:30:05+00:00", WHEN),
    ("20261203T023005Z", WHEN),
    ("2026-12-03T03:30:05+01:00", WHEN),  # an offset: converted to UTC
    ("2026-12-02T21:30:05-05:00", WHEN),
    (" 2026-12-03T02:30:05Z\n", WHEN),
])
def test_logical_time_is_iso_8601_in_utc(text, expect):
    when = templates.parse_time(text)
    assert when == expect and when.tzinfo == UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-12-03T25:00", "03/12/2026", "1733184000"])
def test_a_bad_logical_time_is_refused_naming_it(text):
    with pytest.raises(ConfigError, match=f"--logical-time: invalid value {text!r}.*not an ISO 8601 date or time"):
        load({"logical_time": text}, env={})


def test_iso_is_utc_with_z():
    assert templates.iso(WHEN) == "2026-12-03T02:30:05Z"
    assert templates.iso(datetime(2026, 12, 3, 3, tzinfo=timezone(timedelta(hours=1)))) == "2026-12-03T02:00:00Z"


# ------------------------------------------------------------------------------------------- the syntax

@pytest.mark.parametrize("template,expect", [
    ("s3://lake/events/date={date}/", "s3://lake/events/date=2026-12-03/"),
    ("out/{date}/hour={hour}", "out/2026-12-03/hour=02"),
    ("out/run={ts}", "out/run=20261203T023005Z"),
    ("out/{date:%Y/%m/%d}/", "out/2026/12/03/"),
    ("out/{hour:%H%M}", "out/0230"),
    ("out/{ts:%G-W%V-%u}", "out/2026-W49-4"),
    ("out/{date:%Y}%/{date:%j}", "out/2026%/337"),  # a '%' outside a placeholder is text
    ("out/{{date}}/{date}", "out/{date}/2026-12-03"),  # {{ }}: literal braces
    ("out/no-placeholder", "out/no-placeholder"),
])
def test_placeholders_are_filled_in_their_formats(template, expect):
    assert templates.fill(template, WHEN, "--output") == expect


def test_an_offset_time_fills_the_same_paths_as_its_utc_spelling():
    """One instant, one set of paths: two ticks for one time cannot write two outputs."""
    a = load({"input": "in/{date}/{hour}", "logical_time": "2026-12-03T00:30+01:00"}, env={})
    b = load({"input": "in/{date}/{hour}", "logical_time": "2026-12-02T23:30Z"}, env={})
    assert a.input == b.input == "in/2026-12-02/23"


def test_the_machines_time_zone_plays_no_part(monkeypatch):
    """A driver pod's TZ must not move a run to another day's partition."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        cfg = load({"input": "in/{date}/{hour}", "logical_time": "2026-12-03T23:00"}, env={})
        naive = resolved(RunConfig(input="in/{date}/{hour}", logical_time=datetime(2026, 12, 3, 23)))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert cfg.input == naive.input == "in/2026-12-03/23"


def test_paths_without_placeholders_need_no_logical_time():
    cfg = load({"input": "in/", "output": "out/", "model": "m:f"}, env={})
    assert (cfg.input, cfg.output, cfg.logical_time) == ("in/", "out/", None)
    assert cfg.given_paths().record() == {"logical_time": None, "templates": {"input": "in/", "output": "out/"}}


# ------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("option,template,when,message", [
    ("--input", "in/date={date}/", None, "--input 'in/date={date}/' holds the placeholder {date} but the run has no "
                                         "logical time to fill it: give --logical-time"),
    ("--output", "out/{hour}", None, "--output 'out/{hour}' holds the placeholder {hour}"),
    ("--input", "in/{day}/", WHEN, "--input 'in/{day}/': unknown placeholder {day}; use {date}, {hour} or {ts}"),
    ("--input", "in/{}/", WHEN, "unknown placeholder {}"),
    ("--input", "in/{date.year}/", WHEN, r"unknown placeholder {date.year}"),
    ("--input", "in/{date!r}/", WHEN, r"unknown placeholder {date!r}"),
    ("--output", "out/{date:%Q}", WHEN, "--output 'out/{date:%Q}': bad format '%Q': %Q is not a strftime directive"),
    ("--output", "out/{date:%-d}", WHEN, "bad format '%-d': %- is not a strftime directive"),
    ("--output", "out/{date:YYYY-MM-DD}", WHEN, "bad format 'YYYY-MM-DD': it has no strftime directive"),
    ("--output", "out/{date:%%}", WHEN, "bad format '%%': it has no strftime directive"),
    ("--output", "out/{date:%Y%}", WHEN, "bad format '%Y%': % is not a strftime directive"),
    ("--input", "in/{date", WHEN, "--input 'in/{date': expected '}' before end of string; write {{ and }}"),
    ("--input", "in/date}", WHEN, "Single '}' encountered"),
])
def test_bad_templates_are_refused_naming_option_and_value(option, template, when, message):
    with pytest.raises(ConfigError) as exc:
        templates.fill(template, when, option)
    assert message in str(exc.value)


def test_every_source_of_the_paths_is_filled_once(tmp_path: Path):
    """Flags, SHARDSCORE_* variables and --config keys all give templates; load fills them once, keeping them."""
    (tmp_path / "c.yaml").write_text("input: in/{date}\nlogical-time: 2026-12-03\n")
    cfg = load({"output": "out/{date}"}, env={"SHARDSCORE_MODEL": "m:f"}, config_file=str(tmp_path / "c.yaml"))
    assert (cfg.input, cfg.output) == ("in/2026-12-03", "out/2026-12-03")
    assert cfg.given_paths().record() == {"logical_time": "2026-12-03T00:00:00Z",
                                          "templates": {"input": "in/{date}", "output": "out/{date}"}}
    assert resolved(cfg) is cfg, "a resolved RunConfig is never filled again ({{ would lose its meaning)"
    braces = load({"input": "in/{{x}}", "output": "o", "model": "m:f"}, env={})
    assert resolved(braces).input == "in/{x}"


def test_the_latest_pointer_is_filled_like_the_paths():
    """A RayCronJob child's entrypoint passes job.output's template with /_LATEST (the chart cannot fill it): the
    run fills --latest-pointer from its logical time too, and refuses it without one, naming it."""
    cfg = load({"input": "in/{date}", "output": "scores/date={date}/run=1", "model": "m:f",
                "latest_pointer": "scores/date={date}/_LATEST", "logical_time": "2026-12-03T02:30:00Z"}, env={})
    assert cfg.latest_pointer == "scores/date=2026-12-03/_LATEST"
    with pytest.raises(ConfigError, match=r"--latest-pointer 'p/\{date\}/_LATEST' holds the placeholder \{date\}"):
        load({"input": "in", "output": "out", "model": "m:f", "latest_pointer": "p/{date}/_LATEST"}, env={})


def test_a_runconfig_built_in_code_must_be_resolved():
    cfg = RunConfig(input="in/{date}", output="out", model="m:f", logical_time=WHEN)
    with pytest.raises(ConfigError, match="placeholders not filled; pass the RunConfig through config.resolved"):
        cfg.validate()
    assert resolved(cfg).validate().input == "in/2026-12-03"
    naive = resolved(RunConfig(input="in/{hour}", output="out", model="m:f", logical_time=datetime(2026, 12, 3, 23)))
    assert naive.input == "in/23" and naive.logical_time == datetime(2026, 12, 3, 23, tzinfo=UTC), "naive: UTC"


def test_origin_names_the_template_of_a_filled_path():
    given = templates.PathTemplates("in/{date}", "out/", WHEN)
    assert given.origin("--input") == " (--input 'in/{date}' for --logical-time 2026-12-03T02:30:05Z)"
    assert given.origin("--output") == ""
    assert templates.PathTemplates("in/{date}", "out/", None).origin("--input") == ""


# ------------------------------------------------------------------------------------------- the CLI, before Ray

def test_the_cli_refuses_bad_templates_before_ray_starts(cli, tmp_path: Path):
    """Exit 2, naming the value, in the time it takes to read the options: no Ray, no model, no planning."""
    model = ["--model", "shardscore.models.dummy:load_model"]
    cases = [
        (["--input", str(tmp_path / "in/{date}"), "--output", str(tmp_path / "o")], "holds the placeholder {date}"),
        (["--input", str(tmp_path / "in/{day}"), "--output", str(tmp_path / "o"), "--logical-time", "2026-12-03"],
         "unknown placeholder {day}"),
        (["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--logical-time", "12/03/2026"],
         "--logical-time: invalid value '12/03/2026'"),
        (["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o/{date:%d.%m.%Q}"), "--logical-time",
          "2026-12-03"], "bad format '%d.%m.%Q'"),
    ]
    for args, message in cases:
        for command in ("run", "plan"):
            r = cli(command, *args, *model)
            assert r.returncode == 2 and message in r.stderr, (command, args, r.stderr)
            assert "Traceback" not in r.stderr and "ray" not in r.stderr.lower(), r.stderr


def test_the_cli_refuses_a_template_that_resolves_into_the_input(cli, tmp_path: Path):
    """The overlap check sees the filled paths: `out/date={date}` is `in/date=2026-12-03` itself."""
    sample(tmp_path / "data" / "date=2026-12-03", shards=1, rows=10)
    r = cli("run", "--input", str(tmp_path / "data/date=2026-12-03"), "--output", str(tmp_path / "data/date={date}"),
            "--logical-time", "2026-12-03", "--model", "shardscore.models.dummy:load_model")
    assert r.returncode == 2, r.stderr
    assert f"--output {tmp_path}/data/date=2026-12-03 is the input {tmp_path}/data/date=2026-12-03" in r.stderr
    assert f"(--output '{tmp_path}/data/date={{date}}' for --logical-time 2026-12-03T00:00:00Z)" in r.stderr


def test_plan_shows_the_filled_paths(cli, tmp_path: Path):
    sample(tmp_path / "in" / "date=2026-12-03", shards=2, rows=10)
    r = cli("plan", "--input", str(tmp_path / "in/date={date}"), "--output", str(tmp_path / "out/date={date}"),
            "--logical-time", "2026-12-03T05:00:00+02:00", "--model", "shardscore.models.dummy:load_model", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["input"] == str(tmp_path / "in/date=2026-12-03")
    assert info["output"] == str(tmp_path / "out/date=2026-12-03")
    assert info["logical_time"] == "2026-12-03T03:00:00Z"
    assert info["templates"] == {"input": str(tmp_path / "in/date={date}"), "output": str(tmp_path / "out/date={date}")}
    assert info["shards"] == 2
    text = cli("plan", "--input", str(tmp_path / "in/date={date}"), "--logical-time", "2026-12-03",
               "--model", "shardscore.models.dummy:load_model").stdout
    assert f"logical time 2026-12-03T00:00:00Z: --input {tmp_path}/in/date={{date}} -> {tmp_path}/in/date=2026-12-03" \
        in text


def test_a_missing_partition_names_the_template_and_the_filled_path(cli, tmp_path: Path):
    sample(tmp_path / "in" / "date=2026-12-03", shards=1, rows=10)
    r = cli("plan", "--input", f"{tmp_path}/in/date={{date}}/", "--logical-time", "2026-12-04",
            "--model", "shardscore.models.dummy:load_model")
    assert r.returncode == 2, r.stderr
    assert (f"input {tmp_path}/in/date=2026-12-04: no such file or directory (--input '{tmp_path}/in/date={{date}}/' "
            "for --logical-time 2026-12-04T00:00:00Z)") in r.stderr
