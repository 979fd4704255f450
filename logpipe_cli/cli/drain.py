"""``logpipe drain``: move buffered events into files, once or every N seconds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from

if TYPE_CHECKING:
    from logpipe_cli.drain_loop import OnReport
    from logpipe_cli.drainer import DrainReport
    from logpipe_cli.settings import Settings


def drain(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Drain everything there is, then exit.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between passes in loop mode, e.g. 0.5 "
            "[default: from drainer.interval_seconds]."
        ),
    ] = None,
    logs_dir: Annotated[
        str | None, typer.Option(help="Directory for the files [default: from drainer.logs_dir].")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Serve Prometheus metrics of this drainer on this port."
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(help="Address for --metrics-port (0.0.0.0 to let other hosts scrape)."),
    ] = "127.0.0.1",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Drain Redis into logs_dir/user_<id>/<day>.jsonl (exactly once, safe to run many)."""
    import asyncio

    from logpipe_cli import drain_loop  # the drainer, redis and prometheus_client

    settings = settings_from(
        ctx, **{"drainer.interval_seconds": interval, "drainer.logs_dir": logs_dir}
    )
    with drain_loop.serve_metrics(metrics_host, metrics_port) as observe:
        if once:
            _run_once(settings, as_json, observe)
        else:
            asyncio.run(drain_loop.run(settings, _printer(as_json, observe)))


def _run_once(settings: Settings, as_json: bool, observe: OnReport) -> None:
    import asyncio

    from logpipe_cli import drain_loop

    with render.progress_bar("draining", "keys", enabled=not as_json) as progress:
        report = asyncio.run(drain_loop.drain_once(settings, progress))
    observe(report)
    if as_json:
        render.print_json(report.as_dict())
    elif report.ok or report.keys:
        # a pass that failed before it did anything has no table worth showing: an
        # all-zero table would read as "nothing to drain"
        render.drain_report(report)
    for err in report.errors:
        render.print_error(err)
    raise typer.Exit(0 if report.ok else 1)


def _printer(as_json: bool, observe: OnReport) -> OnReport:
    """What the loop does with each pass's report: metrics, then one line for a log."""

    def on_report(report: DrainReport) -> None:
        observe(report)
        # a long-running service: one line per pass, for a log, not a table
        if as_json:
            render.print_json_line(report.as_dict())
        elif report.events or report.errors or report.unsafe or report.wrong_type:
            render.drain_line(report)
        for err in report.errors:
            render.print_error(err)

    return on_report
