"""``logpipe run``: Redis (if needed), the API and the drainer, together."""

from __future__ import annotations

import typer

from logpipe_cli import supervisor
from logpipe_cli.cli import render
from logpipe_cli.cli.common import settings_from


def run(ctx: typer.Context) -> None:
    """Run the whole pipeline here: starts redis-server if none answers; Ctrl-C stops all."""
    settings = settings_from(ctx)
    code = supervisor.run(settings, notify=lambda msg: render.print_line(f"[logpipe] {msg}"))
    raise typer.Exit(code)
