"""Run the API under uvicorn: the only module that imports uvicorn."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import uvicorn
from litestar import Litestar

from logpipe_cli.api import create_app
from logpipe_cli.http_guard import HttpLimits, protocol_factory
from logpipe_cli.settings import Settings, load

#: seconds in-flight requests get to finish after SIGTERM before uvicorn stops anyway
GRACEFUL_SHUTDOWN_S = 15


#: HttpLimits field -> the [server] setting that will carry it (see http_limits)
LIMIT_SETTINGS = {
    "max_header_bytes": "max_header_bytes",
    "header_timeout_s": "header_timeout_seconds",
    "body_timeout_s": "body_timeout_seconds",
    "max_connections": "max_connections",
    "max_inflight_body_bytes": "max_inflight_body_bytes",
    "keepalive_s": "keepalive_seconds",
}


def http_limits(settings: Settings, environ: Mapping[str, str]) -> HttpLimits:
    """The HTTP-layer limits for ``serve``: from ``[server]`` settings once they exist.

    Interim, until settings.py declares them: a ``[server]`` field of that name wins;
    otherwise ``LOGPIPE_SERVER_<NAME>`` is read here (so tests can set short deadlines);
    otherwise the :class:`HttpLimits` default. Once the settings exist the environment
    branch is dead and goes.
    """
    values: dict[str, Any] = {}
    for f in fields(HttpLimits):
        name = LIMIT_SETTINGS[f.name]
        if hasattr(settings.server, name):
            values[f.name] = getattr(settings.server, name)
        elif (raw := environ.get(f"LOGPIPE_SERVER_{name.upper()}")) is not None:
            values[f.name] = float(raw) if name.endswith("_seconds") else int(raw)
    return replace(HttpLimits(), **values)


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
        "http": protocol_factory(http_limits(settings, os.environ)),
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
