"""tick.json: the contract between the chart and `shardscore tick`, stated here and nowhere else.

The chart's helm/shardscore/templates/cronjob.yaml renders tick.json into the ConfigMap `<fullname>-tick`, which the
tick pod mounts at /etc/shardscore/tick.json; `TickConfig.from_file` reads it. Its fields are `FIELDS`;
tests/test_tick_contract.py renders the chart and checks that it writes exactly these and that this loader takes
them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ShardscoreError
from ..templates import names as placeholder_names

#: The run options the tick sets: its scheduled time (config.RunConfig.logical_time), and the pointer to the newest
#: complete tick's output (config.RunConfig.latest_pointer).
LOGICAL_TIME = "--logical-time"
LATEST_POINTER = "--latest-pointer"

#: Where scheduled runs write (FIELDS["layout"]).
LAYOUTS = ("perTick", "perDate", "incremental")

#: Every field of tick.json, with what the chart puts there and what the tick does with it.
FIELDS: dict[str, str] = {
    "namePrefix": "the chart's full name; each tick's RayJob is <namePrefix>-<unix minutes of the scheduled time>",
    "output": "job.output without a trailing '/', its placeholders ({date}, templates.py) filled from the tick's "
              "scheduled time; where a tick's run writes depends on the layout",
    "layout": "scheduleLayout: perTick (each tick's run writes <output>/run=<UTC YYYYMMDDTHHMMZ> and moves "
              "<output>/_LATEST to it), perDate (it writes <output> filled: its placeholders name the date) or "
              "incremental (every tick writes <output>, and argv has --incremental); default perTick",
    "argv": "the words of the RayJob entrypoint, `shardscore run ... --output <job.output> ...`, unquoted, without "
            "--logical-time and --latest-pointer; the tick sets the value of its first --output to the tick's run "
            "folder, appends `--logical-time <the tick's scheduled time, UTC, 2026-12-03T02:30:00Z>` (which fills "
            "the placeholders of --input and --output) and, for the perTick layout, `--latest-pointer "
            "<output>/_LATEST`, and quotes the words for the shells",
    "rayJob": "the RayJob of every tick (kind RayJob, with a spec) without metadata.name and spec.entrypoint, "
              "which the tick sets with its labels, annotations and ownerReference",
    "wait": "cronJob.waitForCompletion: wait for the run to end (default true)",
    "pollSeconds": "cronJob.pollSeconds: seconds between looks at the RayJob's status (> 0; default 15)",
    "deadlineSeconds": "cronJob.deadlineSeconds: the tick deletes its RayJob this long after the scheduled time "
                       "(null: no deadline)",
}


class TickError(ShardscoreError):
    """The tick cannot start: bad configuration, a Job name without minutes, a RayJob that is not this tick's."""


def check_templates(argv: list[str], output: str) -> None:
    """argv leaves the logical time to the tick, and the paths' placeholders are ones the run can fill. Refused
    here, the tick fails at once (exit 2) instead of every tick's run failing after its cluster started."""
    for option, what in ((LOGICAL_TIME, "each tick's scheduled time"), (LATEST_POINTER, "<job.output>/_LATEST")):
        if any(word == option or word.startswith(option + "=") for word in argv):
            raise TickError(f"tick configuration: argv sets {option}, which the tick sets to {what}; remove it "
                            "(job.extraArgs)")
    paths = [(option, argv[argv.index(option) + 1]) for option in ("--input", "--output") if option in argv[:-1]]
    for option, template in [*paths, ("--output", output)]:
        try:
            placeholder_names(template, option)
        except ConfigError as exc:
            raise TickError(f"tick configuration: {exc}") from exc


def output_value_index(argv: list[str]) -> int:
    """Where in argv the value of --output is: after the first `--output` word (the chart renders one, as
    `--output VALUE`, never `--output=VALUE`)."""
    index = argv.index("--output") + 1 if "--output" in argv else len(argv)
    if index >= len(argv):
        raise TickError(f"tick configuration: argv has no value of --output: {argv}")
    return index


@dataclass(frozen=True)
class TickConfig:
    """tick.json, read (`FIELDS` says what each field is)."""

    name_prefix: str
    output: str
    argv: list[str]
    output_arg_index: int
    rayjob: dict[str, Any]
    wait: bool = True
    poll_seconds: float = 15.0
    deadline_seconds: float | None = None
    layout: str = "perTick"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TickConfig":
        try:
            argv = list(data["argv"])
            cfg = cls(name_prefix=data["namePrefix"], output=data["output"], argv=argv,
                      output_arg_index=output_value_index(argv), rayjob=data["rayJob"],
                      wait=bool(data.get("wait", True)), poll_seconds=float(data.get("pollSeconds") or 15),
                      deadline_seconds=None if data.get("deadlineSeconds") is None else float(data["deadlineSeconds"]),
                      layout=data.get("layout") or "perTick")
        except (KeyError, TypeError, ValueError) as exc:
            raise TickError(f"tick configuration: missing or bad field: {exc}") from exc
        if cfg.rayjob.get("kind") != "RayJob" or not isinstance(cfg.rayjob.get("spec"), dict):
            raise TickError("tick configuration: rayJob is not a RayJob template")
        if cfg.layout not in LAYOUTS:
            raise TickError(f"tick configuration: layout {cfg.layout!r}: choose one of {', '.join(LAYOUTS)}")
        check_templates(cfg.argv, cfg.output)
        if cfg.poll_seconds <= 0:
            raise TickError(f"tick configuration: pollSeconds must be positive, got {cfg.poll_seconds}")
        return cfg

    @classmethod
    def from_file(cls, path: str) -> "TickConfig":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except OSError as exc:
            raise TickError(f"--config {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise TickError(f"--config {path}: not JSON: {exc}") from exc
