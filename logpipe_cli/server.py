"""Run the API under uvicorn: the only module that imports uvicorn."""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import uvicorn
from litestar.types import ASGIApp

from logpipe_cli.api import create_app
from logpipe_cli.auth import describe, exposure_problem, is_loopback, load_authorizer
from logpipe_cli.config_file import load
from logpipe_cli.errors import ConfigError
from logpipe_cli.http_guard import HttpLimits, protocol_factory
from logpipe_cli.listen import check_listen
from logpipe_cli.settings import Settings

logger = logging.getLogger(__name__)

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


def app_factory() -> ASGIApp:
    """For ``--workers N``: each worker process builds its app from the environment."""
    return served_app(load(os.environ.get("LOGPIPE_CONFIG")))


def served_app(settings: Settings) -> ASGIApp:
    """The app ``serve`` runs, with the Host check where :func:`checked_hosts` says."""
    return create_app(settings, allowed_hosts=checked_hosts(settings))


def checked_hosts(settings: Settings) -> tuple[str, ...] | None:
    """The names besides IP addresses and local names that ``serve`` answers to
    (``None``: no Host check): without tokens, the Host check (DNS rebinding) is made on
    a loopback address, or wherever ``server.allowed_hosts`` names hosts. (A network
    address served anonymously, ``auth.allow_anonymous``, is reached by names the API
    cannot guess: it is checked once they are listed.)"""
    srv = settings.server
    if not load_authorizer(settings.auth).enabled and (is_loopback(srv.host) or srv.allowed_hosts):
        return srv.allowed_hosts
    return None


def tls_options(settings: Settings) -> dict[str, str]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile`` for HTTPS, or nothing for plain HTTP.

    Raises :class:`ConfigError` when only one is given or a file cannot be read, so a
    typo stops ``serve`` with one line instead of a TLS traceback.
    """
    srv = settings.server
    if not srv.ssl_certfile and not srv.ssl_keyfile:
        return {}
    if not (srv.ssl_certfile and srv.ssl_keyfile):
        raise ConfigError("HTTPS needs both server.ssl_certfile and server.ssl_keyfile")
    for name, value in (("ssl_certfile", srv.ssl_certfile), ("ssl_keyfile", srv.ssl_keyfile)):
        if not Path(value).is_file():
            raise ConfigError(f"server.{name}: no such file: {value}")
    return {"ssl_certfile": srv.ssl_certfile, "ssl_keyfile": srv.ssl_keyfile}


def check_exposure(settings: Settings) -> str:
    """Refuse (:class:`ConfigError`, exit 2) to serve a non-loopback address with no
    tokens unless ``auth.allow_anonymous``; else say whether auth is on."""
    authorizer = load_authorizer(settings.auth)
    problem = exposure_problem(settings.server.host, authorizer, settings.auth.allow_anonymous)
    if problem is not None:
        raise ConfigError(problem)
    return describe(authorizer)


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish first.

    Raises :class:`ListenError` (exit code 3, uvicorn's) if the port is taken or the
    address is not this machine's, and :class:`ConfigError` for an unsafe or unusable
    setup, both before starting; uvicorn exits 3 itself if it still cannot start.
    """
    srv = settings.server
    auth = check_exposure(settings)
    tls = tls_options(settings)
    check_listen(srv.host, srv.port)
    logger.info("auth: %s; %s", auth, "HTTPS" if tls else "plain HTTP")
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
        **tls,
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
        uvicorn.run(served_app(settings), **common)
