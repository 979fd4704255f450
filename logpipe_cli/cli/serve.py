"""``logpipe serve``: the HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from logpipe_cli.cli.common import settings_from


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Listen address [default: from server.host].")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port [default: from server.port].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes [default: from server.workers].")
    ] = None,
    ssl_certfile: Annotated[
        str | None,
        typer.Option(
            help="Serve HTTPS with this certificate (PEM) [default: from server.ssl_certfile]."
        ),
    ] = None,
    ssl_keyfile: Annotated[
        str | None,
        typer.Option(
            help="The certificate's private key (PEM) [default: from server.ssl_keyfile]."
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (POST /log and /logs, GET /logs, /stats and probes) until Ctrl-C.

    Refuses a non-loopback --host when no tokens are configured ([auth]), unless
    auth.allow_anonymous is true.
    """
    settings = settings_from(
        ctx,
        **{
            "server.host": host,
            "server.port": port,
            "server.workers": workers,
            "server.ssl_certfile": ssl_certfile,
            "server.ssl_keyfile": ssl_keyfile,
        },
    )
    from logpipe_cli import server  # litestar and uvicorn: only when serving

    server.serve(settings)
