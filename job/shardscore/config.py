"""Run options from flags, environment variables and a YAML file.

Precedence, highest first: command-line flags, then `SHARDSCORE_<OPTION>` environment variables (for example
`SHARDSCORE_NUM_GPUS_PER_WORKER=0.5`), then the YAML file given with `--config` (or `SHARDSCORE_CONFIG`), then
the defaults. YAML keys are the option names with '_' or '-' (`num_gpus_per_worker: 0.5`). A file's value is
judged as the text it was written with, by the flag's own converter, so `batch_size: 2.9` or `batch_size: true` is
refused as `--batch-size 2.9` is, never truncated or coerced; an empty value (`pool:` or `pool: ~`) means the default.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

import yaml

from .errors import ConfigError

ENV_PREFIX = "SHARDSCORE_"
STRATEGIES = ("tasks", "actors")
DEVICES = ("auto", "cpu", "cuda")
OVERLAP = ("auto", "on", "off")
_POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


@dataclass
class RunConfig:
    """Every option of `shardscore run` and `shardscore plan`, with its default."""

    input: str = ""
    output: str = ""
    model: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)
    strategy: str = "tasks"
    num_actors: int | None = None
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    memory_per_worker: int | None = None
    max_in_flight: int | None = None
    device: str = "auto"
    batch_size: int = 65536
    max_rows_per_shard: int | None = None
    max_shards_per_task: int = 64
    key_columns: list[str] = field(default_factory=list)
    max_failed_shards: int = 0
    max_retries: int = 3
    pool: str | None = None
    pool_idle_timeout: float = 600.0
    overwrite: bool = False
    s3_endpoint: str | None = None
    ray_address: str | None = None
    progress_interval: float = 10.0
    summary_json: str | None = None
    grace_period: float = 20.0
    lease_ttl: float = 60.0
    overlap: str = "auto"

    def validate(self, need_output: bool = True) -> "RunConfig":
        """Check every option before anything runs; errors name the option and the value."""
        for name in ("input", "model") + (("output",) if need_output else ()):
            if not getattr(self, name):
                raise ConfigError(f"--{_flag(name)} is required")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.overlap not in OVERLAP:
            raise ConfigError(f"--overlap {self.overlap!r}: choose one of {', '.join(OVERLAP)}")
        _positive(self, "num_cpus_per_worker", allow_zero=True)
        _positive(self, "num_gpus_per_worker", allow_zero=True)
        if self.num_cpus_per_worker == 0 and self.num_gpus_per_worker == 0:
            raise ConfigError("--num-cpus-per-worker and --num-gpus-per-worker are both 0: a worker needs one")
        if self.num_gpus_per_worker > 1 and self.num_gpus_per_worker != int(self.num_gpus_per_worker):
            raise ConfigError(f"--num-gpus-per-worker {self.num_gpus_per_worker}: above 1 it must be whole")
        for name in ("batch_size", "num_actors", "max_in_flight", "max_rows_per_shard", "memory_per_worker",
                     "max_shards_per_task"):
            if getattr(self, name) is not None:
                _positive(self, name)
        for name in ("max_failed_shards", "max_retries", "progress_interval", "grace_period"):
            _positive(self, name, allow_zero=True)
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
        return self


def _flag(name: str) -> str:
    return "model-arg" if name == "model_args" else name.replace("_", "-")


def _positive(cfg: RunConfig, name: str, allow_zero: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--{_flag(name)} {value}: must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"--{_flag(name)} {value}: must be {'>= 0' if allow_zero else '> 0'}")


def _check_summary_path(path: str) -> None:
    """--summary-json is written after the run: a path that cannot take it must fail now, not after _SUCCESS."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"--summary-json {path}: is a directory")
    if not os.path.isdir(parent):
        raise ConfigError(f"--summary-json {path}: its folder {parent} does not exist")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise ConfigError(f"--summary-json {path}: not writable")


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


#: How an option's text (a flag's, an environment variable's, or a --config file's value as written) becomes its
#: value. Options not named here are text: paths, URLs, the model spec, names.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(("num_actors", "max_in_flight", "max_shards_per_task", "batch_size", "max_rows_per_shard",
                     "max_failed_shards", "max_retries"), _whole),
    **dict.fromkeys(("num_cpus_per_worker", "num_gpus_per_worker", "progress_interval", "pool_idle_timeout",
                     "grace_period", "lease_ttl"), _number),
    "memory_per_worker": parse_size, "key_columns": _columns, "model_args": parse_model_args, "overwrite": _boolean,
    "strategy": _choice(STRATEGIES), "device": _choice(DEVICES), "overlap": _choice(OVERLAP),
}


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
    names = {f.name for f in fields(RunConfig)}
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
    return RunConfig(**values)


#: SHARDSCORE_* variables that are not run options: the config file, and those of the project's scripts.
_OTHER_ENV = {"CONFIG"}


def _warn_unknown_env(env: Mapping[str, str], names: set[str]) -> None:
    """A misspelt SHARDSCORE_* variable is silently no option at all: say so, naming the closest option."""
    options = {name.upper() for name in names}
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):]
        if name in options or name in _OTHER_ENV:
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
