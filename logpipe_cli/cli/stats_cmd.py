"""``logpipe stats``: the pipeline's state as the API's ``GET /stats`` reports it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import JsonOption, TokenOption, settings_from, with_buffer
from logpipe_cli.errors import ClientError

if TYPE_CHECKING:
    from logpipe_cli.schemas import ApiCounts, LastDrain, StatsDoc

#: how ``--watch`` waits between refreshes (a seam for tests)
sleep = time.sleep


def stats(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(help="API base URL [default: http://<server.host>:<server.port>]."),
    ] = None,
    count_keys: Annotated[
        bool,
        typer.Option(
            "--keys",
            help="Also count buffered keys and claims by scanning Redis (costs one SCAN).",
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C (live on a terminal).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    token: Annotated[str | None, TokenOption] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Buffered events, totals, the last drain and the API's counters; exit 1 if the API is down.

    With --watch --json, one JSON document per line and refresh.
    """
    import msgspec

    from logpipe_cli import client  # httpx: only once a command asks the API
    from logpipe_cli import stats as stats_lib

    settings = settings_from(ctx)
    base = client.api_url(url, settings.server)

    def fetch() -> StatsDoc:
        doc = client.fetch_stats(base, token=token)
        if not count_keys:
            return doc
        pattern = settings.drainer.log_pattern
        counted = with_buffer(settings, lambda buf: stats_lib.count_keys(buf, pattern))
        return stats_lib.with_keys(doc, counted)

    doc = fetch()
    if not watch:
        if as_json:
            render.print_json(msgspec.to_builtins(doc))
        else:
            print_stats(doc, base)
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends: not an error
        _watch(fetch, base, doc, interval, as_json)


def _watch(
    fetch: Callable[[], StatsDoc], base: str, doc: StatsDoc, interval_s: float, as_json: bool
) -> None:
    """Show ``doc``, then a fresh answer every ``interval_s``. An API that stops
    answering is reported and retried, not fatal: the watch outlives a restart."""
    from logpipe_cli import client

    if as_json:
        _watch_json(fetch, doc, interval_s)
        return
    previous: StatsDoc | None = None
    previous_at = at = time.monotonic()
    error: str | None = None
    with stats_screen(base) as show:
        while True:
            rates = client.rates(previous, doc, at - previous_at) if previous else {}
            show(doc, rates, error)
            sleep(interval_s)
            try:
                fresh = fetch()
            except ClientError as exc:
                error = exc.detail
                continue
            previous, previous_at = doc, at
            doc, at, error = fresh, time.monotonic(), None


def _watch_json(fetch: Callable[[], StatsDoc], doc: StatsDoc, interval_s: float) -> None:
    """One JSON document per line and refresh; a failed refresh is a line on stderr."""
    import msgspec

    render.print_json_line(msgspec.to_builtins(doc))
    while True:
        sleep(interval_s)
        try:
            render.print_json_line(msgspec.to_builtins(fetch()))
        except ClientError as exc:
            render.print_error(exc.detail)


# ---- the panel -----------------------------------------------------------------------


def _rows(doc: StatsDoc, rates: dict[str, float], now: float) -> list[tuple[str, Text]]:
    from logpipe_cli.inspection import day_text

    b, t = doc.buffered, doc.totals
    buffered = fmt.count(b.events, "event")
    if b.keys is not None:
        buffered += f" in {fmt.count(b.keys, 'key')}"
    if b.claims is not None:
        buffered += f", {fmt.number(b.claims)} being drained"
    if b.oldest_day is not None:
        buffered += f"; oldest day {day_text(b.oldest_day)}"
    elif b.keys is None:
        buffered += " (keys not counted: add --keys)"
    rows = [
        ("buffered", Text(buffered)),
        (
            "accepted",
            Text(
                f"{fmt.count(t.accepted, 'event')} in all; "
                f"{fmt.number(t.refused_full)} refused (buffer full)"
            ),
        ),
        (
            "drained",
            Text(
                f"{fmt.count(t.drained_events, 'event')}, {fmt.count(t.drained_keys, 'key')}, "
                f"{fmt.size(t.drained_bytes)}; {fmt.number(t.quarantined)} quarantined"
            ),
        ),
        ("last drain", _last_drain_text(doc.last_drain, now)),
    ]
    if doc.api is not None:
        rows.append(("this API", _api_text(doc.api, now)))
    if rates:
        parts = [
            f"{fmt.number(rates[k], 1)} {label}/s"
            for k, label in (("accepted_per_s", "accepted"), ("drained_per_s", "drained"))
            if k in rates
        ]
        rows.append(("rates", Text(", ".join(parts))))
    return rows


def _last_drain_text(last: LastDrain | None, now: float) -> Text:
    if last is None:
        return Text("never")
    text = Text(fmt.ago(last.at, now) + "  ")
    if last.ok:
        text.append("ok", style="green")
    else:
        text.append("failed", style="bold red")
    text.append(
        f"  {fmt.count(last.events, 'event')}, {fmt.count(last.keys, 'key')} "
        f"in {last.seconds:,.3f} s"
    )
    if last.error:
        text.append("\n")
        text.append_text(fmt.inert(last.error, style="red"))
    return text


def _api_text(api: ApiCounts, now: float) -> Text:
    shown = ", ".join(f"{k} {fmt.number(v)}" for k, v in api.refused.items() if v) or "none"
    up = fmt.duration(max(0.0, now - api.started_at))
    return fmt.inert(f"{fmt.number(api.accepted)} accepted, refused: {shown}; up {up}")


def stats_panel(
    doc: StatsDoc,
    url: str,
    rates: dict[str, float] | None = None,
    error: str | None = None,
    now: float | None = None,
) -> Panel:
    """The ``/stats`` answer as a panel; ``error`` says why it may be out of date."""
    now = time.time() if now is None else now
    grid = Table.grid(padding=(0, 2))
    rows = _rows(doc, rates or {}, now)
    grid.add_column(style="bold", no_wrap=True, min_width=max(len(label) for label, _ in rows))
    # one line per row: a narrow terminal cuts a value short (…) rather than wrapping
    # it between a number and its unit
    grid.add_column(no_wrap=True, overflow="ellipsis")
    for label, value in rows:
        grid.add_row(label, value)
    body: RenderableType = grid
    if error is not None:
        warning = fmt.inert(f"{error} (showing the last answer)", style="bold red")
        body = Group(warning, grid)
    title = fmt.inert(f"logpipe stats  {url}")
    return Panel(body, title=title, title_align="left", expand=False)


def print_stats(doc: StatsDoc, url: str, c: Console | None = None) -> None:
    (c or render.console()).print(stats_panel(doc, url))


@contextlib.contextmanager
def stats_screen(
    url: str, c: Console | None = None
) -> Iterator[Callable[[StatsDoc, dict[str, float], str | None], None]]:
    """An ``update(doc, rates, error)`` callback: a live panel on a terminal, redrawn in
    place; elsewhere each update is printed after the last."""
    c = c or render.console()
    if not c.is_terminal:
        yield lambda doc, rates, error: c.print(stats_panel(doc, url, rates, error))
        return
    with Live(console=c, auto_refresh=False, transient=False) as live:

        def update(doc: StatsDoc, rates: dict[str, float], error: str | None) -> None:
            live.update(stats_panel(doc, url, rates, error), refresh=True)

        yield update
