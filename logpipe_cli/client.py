"""The HTTP client behind ``logpipe send``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from logpipe_cli.errors import ClientError

MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class SendResult:
    status: int
    body: Any
    attempts: int


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def send_event(
    url: str,
    event: dict[str, Any],
    *,
    retries: int = 0,
    timeout_s: float = 10.0,
    backoff_s: float = 0.2,
) -> SendResult:
    """POST one event to ``<url>/log``; retry ``503`` and connection failures.

    Only a ``503`` (nothing stored) or a refused connection is retried, so a retry can
    never store an event twice. Raises :class:`ClientError` if the server cannot be
    reached at all.
    """
    target = url.rstrip("/") + "/log"
    attempt = 0
    with httpx.Client(timeout=timeout_s) as http:
        while True:
            attempt += 1
            try:
                resp = http.post(target, json=event)
            except httpx.ConnectError as exc:
                if attempt > retries:
                    raise ClientError(f"cannot reach {target}: {exc}") from None
            except httpx.HTTPError as exc:
                raise ClientError(f"request to {target} failed: {exc}") from None
            else:
                if resp.status_code != 503 or attempt > retries:
                    return SendResult(resp.status_code, _body(resp), attempt)
            time.sleep(min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)))
