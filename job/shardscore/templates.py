"""Paths templated by the run's logical time: `--input s3://lake/events/date={date}/ --logical-time 2026-12-03`.

A scheduled run scores the data of its scheduled time, not of the moment it happens to start: a retried or late
tick, and a backfill of last week, must all read and write the same folders as the tick they stand for. So the
paths are templates filled from one logical time, given once (`--logical-time`, or the CronJob tick's scheduled
time), and the filled paths are what the run uses.

The syntax is Python's format-string syntax, parsed by `string.Formatter.parse`, with three names:

- `{date}`: 2026-12-03 (`%Y-%m-%d`), `{hour}`: 02 (`%H`), `{ts}`: 20261203T020000Z (`%Y%m%dT%H%M%SZ`, ISO 8601's
  basic format: no ':' that object stores, Hive partition values or shells would need escaped);
- any of them with a strftime format after ':', `{date:%Y/%m/%d}`, which is then the whole of its text;
- `{{` and `}}` for literal braces.

Every value is the logical time in UTC, so that one instant fills one set of paths however it is spelled: a time
with an offset is converted to UTC, and one without an offset is read as UTC (a date alone is its midnight UTC).
This module knows nothing of the run beyond the texts it is given; config.resolved applies it to RunConfig.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import ConfigError

#: Each placeholder and the strftime format it stands for without one of its own.
PLACEHOLDERS: dict[str, str] = {"date": "%Y-%m-%d", "hour": "%H", "ts": "%Y%m%dT%H%M%SZ"}
#: The strftime directives Python documents (the C89 set, %f, and ISO 8601's %G %u %V), which every platform's
#: strftime has; glibc's extras (%e, %s, %-d) are not portable and would be written literally elsewhere.
DIRECTIVES = frozenset("aAwdbBmyYHIpMSfzZjUWcxXGuV%")
_DIRECTIVE = re.compile(r"%(.?)", re.DOTALL)
_EXAMPLE = "e.g. --logical-time 2026-12-03 or 2026-12-03T02:00:00Z"


def parse_time(text: str | datetime) -> datetime:
    """The logical time in UTC from ISO 8601 text (or a datetime given in code, taken as UTC when naive).

    `datetime.fromisoformat` (Python 3.11) reads the forms: a date (2026-12-03, 20261203, 2026-W49-4), a date and a
    time with 'T' or ' ' between them (2026-12-03T02, T02:30, T02:30:00.5, basic 20261203T020000), and an offset
    (Z, +01:00). No offset: UTC. An offset: converted to UTC.
    """
    if isinstance(text, datetime):
        when = text
    else:
        try:
            when = datetime.fromisoformat(str(text).strip())
        except ValueError:
            raise ValueError("not an ISO 8601 date or time; e.g. 2026-12-03 or 2026-12-03T02:00:00Z") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def iso(when: datetime) -> str:
    """The logical time as records and flags carry it: ISO 8601 in UTC with 'Z' (2026-12-03T02:00:00Z)."""
    return when.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def _fields(template: str, option: str) -> list[tuple[str, str | None, str]]:
    """(literal text, placeholder name or None, strftime format) of each part of template; errors name option and
    template."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '{' encountered in format string", "expected '}' before end of string"
        raise ConfigError(f"{option} {template!r}: {exc}; write {{{{ and }}}} for a literal brace") from None
    fields = []
    for literal, name, spec, conversion in parts:
        if name is None:
            fields.append((literal, None, ""))
            continue
        if name not in PLACEHOLDERS or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"{option} {template!r}: unknown placeholder {shown}; use {_known()}, each with an "
                              "optional strftime format ({date:%Y/%m/%d}), and {{ }} for literal braces")
        fields.append((literal, name, _checked_format(spec, option, template) if spec else PLACEHOLDERS[name]))
    return fields


def _checked_format(spec: str, option: str, template: str) -> str:
    """A placeholder's own strftime format, refused when it has no directive (it would be written literally) or
    a directive Python does not document."""
    found = _DIRECTIVE.findall(spec)
    bad = [d for d in found if d not in DIRECTIVES]
    if bad or not [d for d in found if d != "%"]:
        why = (f"%{bad[0]} is not a strftime directive every platform has" if bad
               else "it has no strftime directive, so it would be written as it is")
        raise ConfigError(f"{option} {template!r}: bad format {spec!r}: {why} (use %Y %m %d %H %M %S, e.g. "
                          "{date:%Y/%m/%d})")
    return spec


def _known() -> str:
    names = [f"{{{name}}}" for name in PLACEHOLDERS]
    return ", ".join(names[:-1]) + " or " + names[-1]


def names(template: str, option: str) -> list[str]:
    """The names of template's placeholders, after checking every one of them."""
    return [name for _, name, _ in _fields(template, option) if name is not None]


def fill(template: str, when: datetime | None, option: str) -> str:
    """template with each placeholder replaced by the logical time `when` in its format, and {{ }} by braces.

    Refused, naming option and template: an unknown placeholder, a bad format, a placeholder without a time.
    """
    fields = _fields(template, option)
    used = [name for _, name, _ in fields if name is not None]
    if used and when is None:
        raise ConfigError(f"{option} {template!r} holds the placeholder {{{used[0]}}} but the run has no logical "
                          f"time to fill it: give --logical-time ({_EXAMPLE})")
    out = []
    for literal, name, fmt in fields:
        out.append(literal)
        if name is not None:
            assert when is not None
            out.append(when.astimezone(timezone.utc).strftime(fmt))
    return "".join(out)


@dataclass(frozen=True)
class PathTemplates:
    """--input and --output as given, before the logical time filled them, and that time (None: none given)."""

    input: str
    output: str
    logical_time: datetime | None

    def templated(self) -> bool:
        """Whether either path holds a placeholder (the filled paths then differ from the templates)."""
        return bool(names(self.input, "--input") or names(self.output, "--output"))

    def record(self) -> dict[str, Any]:
        """What the manifest and the run record keep: the logical time and the templates."""
        return {"logical_time": None if self.logical_time is None else iso(self.logical_time),
                "templates": {"input": self.input, "output": self.output}}

    def origin(self, option: str) -> str:
        """' (--output 'out/{date}/' for --logical-time 2026-12-03T00:00:00Z)', for messages about a filled path;
        '' when that path holds no placeholder."""
        template = self.input if option == "--input" else self.output
        if not names(template, option) or self.logical_time is None:
            return ""
        return f" ({option} {template!r} for --logical-time {iso(self.logical_time)})"
