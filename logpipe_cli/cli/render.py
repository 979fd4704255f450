"""Everything logpipe shows on a terminal: the only module that imports rich."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from logpipe_cli.buffer import KeyInfo
from logpipe_cli.drainer import DrainReport
from logpipe_cli.health import HealthReport
from logpipe_cli.sink import FileInfo, LineRecord

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False)
    return _console


def print_error(detail: str) -> None:
    """One line on stderr, never a traceback."""
    sys.stderr.write(f"error: {detail}\n")
    sys.stderr.flush()


def print_warning(detail: str) -> None:
    sys.stderr.write(f"warning: {detail}\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def day_label(day: int) -> str:
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return f"{day} ({date.isoformat()})"


def time_label(ts: Any) -> str:
    if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < 253402300800:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return repr(ts)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def drain_report(report: DrainReport, c: Console | None = None) -> None:
    c = c or console()
    table = Table(title="drain", show_header=True)
    for col in ("keys", "events", "files", "bytes", "seconds", "events/s"):
        table.add_column(col, justify="right")
    rate = report.events / report.seconds if report.seconds > 0 else 0.0
    table.add_row(
        str(report.keys),
        str(report.events),
        str(report.files),
        human_bytes(report.bytes),
        f"{report.seconds:.3f}",
        f"{rate:,.0f}",
    )
    c.print(table)
    for label, items in (
        ("quarantined values", [str(report.quarantined)] if report.quarantined else []),
        ("left in Redis (unsafe key)", report.unsafe),
        ("left in Redis (not a list)", report.wrong_type),
        ("held by another drainer", report.busy),
    ):
        for item in items:
            print_warning(f"{label}: {item}")


def keys_table(infos: Iterable[KeyInfo], c: Console | None = None) -> None:
    c = c or console()
    table = Table(title="buffered keys")
    table.add_column("key", overflow="fold")
    table.add_column("kind")
    table.add_column("user")
    table.add_column("day")
    table.add_column("events", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("ttl", justify="right")
    total_events = total_bytes = count = 0
    for k in infos:
        count += 1
        total_events += k.events
        total_bytes += k.bytes
        table.add_row(
            Text(k.key),
            k.kind,
            Text(k.event_key.user_id) if k.event_key else Text("?", style="red"),
            day_label(k.event_key.day) if k.event_key else "?",
            str(k.events),
            human_bytes(k.bytes),
            "-" if k.ttl_s < 0 else f"{k.ttl_s}s",
        )
    table.add_section()
    table.add_row(
        f"total: {count} keys", "", "", "", str(total_events), human_bytes(total_bytes), ""
    )
    c.print(table)


def file_table(title: str, records: Iterable[LineRecord], c: Console | None = None) -> None:
    c = c or console()
    table = Table(title=title)
    table.add_column("line", justify="right")
    table.add_column("time (UTC)")
    table.add_column("user")
    table.add_column("event")
    table.add_column("other fields")
    bad = 0
    for r in records:
        if r.event is None:
            bad += 1
            table.add_row(
                str(r.lineno),
                Text("not valid JSON", style="red"),
                "",
                "",
                Text(r.raw[:60].decode("utf-8", "replace")),
            )
            continue
        e = r.event
        others = {k: v for k, v in e.items() if k not in ("user_id", "event", "timestamp")}
        table.add_row(
            str(r.lineno),
            time_label(e.get("timestamp")),
            Text(str(e.get("user_id", ""))),
            Text(str(e.get("event", ""))),
            Text(json.dumps(others) if others else ""),
        )
    c.print(table)
    if bad:
        print_warning(f"{bad} line(s) are not valid JSON")


def files_table(files: Iterable[FileInfo], c: Console | None = None) -> None:
    c = c or console()
    table = Table(title="log files")
    table.add_column("path", overflow="fold")
    for col in ("user", "day", "size", "modified (UTC)"):
        table.add_column(col)
    for f in files:
        table.add_row(
            Text(str(f.path)),
            Text(f.user_id),
            day_label(f.day),
            human_bytes(f.size),
            dt.datetime.fromtimestamp(f.mtime, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
    c.print(table)


def health_table(report: HealthReport, c: Console | None = None) -> None:
    c = c or console()
    table = Table(title=f"redis {report.url}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("reachable", "yes")
    table.add_row("version", report.version)
    table.add_row("round trip", f"{report.rtt_ms:.3f} ms")
    table.add_row("memory used", human_bytes(report.used_memory))
    table.add_row("maxmemory", human_bytes(report.maxmemory) if report.maxmemory else "no limit")
    table.add_row("maxmemory-policy", report.maxmemory_policy)
    table.add_row(
        "persistence",
        ", ".join(p for p, on in (("AOF", report.aof_enabled), ("RDB", report.rdb_saves)) if on)
        or "off",
    )
    table.add_row("buffered keys", str(report.buffered_keys))
    table.add_row("buffered events", str(report.buffered_events))
    c.print(table)
    for w in report.warnings:
        print_warning(w)


def config_table(
    data: dict[str, dict[str, Any]], sources: dict[str, str], path: Any, c: Console | None = None
) -> None:
    c = c or console()
    table = Table(title=f"configuration (file: {path or 'none'})")
    table.add_column("key")
    table.add_column("value")
    table.add_column("source")
    for section, values in data.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            table.add_row(name, Text(repr(value)), sources.get(name, "default"))
    c.print(table)
