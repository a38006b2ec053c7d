"""The run options are described once, by RunConfig's fields (job/shardscore/config.py, options.py): the flags,
their help, the environment variables, the --config keys and README's table come from there, and the chart maps
every option to a value that reaches the RayJob's entrypoint, or this file says why it does not."""

from __future__ import annotations

import json
import shlex
import types
import typing
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

import chartlib as c

config = pytest.importorskip("shardscore.config", reason="the shardscore job package is not installed (make venv)")
from shardscore import cli, options  # noqa: E402

RunConfig = config.RunConfig
OPTIONS = options.options(RunConfig)
NAMES = [f.name for f, _ in OPTIONS]
CPU = c.CI_DIR / "cpu-values.yaml"
#: Values an option's chart value needs beside it: the chart refuses a pool without actors (templates/_validate.tpl).
COMPANIONS = {"pool": ["job.strategy=actors"]}

#: Run options the chart has no value for, each with why. An option that is neither here nor a job.* value of the
#: chart fails test_every_option_is_mapped_by_the_chart_or_cli_only.
CLI_ONLY = {
    # A RayJob's entrypoint runs as a Ray job on the cluster: its driver finds the cluster in RAY_ADDRESS.
    "ray_address": "Ray's job supervisor gives the driver RAY_ADDRESS",
    # --s3-endpoint falls back to AWS_ENDPOINT_URL, which objectStore.endpoint sets on every Ray container (the
    # workers read and write too, and they get no flags).
    "s3_endpoint": "objectStore.endpoint sets AWS_ENDPOINT_URL on the Ray containers",
    # Only a run killed without its grace period leaves the lease to expire; job.extraArgs passes it if needed.
    "lease_ttl": "a crash-recovery bound, not a setting of scheduled runs; job.extraArgs passes it",
    # `auto` already overlaps for models with a device; job.extraArgs passes `--overlap on|off`.
    "overlap": "a tuning knob whose auto fits; job.extraArgs passes it",
    # A scheduled run's logical time is its tick's scheduled time, which the CronJob tick appends to the entrypoint
    # (k8s/tick.py; a chart value would be one fixed time for every tick). A one-off release (a backfill of one
    # date) passes it with job.extraArgs.
    "logical_time": "the CronJob tick passes its scheduled time; a one-off release uses job.extraArgs",
    "latest_pointer": "the CronJob tick passes <job.output>/_LATEST; a one-off release uses job.extraArgs",
}


def camel(name: str) -> str:
    """The chart's value name of an option: job.<camelCase of the field>."""
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def sample(name: str) -> tuple[typing.Any, list[str], str]:
    """For an option: a value of its type, its words on the command line, and its text in the environment."""
    f, opt = next((f, o) for f, o in OPTIONS if f.name == name)
    hint = typing.get_type_hints(RunConfig)[name]
    kind = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) else {typing.get_origin(hint) or hint}
    flag = f"--{options.flag(f)}"
    if opt.choices:
        return opt.choices[-1], [flag, opt.choices[-1]], opt.choices[-1]
    if opt.switch:
        return True, [flag], "true"
    if datetime in kind:
        return datetime(2026, 12, 3, 2, tzinfo=timezone.utc), [flag, "2026-12-03T02:00:00Z"], "2026-12-03T02:00:00Z"
    if dict in kind:
        return {"k": "v"}, [flag, "k=v"], "k=v"
    if list in kind:
        return ["a", "b"], [flag, "a,b"], "a,b"
    if int in kind:
        return 7, [flag, "7"], "7"
    if float in kind:
        return 0.5, [flag, "0.5"], "0.5"
    return "abc1", [flag, "abc1"], "abc1"


def job_values() -> tuple[dict, dict]:
    """The job section of values.yaml and of values.schema.json's properties."""
    values = yaml.safe_load((c.CHART / "values.yaml").read_text())["job"]
    schema = json.loads((c.CHART / "values.schema.json").read_text())["properties"]["job"]["properties"]
    return values, schema


# ------------------------------------------------------------------------------------------- one description

def test_readmes_option_table_is_the_one_runconfig_renders():
    readme = (c.ROOT / "README.md").read_text()
    assert options.with_table(readme, RunConfig) == readme, \
        "README's option table is not RunConfig's: regenerate it with `PYTHONPATH=job python scripts/render-options-table.py`"


@pytest.mark.parametrize("name", NAMES)
def test_help_texts_say_the_default_they_derive_and_never_retype_it(name):
    f, opt = next((f, o) for f, o in OPTIONS if f.name == name)
    assert "default" not in opt.help, "the help's default comes from the field's: leave it out of the text"
    shown = options.default_text(f)
    help_ = options.help_text(f)
    assert help_.startswith(opt.help) and (shown in help_ if shown else help_ == opt.help)


@pytest.mark.parametrize("name", NAMES)
def test_flag_environment_variable_and_config_key_give_the_same_value(name, tmp_path: Path):
    value, words, text = sample(name)
    base = {"input": "/in", "output": "/out", "model": "m:f"}
    args = cli._parser().parse_args(["run", *[w for k, v in base.items() if k != name for w in (f"--{k}", v)], *words])
    from_flag = getattr(config.load(cli._flags(args), env={}), name)
    from_env = getattr(config.load({}, env={f"SHARDSCORE_{name.upper()}": text}), name)
    (tmp_path / "c.yaml").write_text(f"{name.replace('_', '-')}: {text}\n")
    from_file = getattr(config.load({}, env={}, config_file=str(tmp_path / "c.yaml")), name)
    assert from_flag == from_env == from_file == value


# ------------------------------------------------------------------------------------------- the chart

def test_every_option_is_mapped_by_the_chart_or_cli_only():
    values, schema = job_values()
    assert set(CLI_ONLY) <= set(NAMES), f"CLI_ONLY names options RunConfig does not have: {set(CLI_ONLY) - set(NAMES)}"
    for name in NAMES:
        mapped = camel(name) in values and camel(name) in schema
        assert mapped != (name in CLI_ONLY), (
            f"option {name}: " + ("mapped by the chart and also in CLI_ONLY" if mapped else
                                  f"job.{camel(name)} is missing in values.yaml or values.schema.json; map it in the "
                                  "chart (templates/_rayjob.tpl, shardscore.entrypointArgs) or add it to CLI_ONLY "
                                  "with why"))
    # And the chart has no job value that is not an option (extraArgs passes words through).
    mapped = {camel(name) for name in NAMES if name not in CLI_ONLY} | {"extraArgs"}
    assert set(values) == set(schema) == mapped


@pytest.mark.parametrize("name", [n for n in NAMES if n not in CLI_ONLY])
def test_each_chart_value_reaches_the_entrypoint_as_its_option(name):
    """job.<option> set alone (on top of ci/cpu-values.yaml) arrives in RunConfig as the CLI parses the entrypoint."""
    value, _, _ = sample(name)
    docs = c.render([CPU], COMPANIONS.get(name, []), extra=["--set-json", f"job.{camel(name)}={json.dumps(value)}"])
    argv = shlex.split(c.one(docs, "RayJob")["spec"]["entrypoint"])
    cfg = config.load(cli._flags(cli._parser().parse_args(argv[1:])), env={})
    got = getattr(cfg, name)
    if isinstance(value, dict):
        assert value.items() <= got.items(), (name, argv)
    else:
        assert got == value, (name, argv)
