"""Everything logpipe shows on a terminal: the only module that imports rich."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from logpipe_cli.buffer import KeyInfo
from logpipe_cli.drainer import DrainReport
from logpipe_cli.health import HealthReport
from logpipe_cli.inspection import FileSummary, FileView, KeyTotals, day_date
from logpipe_cli.loadgen import LoadSummary
from logpipe_cli.sink import LineRecord

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


def print_json_line(data: Any) -> None:
    """One compact JSON document per line (NDJSON), flushed: for streams like ``--watch``."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def drain_line(report: DrainReport) -> None:
    """One pass of the drain loop as one log line."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = (
        f"{stamp} drained {report.events} events from {report.keys} keys into "
        f"{report.files} files ({human_bytes(report.bytes)}) in {report.seconds:.3f} s"
    )
    extras = [
        f"{n} {label}"
        for n, label in (
            (report.quarantined, "quarantined"),
            (len(report.unsafe), "unsafe keys left"),
            (len(report.wrong_type), "keys of another type left"),
            (len(report.busy), "keys busy"),
        )
        if n
    ]
    sys.stdout.write(line + (f"; {', '.join(extras)}" if extras else "") + "\n")
    sys.stdout.flush()


def is_terminal() -> bool:
    """Whether stdout is a terminal: progress bars and live views only there."""
    return console().is_terminal


def time_label(ts: Any) -> str:
    if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < 253402300800:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return repr(ts)


def date_label(day: int) -> str:
    return day_date(day).isoformat()


def human_duration(seconds: float) -> str:
    """``59s``, ``4m 05s``, ``3h 12m``, ``2d 4h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


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


def keys_table(shown: Sequence[KeyInfo], totals: KeyTotals, c: Console | None = None) -> None:
    """The keys in ``shown``; the totals row counts every key that matched."""
    c = c or console()
    caption = None
    if len(shown) < totals.keys:
        caption = f"showing {len(shown)} of {totals.keys} keys; the totals count them all"
    table = Table(title="buffered keys", caption=caption)
    table.add_column("key", overflow="fold")
    table.add_column("kind")
    table.add_column("user")
    table.add_column("day (UTC)")
    table.add_column("events", justify="right")
    table.add_column("memory", justify="right")
    table.add_column("ttl", justify="right")
    for k in shown:
        table.add_row(
            Text(k.key),
            k.kind,
            Text(k.event_key.user_id) if k.event_key else Text("?", style="red"),
            date_label(k.event_key.day) if k.event_key else "?",
            f"{k.events:,}",
            human_bytes(k.bytes),
            "-" if k.ttl_s < 0 else human_duration(k.ttl_s),
        )
    table.add_section()
    table.add_row(
        f"total: {totals.keys} keys",
        "",
        "",
        "",
        f"{totals.events:,}",
        human_bytes(totals.bytes),
        "",
    )
    c.print(table)


def _event_row(r: LineRecord) -> tuple[RenderableType, ...]:
    if r.event is None:
        return (
            str(r.lineno),
            Text("not a JSON object", style="red"),
            "",
            "",
            Text(r.raw[:60].decode("utf-8", "replace")),
        )
    e = r.event
    others = {k: v for k, v in e.items() if k not in ("user_id", "event", "timestamp")}
    return (
        str(r.lineno),
        time_label(e.get("timestamp")),
        Text(str(e.get("user_id", ""))),
        Text(str(e.get("event", ""))),
        Text(json.dumps(others) if others else ""),
    )


def file_table(view: FileView, c: Console | None = None) -> None:
    """The lines of ``view``, with what the whole file holds as the caption."""
    c = c or console()
    caption = (
        f"{len(view.records)} shown of {view.matched} matching; "
        f"{view.lines} lines in the file, {view.bad_lines} not JSON objects"
    )
    table = Table(title=str(view.path), caption=caption)
    table.add_column("line", justify="right")
    table.add_column("time (UTC)")
    table.add_column("user")
    table.add_column("event")
    table.add_column("other fields")
    for r in view.records:
        table.add_row(*_event_row(r))
    c.print(table)


def files_table(files: Sequence[FileSummary], c: Console | None = None) -> None:
    c = c or console()
    table = Table(title="log files")
    table.add_column("path", overflow="fold")
    for col in ("user", "day (UTC)", "events", "size", "modified (UTC)"):
        table.add_column(col, justify="right" if col in ("events", "size") else "left")
    for f in files:
        table.add_row(
            Text(str(f.info.path)),
            Text(f.info.user_id),
            date_label(f.info.day),
            f"{f.events:,}",
            human_bytes(f.info.size),
            dt.datetime.fromtimestamp(f.info.mtime, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
    table.add_section()
    table.add_row(
        f"total: {len(files)} files",
        "",
        "",
        f"{sum(f.events for f in files):,}",
        human_bytes(sum(f.info.size for f in files)),
        "",
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


# ---- progress ------------------------------------------------------------------------


@contextlib.contextmanager
def progress_bar(
    description: str,
    unit: str,
    *,
    total: int | None = None,
    enabled: bool = True,
    c: Console | None = None,
) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback that drives a progress bar on a terminal.

    The bar is shown only when ``enabled`` and stdout is a terminal; it disappears
    when done, so what follows (a summary) is all that stays on the screen.
    """
    c = c or console()
    if not (enabled and c.is_terminal):
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=c,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


# ---- send ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def load_summary(summary: LoadSummary, target: str, c: Console | None = None) -> None:
    c = c or console()
    table = Table(title=f"send -> {target}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")

    def problem(n: int) -> Text:
        return Text(f"{n:,}", style="bold red" if n else "")

    table.add_row("events sent", f"{summary.sent:,}")
    table.add_row("accepted", f"{summary.accepted:,}")
    table.add_row("refused", problem(summary.refused))
    table.add_row("failed (no answer)", problem(summary.failed))
    table.add_row("requests", f"{summary.requests:,}")
    table.add_row("seconds", f"{summary.seconds:.3f}")
    table.add_row("events/s (accepted)", f"{summary.events_per_s:,.0f}")
    table.add_row("latency p50", _ms(summary.latency_ms(0.50)))
    table.add_row("latency p99", _ms(summary.latency_ms(0.99)))
    c.print(table)


# ---- stats ---------------------------------------------------------------------------


def _ago(at: float | None, now: float) -> str:
    if not at:
        return "never"
    moment = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{moment} ({human_duration(max(0.0, now - at))} ago)"


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _stats_rows(
    data: dict[str, Any], rates: dict[str, float], now: float
) -> list[tuple[str, Text]]:
    buffered = data.get("buffered") or {}
    totals = data.get("totals") or {}
    oldest = buffered.get("oldest_day")
    oldest_label = date_label(oldest) if isinstance(oldest, int) else "-"
    rows = [
        (
            "buffered",
            Text(
                f"{_num(buffered.get('events'))} events in {_num(buffered.get('keys'))} keys, "
                f"{_num(buffered.get('claims'))} being drained; oldest day {oldest_label}"
            ),
        ),
        (
            "accepted",
            Text(
                f"{_num(totals.get('accepted'))} events in all; "
                f"{_num(totals.get('refused_full'))} refused (buffer full)"
            ),
        ),
        (
            "drained",
            Text(
                f"{_num(totals.get('drained_events'))} events, {_num(totals.get('drained_keys'))} "
                f"keys, {human_bytes(int(totals.get('drained_bytes') or 0))}; "
                f"{_num(totals.get('quarantined'))} quarantined"
            ),
        ),
        ("last drain", _last_drain_text(data.get("last_drain"), now)),
    ]
    api = data.get("api")
    if isinstance(api, dict):
        rows.append(("this API", _api_text(api, now)))
    if rates:
        parts = [
            f"{rates[k]:,.1f} {label}/s"
            for k, label in (("accepted_per_s", "accepted"), ("drained_per_s", "drained"))
            if k in rates
        ]
        rows.append(("rates", Text(", ".join(parts))))
    return rows


def _last_drain_text(last: Any, now: float) -> Text:
    if not isinstance(last, dict):
        return Text("never")
    text = Text(_ago(last.get("at"), now) + "  ")
    if last.get("ok"):
        text.append("ok", style="green")
    else:
        text.append("failed", style="bold red")
    text.append(
        f"  {_num(last.get('events'))} events, {_num(last.get('keys'))} keys "
        f"in {float(last.get('seconds') or 0):.3f} s"
    )
    if last.get("error"):
        text.append(f"\n{last['error']}", style="red")
    return text


def _api_text(api: dict[str, Any], now: float) -> Text:
    refused = api.get("refused") or {}
    shown = ", ".join(f"{k} {v:,}" for k, v in refused.items() if v) or "none"
    started = api.get("started_at")
    up = human_duration(max(0.0, now - started)) if isinstance(started, int | float) else "-"
    return Text(f"{_num(api.get('accepted'))} accepted, refused: {shown}; up {up}")


def stats_panel(
    data: dict[str, Any],
    url: str,
    rates: dict[str, float] | None = None,
    error: str | None = None,
    now: float | None = None,
) -> Panel:
    """The ``/stats`` answer as a panel; ``error`` says why it may be out of date."""
    now = time.time() if now is None else now
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _stats_rows(data, rates or {}, now):
        grid.add_row(label, value)
    body: RenderableType = grid
    if error is not None:
        body = Group(Text(f"{error} (showing the last answer)", style="bold red"), grid)
    return Panel(body, title=f"logpipe stats  {url}", title_align="left", expand=False)


def print_stats(data: dict[str, Any], url: str, c: Console | None = None) -> None:
    (c or console()).print(stats_panel(data, url))


@contextlib.contextmanager
def stats_screen(
    url: str, c: Console | None = None
) -> Iterator[Callable[[dict[str, Any], dict[str, float], str | None], None]]:
    """An ``update(data, rates, error)`` callback: a live panel on a terminal, redrawn in
    place; elsewhere each update is printed after the last."""
    c = c or console()
    if not c.is_terminal:
        yield lambda data, rates, error: c.print(stats_panel(data, url, rates, error))
        return
    with Live(console=c, auto_refresh=False, transient=False) as live:

        def update(data: dict[str, Any], rates: dict[str, float], error: str | None) -> None:
            live.update(stats_panel(data, url, rates, error), refresh=True)

        yield update
