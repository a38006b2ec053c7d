"""Run options from flags, environment variables and a YAML file.

Precedence, highest first: command-line flags, then `SHARDSCORE_<OPTION>` environment variables (for example
`SHARDSCORE_NUM_GPUS_PER_WORKER=0.5`), then the YAML file given with `--config` (or `SHARDSCORE_CONFIG`), then
the defaults. Each option is a field of `RunConfig`, described once by its Option (options.py): the flag, the
environment variable and the YAML key all come from it. YAML keys are the option names with '_' or '-'
(`num_gpus_per_worker: 0.5`). A file's value is judged as the text it was written with, by the flag's own
converter, so `batch_size: 2.9` or `batch_size: true` is refused as `--batch-size 2.9` is, never truncated or
coerced; an empty value (`pool:` or `pool: ~`) means the default.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Mapping

import yaml

from .errors import ConfigError
from .options import flag, option, options
from .templates import PathTemplates, fill, parse_time
from .templates import names as placeholder_names

ENV_PREFIX = "SHARDSCORE_"
STRATEGIES = ("tasks", "actors")
DEVICES = ("auto", "cpu", "cuda")
OVERLAP = ("auto", "on", "off")
_POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def _boolean(value: str | bool) -> bool:
    if isinstance(value, bool):  # a store_true flag (--overwrite)
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected a boolean: true/false, yes/no, on/off or 1/0")


def _whole(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def _bad_rows(value: str | int | float) -> int | float:
    """--max-bad-rows: a whole number of rows (as int) or a fraction (as float); validate checks the range."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a whole number of rows or a fraction between 0 and 1") from None


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return value
    return convert


def _columns(value: str | list[str]) -> list[str]:
    parts = value.split(",") if isinstance(value, str) else value
    return [c.strip() for c in parts if c.strip()]


def parse_size(text: str | int) -> int:
    """Bytes from '2GiB', '512Mi', '1e9'-free plain integers; errors name the value."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 2GiB, 512MiB, 1000000)")
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _UNITS[unit])


def model_arg_value(text: str) -> Any:
    """A KEY=VALUE value as YAML reads it, unless YAML would turn a number into one written otherwise.

    `8`, `-3`, `0.5`, `1.0`, `1.0e-3`, `true`, `no`, `null`, `[1, 2]` are typed as YAML types them; `1.10`
    (not 1.1), `010` (not 8), `0x1f`, `1_000`, `1:20` stay the text typed, because a number must read back as
    written (exponent forms, `.inf` and `.nan` aside). Quote to force a string: `--model-arg "v='8'"`.
    """
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"{text!r} is not a YAML value: quote it as a string ({exc.problem})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    typed = text.strip().removeprefix("+")
    if isinstance(value, int):
        return value if str(value) == typed else text.strip()
    reads_back = not math.isfinite(value) or "e" in typed.lower() or repr(value) == typed
    return value if reads_back else text.strip()


def parse_model_args(items: list[str] | str | Mapping[str, Any]) -> dict[str, Any]:
    """KEY=VALUE pairs (values as model_arg_value reads them), a JSON object, or a mapping."""
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):
        text = items.strip()
        if text.startswith("{"):
            try:
                return dict(json.loads(text))
            except ValueError as exc:
                raise ValueError(f"not a JSON object ({exc})") from None
        items = [p for p in text.split(",") if p]
    args: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        args[key.strip()] = model_arg_value(value)
    return args


@dataclass
class RunConfig:
    """Every option of `shardscore run` and `shardscore plan`, with its default. Each field's Option (options.py)
    is the one description of the option: its flag, help, converter, environment variable and --config key."""

    input: str = option("", "Parquet dataset: a local directory, a file, or s3://bucket/prefix (any pyarrow "
                        "filesystem URI works), or an Iceberg table's current snapshot, iceberg://<catalog>/<namespace>."
                        "<table>, or another with @<snapshot id>, or a Delta table's latest version, delta+<location>, "
                        "or another with @<version>; may hold placeholders of --logical-time",
                        required=True)
    output: str = option("", "where predictions go: a local path or s3://bucket/prefix (any pyarrow filesystem URI "
                         "works), or an Iceberg table, iceberg://<catalog>/<namespace>.<table> (the catalog as "
                         "pyiceberg's configuration names it), or a Delta table, delta+<local path or s3:// URI>; may "
                         "hold placeholders of --logical-time",
                         required=True)
    logical_time: datetime | None = option(
        None, "the time the run stands for, ISO 8601 (2026-12-03, 2026-12-03T02:00:00Z; no offset: UTC, an offset: "
        "converted to UTC), which fills the placeholders of --input and --output: {date} 2026-12-03, {hour} 02, "
        "{ts} 20261203T020000Z, or any of them with a strftime format, {date:%Y/%m/%d}; {{ }}: literal braces",
        convert=parse_time, metavar="TIME")
    model: str = option("", "model factory 'package.module:factory', e.g. shardscore.models.dummy:load_model",
                        required=True)
    model_args: dict[str, Any] = option(
        {}, "keyword argument for the factory (repeatable). Values are read as YAML (8, 0.5, true, [1, 2]), but a "
        "number that would not read back as typed stays text (1.10, 010, 0x1f); quote to force text: "
        "--model-arg \"v='8'\"", convert=parse_model_args, flag="model-arg", metavar="KEY=VALUE", repeated=True)
    strategy: str = option("tasks", "tasks: one Ray task per shard; actors: a pool of actors that keep the model "
                           "(--num-actors)", choices=STRATEGIES)
    num_actors: int | None = option(None, "actor pool size", convert=_whole,
                                    none_means="as many as the cluster's resources hold")
    num_cpus_per_worker: float = option(1.0, "CPUs each task or actor asks for", convert=_number)
    num_gpus_per_worker: float = option(0.0, "GPUs each task or actor asks for; fractions allowed", convert=_number)
    memory_per_worker: int | None = option(None, "memory each task or actor reserves, e.g. 2GiB", convert=parse_size,
                                           none_means="none")
    max_in_flight: int | None = option(None, "tasks submitted at once", convert=_whole,
                                       none_means="twice what the cluster runs, re-read every 5 s, so that an "
                                                  "autoscaler sees the queue and grows the cluster")
    device: str = option("auto", "cpu, cuda (an error where there is no CUDA, never a silent CPU run) or auto",
                         choices=DEVICES)
    batch_size: int = option(65536, "rows per batch handed to the model", convert=_whole)
    max_rows_per_shard: int | None = option(None, "split files larger than this by row groups", convert=_whole)
    max_shards_per_task: int = option(64, "most small shards one task scores in a row (1: a task per shard); shards "
                                      "of 128k+ rows always go alone", convert=_whole)
    key_columns: list[str] = option([], "input columns copied next to the predictions, comma-separated",
                                    convert=_columns)
    max_failed_shards: int = option(0, "failed shards tolerated before the run fails", convert=_whole)
    max_bad_rows: float = option(0, "rows of a shard the model may raise on before the shard fails: a count, or a "
                                 "fraction of the shard's rows (0.001); they are left out of the predictions and "
                                 "written with the error to <output>/_rejected/. 0: the first fails the shard",
                                 convert=_bad_rows)
    batch_timeout: float | None = option(
        None, "seconds one model call may take: a call that takes longer ends its worker process (a hung model cannot "
        "be interrupted), the batch is tried once more on a fresh one, then its rows are rejected (within "
        "--max-bad-rows) or the shard fails", convert=_number, none_means="no bound")
    max_retries: int = option(3, "retries of a shard whose worker crashed (a batch over --batch-timeout needs 2 to be "
                              "rejected rather than fail the shard)", convert=_whole)
    pool: str | None = option(None, "with --strategy actors: keep the actors (and the loaded model) for the next run "
                              "on this cluster, under this name")
    pool_idle_timeout: float = option(600.0, "seconds a --pool actor waits for work before it ends", convert=_number)
    overwrite: bool = option(False, "recompute shards whose input or model changed instead of refusing",
                             convert=_boolean, switch=True)
    incremental: bool = option(False, "one output that follows a growing input: each run scores the input files no "
                               "run has committed, re-scores changed ones (their old predictions replaced) and "
                               "removes the predictions of deleted ones; another model still needs --overwrite",
                               convert=_boolean, switch=True)
    partition_table: bool = option(False, "a table output the run creates is partitioned like the input's Hive folders "
                                   "(one string column per <key>=<value> folder level, filled from each file's "
                                   "folders); an existing table keeps its own partitioning",
                                   convert=_boolean, switch=True)
    s3_endpoint: str | None = option(None, "S3-compatible endpoint URL; credentials and region come from the standard "
                                     "AWS variables", none_means="AWS_ENDPOINT_URL, else AWS")
    ray_address: str | None = option(None, "cluster to join", none_means="RAY_ADDRESS, else a local Ray")
    progress_interval: float = option(10.0, "seconds between progress lines", convert=_number)
    latest_pointer: str | None = option(
        None, "once the run succeeded, point this JSON file (a local path or s3://...) at its --output, unless it "
        "names a run of a later logical time already: the newest complete one of many per-tick outputs; may hold "
        "placeholders of --logical-time",
        metavar="FILE")
    summary_json: str | None = option(None, "also write the summary as JSON to this file ('-': stdout, which then "
                                      "carries only the JSON; every other line, the workers' prints included, goes "
                                      "to stderr)")
    grace_period: float = option(20.0, "seconds shards in flight get to finish after SIGTERM or SIGINT",
                                 convert=_number)
    lease_ttl: float = option(60.0, "seconds without a heartbeat after which a run's hold on the output expires",
                              convert=_number)
    overlap: str = option("auto", "read the next batches and write predictions in background threads while the "
                          "model scores: on, off, or auto: for models with a device, prepare(device)",
                          choices=OVERLAP)
    #: Not an option: --input and --output as given, before the logical time filled them (`resolved` sets it;
    #: None in a RunConfig built in code, whose paths must then hold no placeholder).
    templates: PathTemplates | None = field(default=None, repr=False)

    def given_paths(self) -> PathTemplates:
        """The paths as given and the logical time, for the manifest, the run record and messages."""
        return self.templates or PathTemplates(self.input, self.output, self.logical_time)

    def validate(self, need_output: bool = True) -> "RunConfig":
        """Check every option before anything runs; errors name the option and the value."""
        _refuse_unfilled(self)
        for name in sorted(_REQUIRED, key=lambda name: name == "output"):  # --output last: plan may go without it
            if not getattr(self, name) and (need_output or name != "output"):
                raise ConfigError(f"--{_flag(name)} is required")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"--{_flag(name)} {getattr(self, name)!r}: choose one of {', '.join(choices)}")
        _positive(self, "num_cpus_per_worker", allow_zero=True)
        _positive(self, "num_gpus_per_worker", allow_zero=True)
        if self.num_cpus_per_worker == 0 and self.num_gpus_per_worker == 0:
            raise ConfigError("--num-cpus-per-worker and --num-gpus-per-worker are both 0: a worker needs one")
        if self.num_gpus_per_worker > 1 and self.num_gpus_per_worker != int(self.num_gpus_per_worker):
            raise ConfigError(f"--num-gpus-per-worker {self.num_gpus_per_worker}: above 1 it must be whole")
        for name in ("batch_size", "num_actors", "max_in_flight", "max_rows_per_shard", "memory_per_worker",
                     "max_shards_per_task", "batch_timeout"):
            if getattr(self, name) is not None:
                _positive(self, name)
        for name in ("max_failed_shards", "max_retries", "progress_interval", "grace_period", "max_bad_rows"):
            _positive(self, name, allow_zero=True)
        _check_bad_rows(self)
        _positive(self, "lease_ttl")
        if self.lease_ttl < 2:
            raise ConfigError(f"--lease-ttl {self.lease_ttl}: must be at least 2 seconds (heartbeats come every ttl/4)")
        if self.device == "cuda" and self.num_gpus_per_worker == 0:
            raise ConfigError("--device cuda needs --num-gpus-per-worker > 0, so that Ray places the work on "
                              "GPU nodes and gives it a GPU")
        for name in ("num_actors", "pool"):
            if getattr(self, name) is not None and self.strategy != "actors":
                raise ConfigError(f"--{_flag(name)} applies to --strategy actors only")
        if self.pool is not None and not _POOL_NAME.match(self.pool):
            raise ConfigError(f"--pool {self.pool!r}: use lowercase letters, digits and '-' (at most 40)")
        _positive(self, "pool_idle_timeout")
        twice = sorted({c for c in self.key_columns if self.key_columns.count(c) > 1})
        if twice:
            raise ConfigError(f"--key-columns {','.join(self.key_columns)}: {', '.join(twice)} given more than "
                              "once; name each column once")
        if self.summary_json and self.summary_json != "-":
            _check_summary_path(self.summary_json)
        if self.latest_pointer and (self.latest_pointer.rstrip("/") + "/").startswith(self.output.rstrip("/") + "/"):
            raise ConfigError(f"--latest-pointer {self.latest_pointer}: inside --output {self.output}; it names the "
                              "newest of many outputs, so it lives beside them (their parent folder)")
        return self


#: From RunConfig's Options: how each option's text becomes its value (options not named here are text), which
#: options are required, and which take one of a few values.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    f.name: opt.convert or _choice(opt.choices) for f, opt in options(RunConfig) if opt.convert or opt.choices}
_REQUIRED = tuple(f.name for f, opt in options(RunConfig) if opt.required)
_CHOICES = {f.name: opt.choices for f, opt in options(RunConfig) if opt.choices}


def resolved(cfg: RunConfig) -> RunConfig:
    """cfg with --input, --output and --latest-pointer filled from --logical-time (templates.fill), --input's and
    --output's as given kept in `templates`: done once, in `load`, before anything reads the paths; a resolved cfg
    is returned as it is."""
    if cfg.templates is not None:
        return cfg
    when = None if cfg.logical_time is None else parse_time(cfg.logical_time)  # a datetime given in code: in UTC
    given = PathTemplates(cfg.input, cfg.output, when)
    pointer = cfg.latest_pointer and fill(cfg.latest_pointer, when, "--latest-pointer")
    return replace(cfg, input=fill(cfg.input, when, "--input"), output=fill(cfg.output, when, "--output"),
                   latest_pointer=pointer, logical_time=when, templates=given)


def _refuse_unfilled(cfg: RunConfig) -> None:
    """A RunConfig built in code that skipped `resolved` would read '{date}' as a folder's name."""
    if cfg.templates is None and (placeholder_names(cfg.input, "--input") or placeholder_names(cfg.output, "--output")):
        raise ConfigError(f"--input {cfg.input!r} / --output {cfg.output!r}: placeholders not filled; pass the "
                          "RunConfig through config.resolved")


def _flag(name: str) -> str:
    """The option's flag without '--', for messages."""
    return flag(RunConfig.__dataclass_fields__[name])


def _positive(cfg: RunConfig, name: str, allow_zero: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--{_flag(name)} {value}: must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"--{_flag(name)} {value}: must be {'>= 0' if allow_zero else '> 0'}")


def _check_bad_rows(cfg: RunConfig) -> None:
    """A count must be whole and a fraction below 1; key columns must not take the quarantine file's own names."""
    value = cfg.max_bad_rows
    if isinstance(value, float) and value >= 1:  # _bad_rows gives a whole count as int
        raise ConfigError(f"--max-bad-rows {value}: a fraction of a shard's rows must be below 1, and a count of rows "
                          "a whole number")
    from .quarantine import OWN_COLUMNS  # here, not at the top: it imports pyarrow, which `--help` need not

    clash = sorted(set(cfg.key_columns) & set(OWN_COLUMNS)) if value else []
    if clash:
        raise ConfigError(f"--key-columns {','.join(cfg.key_columns)}: {', '.join(clash)} is also a column of the "
                          "file of rejected rows (--max-bad-rows); copy it under another name")


def _check_summary_path(path: str) -> None:
    """--summary-json is written after the run: a path that cannot take it must fail now, not after _SUCCESS."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"--summary-json {path}: is a directory")
    if not os.path.isdir(parent):
        raise ConfigError(f"--summary-json {path}: its folder {parent} does not exist")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise ConfigError(f"--summary-json {path}: not writable")


def _convert(name: str, value: Any, source: str) -> Any:
    convert = _CONVERTERS.get(name)
    if convert is None or value is None:
        return value
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        if isinstance(value, list):  # repeated items (--model-arg): the message names the one at fault
            raise ConfigError(f"{source} {exc}") from exc
        raise ConfigError(f"{source}: invalid value {value!r} for {name} ({exc})") from exc


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
         config_file: str | None = None) -> RunConfig:
    """Merge the sources in precedence order. `flags` holds only the options given on the command line."""
    env = os.environ if env is None else env
    names = {f.name for f, _ in options(RunConfig)}
    values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        values.update(_from_file(config_file, names))
    for name in names:
        key = ENV_PREFIX + name.upper()
        if env.get(key, "") != "":
            values[name] = _convert(name, env[key], f"environment variable {key}")
    _warn_unknown_env(env, names)
    for name, value in flags.items():
        if value is not None:
            values[name] = _convert(name, value, f"--{_flag(name)}")
    return resolved(RunConfig(**values))


#: SHARDSCORE_* variables that are not run options: the config file, and those of the project's own scripts and
#: builds (the KubeRay archive and CRDs, helm, Docker, the chart's submitter, the local cluster and its e2e), which
#: a shell that runs both may well have set.
_OTHER_ENV = {"CONFIG", "KUBERAY_ARCHIVE", "CRD_DIR", "SKIP_HELM3", "DOCKER_DIR", "DOCKER_WAIT_S", "TICK_JOB"}
_OTHER_ENV_PREFIXES = ("CLUSTER_", "E2E_")


def _warn_unknown_env(env: Mapping[str, str], names: set[str]) -> None:
    """A misspelt SHARDSCORE_* variable is silently no option at all: say so, naming the closest option."""
    options = {name.upper() for name in names}
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):]
        if name in options or name in _OTHER_ENV or name.startswith(_OTHER_ENV_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(options), n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        print(f"shardscore: warning: environment variable {key} is not an option{hint}", file=sys.stderr)


def _from_file(path: str, names: set[str]) -> dict[str, Any]:
    """The file's options, each value as the text it was written with (yaml.compose keeps it), for _convert."""
    try:
        with open(path, encoding="utf-8") as f:
            root = yaml.compose(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from exc
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values")
    values = {}
    for key_node, value_node in root.value:
        key = str(key_node.value)
        name = key.replace("-", "_")
        if name not in names:
            raise ConfigError(f"--config {path}: unknown option {key!r}")
        if value_node.tag != _NULL:
            source = f"--config {path}, option {key}"
            values[name] = _convert(name, _file_value(name, value_node, source), source)
    return values


_NULL = "tag:yaml.org,2002:null"


def _file_value(name: str, node: yaml.Node, source: str) -> str | list[str] | dict[str, Any]:
    """What the flag would carry: a scalar's text; a list of texts for key_columns and model_args (K=V items);
    a mapping for model_args, its plain values read by model_arg_value as --model-arg's are."""
    if isinstance(node, yaml.ScalarNode):
        return node.value
    if name == "model_args" and isinstance(node, yaml.MappingNode):
        loader = yaml.SafeLoader("")
        return {str(k.value): model_arg_value(v.value) if isinstance(v, yaml.ScalarNode) and v.style is None
                else loader.construct_document(v) for k, v in node.value}
    if name in ("key_columns", "model_args") and isinstance(node, yaml.SequenceNode) \
            and all(isinstance(item, yaml.ScalarNode) for item in node.value):
        return [item.value for item in node.value]
    kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
    raise ConfigError(f"{source}: invalid value, a {kind} ({yaml.serialize(node).strip()}): expected a single "
                      f"value{' or a list of them' if name == 'key_columns' else ''}")
