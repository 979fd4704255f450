"""``logpipe run``: Redis (if needed), the API and the drainer, together."""

from __future__ import annotations

from typing import Annotated

import typer

from logpipe_cli.cli import render
from logpipe_cli.cli.common import settings_from


def run(
    ctx: typer.Context,
    redis_server: Annotated[
        str | None,
        typer.Option(
            "--redis-server",
            metavar="PATH",
            help="redis-server binary to start if no Redis answers "
            "[default: the PATH's, else the one bundled with logpipe].",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline here: starts redis-server if none answers; Ctrl-C stops all."""
    from logpipe_cli import supervisor

    settings = settings_from(ctx)
    code = supervisor.run(
        settings,
        notify=lambda msg: render.print_line(f"[logpipe] {msg}"),
        redis_server=redis_server,
    )
    raise typer.Exit(code)
