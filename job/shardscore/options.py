"""The run options described once: each field of `RunConfig` carries an `Option` (its help, choices, converter),
from which come the flags of `shardscore run` and `plan`, their help texts with the default, and README's table.

`PYTHONPATH=job python scripts/render-options-table.py` rewrites README's table from it (tests/test_options.py
checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

#: The lines around README's generated table.
TABLE_START = "<!-- run options: generated from RunConfig by `PYTHONPATH=job python scripts/render-options-table.py` -->"
TABLE_END = "<!-- end of run options -->"


@dataclass(frozen=True)
class Option:
    """What a run option is beyond its name, type and default (those are the RunConfig field's)."""

    help: str
    #: Turns the option's text (a flag's, an environment variable's, a --config file's) into its value; None: the
    #: text is the value (paths, URLs, names). Options with `choices` check the text against them.
    convert: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] = ()
    #: What a default of None stands for, in the help text: "(default: <none_means>)".
    none_means: str = ""
    #: Shown as required (RunConfig.validate checks it).
    required: bool = False
    #: The flag when it is not the field's name with '-' (model_args: --model-arg, given once per item).
    flag: str = ""
    metavar: str | None = None
    #: Given once per item (argparse's action="append").
    repeated: bool = False
    #: A flag without a value that means true (argparse's action="store_const", const=True).
    switch: bool = False


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A RunConfig field with its Option; an empty list or dict default becomes a default_factory."""
    meta = {"option": Option(help, **kwargs)}
    if isinstance(default, (list, dict)):
        if default:
            raise ValueError(f"option {help!r}: a mutable default must be empty")
        return dataclasses.field(default_factory=type(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def options(config_class: type) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of config_class that are options, in their order, each with its Option."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(config_class) if "option" in f.metadata]


def flag(f: dataclasses.Field) -> str:
    """The flag's name without '--'."""
    return f.metadata["option"].flag or f.name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(f: dataclasses.Field) -> str:
    """The default as the help text says it: a value, what None stands for, or "" when there is nothing to say (a
    required option, an empty list, a switch that is off, None that stands for nothing)."""
    value = default_of(f)
    if value is None:
        return f.metadata["option"].none_means
    if value is False or (isinstance(value, (str, list, dict)) and not value):
        return ""
    return _shown(value)


def help_text(f: dataclasses.Field) -> str:
    """The flag's help: the Option's text and "(default X)", or "(default: what None stands for)"."""
    opt, shown = f.metadata["option"], default_text(f)
    if not shown:
        return opt.help
    return f"{opt.help} (default{':' if default_of(f) is None else ''} {shown})"


def add_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per option. Every flag's default is None, so that RunConfig's default applies only when neither the
    flag, the environment nor the --config file gives the option (config.load merges them)."""
    for f, opt in options(config_class):
        kwargs: dict[str, Any] = {"default": None, "dest": f.name,
                                  # argparse expands %-formats in help texts (HelpFormatter._expand_help)
                                  "help": help_text(f).replace("%", "%%")}
        if opt.choices:
            kwargs["choices"] = opt.choices
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        if opt.repeated:
            kwargs["action"] = "append"
        if opt.switch:
            kwargs.update(action="store_const", const=True)
        parser.add_argument(f"--{flag(f)}", **kwargs)


def markdown_table(config_class: type) -> str:
    """README's table of the options: flag, default, meaning (the help text without its default)."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for f, opt in options(config_class):
        name = f"`--{flag(f)}{' ' + opt.metavar if opt.metavar else ''}`"
        rows.append(f"| {name} | {_table_default(f)} | {opt.help.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


def _table_default(f: dataclasses.Field) -> str:
    opt, shown = f.metadata["option"], default_text(f)
    if opt.required:
        return "required"
    if not shown:
        return "off" if opt.switch else "none"
    return shown if default_of(f) is None else f"`{shown}`"


def with_table(readme: str, config_class: type) -> str:
    """readme with the text between TABLE_START and TABLE_END replaced by markdown_table."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {TABLE_START!r} ... {TABLE_END!r} block")
    return readme[:start + len(TABLE_START)] + "\n" + markdown_table(config_class) + "\n" + readme[end:]

