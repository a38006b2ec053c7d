"""Run options from flags, environment variables and a YAML file.

Precedence, highest first: command-line flags, then `SHARDSCORE_<OPTION>` environment variables (for example
`SHARDSCORE_NUM_GPUS_PER_WORKER=0.5`), then the YAML file given with `--config` (or `SHARDSCORE_CONFIG`), then
the defaults. YAML keys are the option names with '_' or '-' (`num_gpus_per_worker: 0.5`).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

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
        if self.summary_json and self.summary_json != "-":
            _check_summary_path(self.summary_json)
        return self


def _flag(name: str) -> str:
    return name.replace("_", "-")


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


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected a boolean: true/false, yes/no, on/off or 1/0")


def parse_size(text: str | int) -> int:
    """Bytes from '2GiB', '512Mi', '1e9'-free plain integers; errors name the value."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 2GiB, 512MiB, 1000000)")
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_model_args(items: list[str] | str | Mapping[str, Any]) -> dict[str, Any]:
    """KEY=VALUE pairs (values parsed as YAML: 8 is an int, true a bool), a JSON object, or a mapping."""
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):
        text = items.strip()
        if text.startswith("{"):
            try:
                return dict(json.loads(text))
            except ValueError as exc:
                raise ConfigError(f"model args {text!r}: not a JSON object ({exc})") from exc
        items = [p for p in text.split(",") if p]
    args: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-arg {item!r}: expected KEY=VALUE")
        args[key.strip()] = yaml.safe_load(value) if value else ""
    return args


_CONVERTERS = {
    "num_actors": int, "max_in_flight": int, "max_shards_per_task": int, "batch_size": int, "max_rows_per_shard": int,
    "max_failed_shards": int, "max_retries": int, "num_cpus_per_worker": float,
    "num_gpus_per_worker": float, "progress_interval": float, "pool_idle_timeout": float, "memory_per_worker": parse_size,
    "grace_period": float, "lease_ttl": float,
    "key_columns": lambda v: [c.strip() for c in v.split(",") if c.strip()] if isinstance(v, str) else list(v),
    "model_args": parse_model_args,
    "overwrite": _boolean,
}


def _convert(name: str, value: Any, source: str) -> Any:
    convert = _CONVERTERS.get(name)
    if convert is None or value is None:
        return value
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
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
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values")
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(f"--config {path}: unknown option {key!r}")
        values[name] = _convert(name, value, f"--config {path}, option {key}")
    return values
