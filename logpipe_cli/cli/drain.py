"""``logpipe drain``: move buffered events into files, once or every N seconds."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from
from logpipe_cli.drainer import Drainer, DrainReport
from logpipe_cli.settings import Settings


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
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Drain Redis into logs_dir/user_<id>/<day>.jsonl (exactly once, safe to run many)."""
    settings = settings_from(
        ctx, **{"drainer.interval_seconds": interval, "drainer.logs_dir": logs_dir}
    )
    if once:
        report = asyncio.run(_once(settings))
        if as_json:
            render.print_json(report.as_dict())
        else:
            render.drain_report(report)
        for err in report.errors:
            render.print_error(err)
        raise typer.Exit(0 if report.ok else 1)
    asyncio.run(_loop(settings, as_json))


async def _once(settings: Settings) -> DrainReport:
    client = connect(settings.redis)
    try:
        return await Drainer(Buffer(client, settings.redis), settings.drainer).drain_once()
    finally:
        await client.aclose()


async def _loop(settings: Settings, as_json: bool) -> None:
    """Loop until SIGINT/SIGTERM: the first finishes the pass in hand, a second stops now."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    def on_report(report: DrainReport) -> None:
        if as_json:
            render.print_json(report.as_dict())
        elif report.events or report.errors or report.unsafe or report.wrong_type:
            render.drain_report(report)
        for err in report.errors:
            render.print_error(err)

    client = connect(settings.redis)
    drainer = Drainer(Buffer(client, settings.redis), settings.drainer)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await drainer.run(stop, settings.drainer.interval_seconds, on_report)
    finally:
        await client.aclose()
