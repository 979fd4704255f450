"""``logpipe drain``: move buffered events into files, once or every N seconds."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Annotated

import typer
from prometheus_client import start_http_server

from logpipe_cli import metrics
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from
from logpipe_cli.drainer import Drainer, DrainReport, Progress
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import Settings

Observe = Callable[[DrainReport], None]


def drain(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Drain everything there is, then exit.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between passes in loop mode, e.g. 0.5 [drainer.interval_seconds]."
        ),
    ] = None,
    logs_dir: Annotated[
        str | None, typer.Option(help="Directory for the files [drainer.logs_dir].")
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
    settings = settings_from(
        ctx, **{"drainer.interval_seconds": interval, "drainer.logs_dir": logs_dir}
    )
    with _metrics_server(metrics_host, metrics_port) as observe:
        if once:
            _run_once(settings, as_json, observe)
        else:
            asyncio.run(_loop(settings, as_json, observe))


@contextlib.contextmanager
def _metrics_server(host: str, port: int | None) -> Iterator[Observe]:
    """Feed each report to a :class:`DrainerMetrics` served on ``host:port`` (if given)."""
    if port is None:
        yield lambda report: None
        return
    drainer_metrics = metrics.DrainerMetrics()
    try:
        server, thread = start_http_server(port, addr=host, registry=drainer_metrics.registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: {exc.strerror or exc}") from None
    try:
        yield lambda r: drainer_metrics.observe(r.ok, r.events, r.bytes, r.seconds)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run_once(settings: Settings, as_json: bool, observe: Observe) -> None:
    with render.progress_bar("draining", "keys", enabled=not as_json) as progress:
        report = asyncio.run(_once(settings, progress))
    observe(report)
    if as_json:
        render.print_json(report.as_dict())
    else:
        render.drain_report(report)
    for err in report.errors:
        render.print_error(err)
    raise typer.Exit(0 if report.ok else 1)


async def _once(settings: Settings, progress: Progress | None = None) -> DrainReport:
    client = connect(settings.redis)
    try:
        drainer = Drainer(Buffer(client, settings.redis), settings.drainer)
        return await drainer.drain_once(progress=progress)
    finally:
        await client.aclose()


async def _loop(settings: Settings, as_json: bool, observe: Observe) -> None:
    """Loop until SIGINT/SIGTERM: the first finishes the pass in hand, a second stops now."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    running = True

    def on_signal() -> None:
        if stop.is_set():
            cancel_pass()
        stop.set()

    def cancel_pass() -> None:
        # Python 3.11's asyncio.wait_for (used inside redis-py) swallows a cancellation
        # that lands just as its future completes: cancel again until the pass stops.
        if running and main is not None:
            main.cancel()
            loop.call_later(0.1, cancel_pass)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    def on_report(report: DrainReport) -> None:
        observe(report)
        # a long-running service: one line per pass, for a log, not a table
        if as_json:
            render.print_json_line(report.as_dict())
        elif report.events or report.errors or report.unsafe or report.wrong_type:
            render.drain_line(report)
        for err in report.errors:
            render.print_error(err)

    client = connect(settings.redis)
    drainer = Drainer(Buffer(client, settings.redis), settings.drainer)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await drainer.run(stop, settings.drainer.interval_seconds, on_report)
    finally:
        running = False
        await client.aclose()
