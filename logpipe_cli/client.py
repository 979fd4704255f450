"""The HTTP client side of logpipe for the CLI: where the API is, ``GET /stats``, and
what to say when an event was not stored.

Events go through the client library (:mod:`logpipe_cli.appclient`, re-exported below as
the public ``logpipe_cli.client``): ``send`` and the load generator post with it, with its
retries and its event ids, so a retry never stores an event twice.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

# the client library for applications, re-exported: ``from logpipe_cli.client import
# Client, AsyncClient, LogpipeHandler``
from logpipe_cli.appclient import (
    Answer,
    AsyncClient,
    AsyncSender,
    BatchReceipt,
    Client,
    DeliveryError,
    QueueFullError,
    Receipt,
    RefusedError,
    RetryPolicy,
    Sender,
    UnavailableError,
)
from logpipe_cli.clientcore import request_headers
from logpipe_cli.errors import ClientError, ConfigError
from logpipe_cli.loghandler import LogpipeHandler
from logpipe_cli.schemas import StatsDoc
from logpipe_cli.settings import ServerSettings


def base_url(server: ServerSettings) -> str:
    """The URL a client on this host uses to reach ``server`` (wildcard binds -> loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(server.host, server.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if server.ssl_certfile else "http"
    return f"{scheme}://{host}:{server.port}"


def api_url(url: str | None, server: ServerSettings) -> str:
    """The API's base URL: ``url`` if given (checked), else where ``server`` listens.

    Raises :class:`ConfigError` for anything that is not an ``http(s)://host[:port]`` URL.
    """
    if url is None:
        return base_url(server)
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"API URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or " " in url:
        raise ConfigError(f"API URL {url!r} is not http(s)://host[:port], e.g. {base_url(server)}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"API URL {url!r}: port {port} is not in 1-65535")
    return url.rstrip("/")


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _reason(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__


def failure(exc: ClientError, target: str) -> str:
    """One line saying why nothing was stored at ``target``: refused (and with what), or no
    answer at all, and after how many attempts when there were retries."""
    if isinstance(exc, RefusedError):
        return f"refused with {exc.status}: {exc.detail}"
    if not isinstance(exc, UnavailableError):
        return exc.detail
    tries = "" if exc.attempts < 2 else f" (gave up after {exc.attempts} attempts)"
    if exc.status is None:
        return f"cannot reach {target}: {exc.reason}{tries}"
    return f"refused with {exc.status}: {exc.reason}{tries}"


def fetch_stats(
    url: str,
    *,
    token: str | None = None,
    http: httpx.Client | None = None,
    timeout_s: float = 5.0,
) -> StatsDoc:
    """``GET <url>/stats``, decoded into the :class:`StatsDoc` the API declares.

    Raises :class:`ClientError` if the API cannot be reached or does not answer with
    a stats document.
    """
    target = url.rstrip("/") + "/stats"
    own = http is None
    client = http if http is not None else httpx.Client(timeout=timeout_s)
    try:
        resp = client.get(target, headers=request_headers(token or None))
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {target}: {_reason(exc)}") from None
    finally:
        if own:
            client.close()
    if resp.status_code != 200:
        body = _body(resp)
        detail = body.get("detail") if isinstance(body, dict) else str(body)[:200]
        raise ClientError(f"GET {target} answered {resp.status_code}: {detail}")
    try:
        return msgspec.json.decode(resp.content, type=StatsDoc)
    except msgspec.DecodeError as exc:
        raise ClientError(f"GET {target} did not answer with a stats document: {exc}") from None


def rates(previous: StatsDoc, current: StatsDoc, seconds: float) -> dict[str, float]:
    """Events per second accepted and drained between two ``/stats`` answers."""
    if seconds <= 0:
        return {}
    before, now = previous.totals, current.totals
    return {
        "accepted_per_s": max(0.0, (now.accepted - before.accepted) / seconds),
        "drained_per_s": max(0.0, (now.drained_events - before.drained_events) / seconds),
    }


__all__ = [
    "Answer",
    "AsyncClient",
    "AsyncSender",
    "BatchReceipt",
    "Client",
    "DeliveryError",
    "LogpipeHandler",
    "QueueFullError",
    "Receipt",
    "RefusedError",
    "RetryPolicy",
    "Sender",
    "UnavailableError",
    "api_url",
    "base_url",
    "failure",
    "fetch_stats",
    "rates",
]
