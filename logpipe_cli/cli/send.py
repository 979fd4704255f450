"""``logpipe send``: post one event to a running API."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from
from logpipe_cli.client import send_event


def send(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="user_id of the event.")],
    event: Annotated[str, typer.Option("--event", "-e", help="Event name.")],
    timestamp: Annotated[int | None, typer.Option(help="Unix seconds (default: now).")] = None,
    url: Annotated[
        str | None, typer.Option(help="API base URL (default: http://<server.host>:<server.port>).")
    ] = None,
    retries: Annotated[int, typer.Option(help="Retries on 503 or no connection.")] = 0,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Send one event to POST /log and print the answer; exit 1 if it was refused."""
    settings = settings_from(ctx)
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    body = {
        "user_id": user,
        "event": event,
        "timestamp": int(time.time()) if timestamp is None else timestamp,
    }
    result = send_event(base, body, retries=retries)
    if as_json:
        render.print_json(
            {"status": result.status, "body": result.body, "attempts": result.attempts}
        )
    elif result.status == 200:
        render.console().print(f"stored ({result.status}): {result.body}")
    if result.status != 200:
        detail = result.body.get("detail") if isinstance(result.body, dict) else result.body
        render.print_error(f"refused with {result.status}: {detail}")
        raise typer.Exit(1)
