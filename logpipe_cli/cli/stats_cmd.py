"""``logpipe stats``: the pipeline's state as the API's ``GET /stats`` reports it."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

import typer

from logpipe_cli import client
from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from
from logpipe_cli.errors import ClientError

#: how ``--watch`` waits between refreshes (a seam for tests)
sleep = time.sleep


def stats(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="API base URL (default: http://<server.host>:<server.port>).")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C (live on a terminal).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Buffered events, totals, the last drain and the API's counters; exit 1 if the API is down.

    With --watch --json, one JSON document per line and refresh.
    """
    settings = settings_from(ctx)
    base = client.api_url(url, settings.server)
    data = client.fetch_stats(base)
    if not watch:
        if as_json:
            render.print_json(data)
        else:
            render.print_stats(data, base)
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends: not an error
        _watch(base, data, interval, as_json)


def _watch(base: str, data: dict[str, Any], interval_s: float, as_json: bool) -> None:
    """Show ``data``, then a fresh answer every ``interval_s``. An API that stops
    answering is reported and retried, not fatal: the watch outlives a restart."""
    if as_json:
        _watch_json(base, data, interval_s)
        return
    previous: dict[str, Any] | None = None
    previous_at = at = time.monotonic()
    error: str | None = None
    with render.stats_screen(base) as show:
        while True:
            rates = client.rates(previous, data, at - previous_at) if previous else {}
            show(data, rates, error)
            sleep(interval_s)
            try:
                fresh = client.fetch_stats(base)
            except ClientError as exc:
                error = exc.detail
                continue
            previous, previous_at = data, at
            data, at, error = fresh, time.monotonic(), None


def _watch_json(base: str, data: dict[str, Any], interval_s: float) -> None:
    """One JSON document per line and refresh; a failed refresh is a line on stderr."""
    render.print_json_line(data)
    while True:
        sleep(interval_s)
        try:
            render.print_json_line(client.fetch_stats(base))
        except ClientError as exc:
            render.print_error(exc.detail)
