"""``logpipe redis-check``: is Redis there, and can this setup lose events?"""

from __future__ import annotations

from typing import Annotated

import typer

from logpipe_cli import health
from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from, with_buffer


def redis_check(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Redis URL [redis.url].")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when the setup can lose events.")
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Ping Redis: version, round trip, memory, persistence, buffered events. Exit 1 if down."""
    settings = settings_from(ctx, **{"redis.url": url})
    report = with_buffer(settings, lambda buf: health.check(buf, settings))
    if as_json:
        render.print_json(report.as_dict())
    else:
        render.health_table(report)
    if strict and report.warnings:
        raise typer.Exit(1)
