"""What every command shares to write output: the console, errors and warnings, JSON,
the progress bar, and the drain report (which `drain` and its loop both print).

Each command's own tables live beside it in ``cli/``; :mod:`logpipe_cli.cli.fmt` formats
the values in them. Text from outside (keys, events, paths) goes through ``fmt.visible``
or ``fmt.inert`` before it is printed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from logpipe_cli.cli import fmt, hints

if TYPE_CHECKING:
    from logpipe_cli.drainer import DrainReport

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        _console = Console(highlight=False)
    return _console


def print_error(detail: str) -> None:
    """One line on stderr, never a traceback; control characters shown, not obeyed.

    A known cause gets its fix appended (:func:`hints.with_hint`)."""
    sys.stderr.write(f"error: {fmt.visible(hints.with_hint(detail))}\n")
    sys.stderr.flush()


def print_warning(detail: str) -> None:
    sys.stderr.write(f"warning: {fmt.visible(detail)}\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    # json.dumps escapes every control character (ensure_ascii), so this is inert too
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_json_line(data: Any) -> None:
    """One compact JSON document per line (NDJSON), flushed: for streams like ``--watch``."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def print_line(text: str) -> None:
    """A plain line on stdout, shown as written (no markup), controls made visible."""
    console().print(fmt.inert(text), soft_wrap=True)


def drain_line(report: DrainReport) -> None:
    """One pass of the drain loop as one log line."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = (
        f"{stamp} drained {fmt.count(report.events, 'event')} from "
        f"{fmt.count(report.keys, 'key')} into {fmt.count(report.files, 'file')} "
        f"({fmt.size(report.bytes)}) in {report.seconds:.3f} s"
    )
    extras = [
        f"{fmt.number(n)} {label}"
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


def drain_report(report: DrainReport, c: Console | None = None) -> None:
    """A drain pass as a table; what it left behind as warnings on stderr."""
    c = c or console()
    table = Table(title="drain", show_header=True)
    for col in ("keys", "events", "files", "bytes", "seconds", "events/s"):
        table.add_column(col, justify="right", no_wrap=True)
    rate = report.events / report.seconds if report.seconds > 0 else 0.0
    table.add_row(
        fmt.number(report.keys),
        fmt.number(report.events),
        fmt.number(report.files),
        fmt.size(report.bytes),
        f"{report.seconds:.3f}",
        f"{rate:,.0f}",
    )
    c.print(table)
    if report.synced_rounds:
        rounds = fmt.count(report.synced_rounds, "round")
        c.print(f"made durable by one syncfs per round: {rounds} (drainer.sync)")
    for label, items in (
        ("quarantined values", [str(report.quarantined)] if report.quarantined else []),
        ("left in Redis (unsafe key)", report.unsafe),
        ("left in Redis (not a list)", report.wrong_type),
        ("held by another drainer", report.busy),
    ):
        for item in items:
            print_warning(f"{label}: {item}")


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
