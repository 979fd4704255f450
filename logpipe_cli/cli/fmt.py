"""How every command writes a value for people: times, numbers, plurals, hostile text.

One module so that ``1,234 events`` and ``2026-12-01 15:08:02 UTC`` look the same in
every table, and so that text from outside (event fields, key names, file paths) goes
through one sanitizer before it reaches a terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from rich.text import Text

# C0 and C1 controls, DEL, and the bidi overrides that can reorder what a reader sees
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: the last second a datetime can show (year 9999)
_MAX_TS = 253402300800


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(value: object) -> str:
    """``value`` as text whose control characters show as ``\\x1b``-style escapes.

    An ESC from an event or a key name can move the cursor, erase lines or write to the
    clipboard (OSC 52); shown this way it is inert. For plain writes to stdout/stderr.
    """
    return _CONTROL.sub(_escape, str(value))


def inert(value: object, style: str = "") -> Text:
    """``value`` as a rich :class:`Text` that is shown exactly as written: controls
    escaped by :func:`visible`, and never parsed for markup (``[red]``) or emoji."""
    return Text(visible(value), style=style)


def number(value: float, decimals: int = 0) -> str:
    """Always with thousands separators: ``1,234`` / ``1,234.5``."""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{decimals}f}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 event``, ``2 events``, ``1,000 keys``."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n:,} B"  # pragma: no cover - the loop returns at GiB


def moment(ts: float) -> str:
    """A Unix time as readable UTC: ``2026-12-01 15:08:02 UTC``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def event_time(ts: Any) -> str:
    """An event's ``timestamp`` field, which may be anything a client sent."""
    if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < _MAX_TS:
        return moment(ts)
    return visible(json.dumps(ts))


def duration(seconds: float) -> str:
    """``59s``, ``4m 05s``, ``3h 12m``, ``2d 4h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400:,}d {s % 86400 // 3600}h"


def ago(ts: float | None, now: float) -> str:
    """``2026-12-01 15:08:02 UTC (4m 05s ago)``, or ``never``."""
    if not ts:
        return "never"
    return f"{moment(ts)} ({duration(max(0.0, now - ts))} ago)"


def toml_value(value: Any) -> str:
    """A setting's value as it would be written in the config file (``true``, ``"x"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:_}"  # TOML's own digit separator: 1_048_576
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
