"""Run the API under uvicorn: the only module that imports uvicorn."""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from litestar import Litestar

from logpipe_cli.api import create_app
from logpipe_cli.config_file import load
from logpipe_cli.settings import Settings

#: seconds in-flight requests get to finish after SIGTERM before uvicorn stops anyway
GRACEFUL_SHUTDOWN_S = 15


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
        "http": "httptools",
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
