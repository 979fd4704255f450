"""Run the API under uvicorn: the only module that imports uvicorn."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import uvicorn
from litestar import Litestar

from logpipe_cli.api import create_app
from logpipe_cli.config_file import load
from logpipe_cli.http_guard import HttpLimits, protocol_factory
from logpipe_cli.settings import Settings

#: seconds in-flight requests get to finish after SIGTERM before uvicorn stops anyway
GRACEFUL_SHUTDOWN_S = 15


#: HttpLimits field -> the [server] setting that carries it
LIMIT_SETTINGS = {
    "max_header_bytes": "max_header_bytes",
    "header_timeout_s": "header_timeout_seconds",
    "body_timeout_s": "body_timeout_seconds",
    "max_connections": "max_connections",
    "max_inflight_body_bytes": "max_inflight_body_bytes",
    "keepalive_s": "keepalive_seconds",
}


def http_limits(settings: Settings) -> HttpLimits:
    """The HTTP-layer limits for ``serve``, from the ``[server]`` settings."""
    srv = settings.server
    return HttpLimits(**{f.name: getattr(srv, LIMIT_SETTINGS[f.name]) for f in fields(HttpLimits)})


def app_factory() -> Litestar:
    """For ``--workers N``: each worker process builds its app from the environment."""
    return create_app(load(os.environ.get("LOGPIPE_CONFIG")))


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish first.

    Exits with code 3 (uvicorn's) if the server could not start, e.g. the port is taken.
    """
    srv = settings.server
    common: dict[str, Any] = {
        "host": srv.host,
        "port": srv.port,
        "log_level": settings.logging.level,
        "access_log": False,
        "loop": "uvloop",
        # uvicorn's httptools protocol with header/body deadlines, a header size limit, a
        # connection cap and a budget of body bytes in flight (logpipe_cli/http_guard.py)
        "http": protocol_factory(http_limits(settings)),
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "server_header": False,
        "date_header": False,
    }
    if srv.workers > 1:
        # The workers re-read settings from the environment: pass them down that way.
        if settings.path is not None:
            os.environ["LOGPIPE_CONFIG"] = str(settings.path)
        for section, values in settings.as_dict(mask_secrets=False).items():
            for key, value in values.items():
                if settings.sources.get(f"{section}.{key}") == "flag":
                    os.environ[f"LOGPIPE_{section.upper()}_{key.upper()}"] = str(value)
        uvicorn.run("logpipe_cli.server:app_factory", factory=True, workers=srv.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
