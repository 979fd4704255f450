"""The HTTP client side of logpipe: ``send`` posts events, ``stats`` reads ``GET /stats``.

Only a ``503`` (nothing stored) or a connection that was never made is retried, so a
retry can never store an event twice.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from logpipe_cli.errors import ClientError, ConfigError
from logpipe_cli.schemas import StatsDoc
from logpipe_cli.settings import ServerSettings

MAX_BACKOFF_S = 5.0
JSON = "application/json"
NDJSON = "application/x-ndjson"
#: failures where the request never reached the server: safe to send again
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class SendResult:
    status: int
    body: Any
    attempts: int


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


def _delay_s(attempt: int, backoff_s: float) -> float:
    return float(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)))


def _reason(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__


def auth_headers(token: str | None) -> dict[str, str]:
    """``Authorization: Bearer <token>``, or nothing without a token."""
    return {} if not token else {"authorization": f"Bearer {token}"}


def send_event(
    url: str,
    event: dict[str, Any],
    *,
    token: str | None = None,
    retries: int = 0,
    timeout_s: float = 10.0,
    backoff_s: float = 0.2,
) -> SendResult:
    """POST one event to ``<url>/log``; retry ``503`` and connection failures.

    Raises :class:`ClientError` if the server cannot be reached at all.
    """

    async def one() -> SendResult:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            return await post(
                http,
                url.rstrip("/") + "/log",
                json.dumps(event).encode(),
                "application/json",
                token=token,
                retries=retries,
                backoff_s=backoff_s,
            )

    return asyncio.run(one())


async def post(
    http: httpx.AsyncClient,
    target: str,
    content: bytes,
    content_type: str,
    *,
    token: str | None = None,
    retries: int = 0,
    backoff_s: float = 0.2,
) -> SendResult:
    """POST ``content`` with ``http`` (and ``token``, if given); retry ``503`` and
    connections never made.

    Raises :class:`ClientError` when no answer came back.
    """
    headers = {"content-type": content_type, **auth_headers(token)}
    attempt = 0
    while True:
        attempt += 1
        try:
            resp = await http.post(target, content=content, headers=headers)
        except _NOT_SENT as exc:
            if attempt > retries:
                raise ClientError(f"cannot reach {target}: {_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {target} failed: {_reason(exc)}") from None
        else:
            if resp.status_code != 503 or attempt > retries:
                return SendResult(resp.status_code, _body(resp), attempt)
        await asyncio.sleep(_delay_s(attempt, backoff_s))


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
        resp = client.get(target, headers=auth_headers(token))
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


# The client library for applications lives in its own modules; it is re-exported here so
# that ``from logpipe_cli.client import Client, AsyncClient, LogpipeHandler`` works.
from logpipe_cli.appclient import (  # noqa: E402
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
from logpipe_cli.loghandler import LogpipeHandler  # noqa: E402

__all__ = [
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
    "SendResult",
    "Sender",
    "UnavailableError",
    "api_url",
    "auth_headers",
    "base_url",
    "fetch_stats",
    "post",
    "rates",
    "send_event",
]
