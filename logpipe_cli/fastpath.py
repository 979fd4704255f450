"""``POST /log`` served straight from ASGI, in front of Litestar's router.

Litestar's routing, middleware, request and response objects cost several times what
storing one event does (issue 4's profile: 0.19x of a bare ASGI app's throughput
through the handler alone, 0.5x with this path). Requests this path cannot serve
exactly as the handler would go to Litestar.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import MediaType
from litestar.enums import ScopeType
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from logpipe_cli.answers import INTERNAL_ERROR, Answer, problem_answer
from logpipe_cli.gate import principal_of
from logpipe_cli.ingest import Ingest

_HTTP: str = ScopeType.HTTP
logger = logging.getLogger("logpipe_cli.api")  # the app's: one logger for the API's errors


class _Disconnected(Exception):
    pass


def fast_post_log(handler: ASGIApp, ingest: Ingest) -> ASGIApp:
    """Serve ``POST /log`` straight from ASGI, in front of Litestar's router.

    Litestar's routing, middleware, request and response objects cost several times
    what storing one event does (issue 4's profile). This path makes the same calls on
    ``ingest`` as the ``post_log`` handler (``log_media_refusal``, then ``store_one``),
    answers with the same bytes and keeps the same metrics. What it cannot serve exactly
    as the handler would (no Content-Length, a body over the limit, a repeated header)
    goes to Litestar. Litestar middleware and hooks never see the requests served here:
    whatever one adds for ``POST /log`` must be added here too
    (tests/api/test_log_fast_path.py checks that both ways answer alike).
    """

    metrics = ingest.metrics
    max_body_bytes = ingest.max_body_bytes
    # the series _metrics_middleware would count, per status: looked up once, not per request
    series: dict[int, tuple[Any, Any]] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/log" or scope["type"] != _HTTP or scope.get("method") != "POST":
            await handler(scope, receive, send)
            return
        start = time.perf_counter()
        length, ctype = _length_and_type(scope)
        if not 0 <= length <= max_body_bytes:
            await handler(scope, receive, send)
            return
        status = 500
        try:
            if ctype == b"application/json":  # what nearly every client sends
                media = "application/json"
            else:
                media = ctype.decode("latin-1").split(";", 1)[0].strip().lower() if ctype else ""
            status, content, headers = await _store(ingest, media, receive, principal_of(scope))
        except Exception:  # as the app's handler answers (and logs) it
            logger.exception("unexpected error answering POST /log")
            status, content, headers = INTERNAL_ERROR
        try:
            await _send_answer(scope, receive, send, (status, content, headers))
        finally:
            pair = series.get(status)
            if pair is None:
                pair = series[status] = (
                    metrics.requests.labels("/log", "POST", str(status)),
                    metrics.latency.labels("/log"),
                )
            pair[0].inc()
            pair[1].observe(time.perf_counter() - start)

    return app


def _length_and_type(scope: Scope) -> tuple[int, bytes | None]:
    """Content-Length (-1 if absent, -2 if unusable or either header repeated) and
    Content-Type (``None`` if absent)."""
    length = -1
    ctype: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if length != -1 or not value.isdigit():
                return -2, ctype
            length = int(value)
        elif name == b"content-type":
            if ctype is not None:
                return -2, ctype
            ctype = value
    return length, ctype


async def _store(ingest: Ingest, media: str, receive: Receive, principal: str | None) -> Answer:
    """The media type checked, the body read (not if refused), the event stored."""
    answer = ingest.log_media_refusal(media)
    if answer is not None:
        return answer
    limit = ingest.max_body_bytes
    try:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body"):
            body: bytes | None = message.get("body", b"")  # the usual: one message
            if len(body) > limit:  # type: ignore[arg-type]
                body = None
        else:
            body = await _read_body(receive, limit, message)
    except _Disconnected:
        return problem_answer(500, "client disconnected prematurely")
    if body is None:
        ingest.metrics.refuse("too_large")
        return problem_answer(413, "request body too large")
    return await ingest.store_one(media, body, principal=principal)


async def _send_answer(scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
    status, content, headers = answer
    if status == 200 and not headers:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content, "more_body": False})
    else:
        response = ASGIResponse(
            body=content, status_code=status, headers=headers, media_type=MediaType.JSON
        )
        await response(scope, receive, send)


async def _read_body(receive: Receive, limit: int, message: ReceiveMessage) -> bytes | None:
    """The whole request body, from its first ``message``; ``None`` if over ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise _Disconnected
        message = await receive()
