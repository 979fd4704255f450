"""``POST /log`` and ``POST /logs`` served straight from ASGI, in front of Litestar's router.

Litestar's routing, middleware, request and response objects cost several times what
storing one event does (issue 4's profile: 0.19x of a bare ASGI app's throughput
through the handler alone, 0.5x with this path). Requests this path cannot serve
exactly as the handler would go to Litestar.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from litestar import MediaType
from litestar.enums import ScopeType
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from logpipe_cli.answers import (
    CLIENT_CLOSED,
    DISCONNECTED,
    INTERNAL_ERROR,
    Answer,
    problem_answer,
)
from logpipe_cli.auth import Authorizer, Grant, RouteScope
from logpipe_cli.gate import HostCheck, principal_of, same_origin
from logpipe_cli.http_guard import send_json_200, whole_body
from logpipe_cli.ingest import Ingest
from logpipe_cli.metrics import RequestTally
from logpipe_cli.wire import WireDoor

_HTTP: str = ScopeType.HTTP
log = logging.getLogger("logpipe.api")


class _Disconnected(Exception):
    pass


def fast_post_log(
    handler: ASGIApp,
    ingest: Ingest,
    *,
    hosts: HostCheck | None = None,
    cross_site: bool = False,
    tokens: tuple[Authorizer, RouteScope, RouteScope] | None = None,
) -> ASGIApp:
    """Serve ``POST /log`` and ``POST /logs`` straight from ASGI, in front of Litestar's
    router.

    Litestar's routing, middleware, request and response objects cost several times
    what storing one event does (issue 4's profile), and a tenth of a 100-event batch
    (issue 12's). This path makes the same calls on ``ingest`` as the ``post_log`` and
    ``post_logs`` handlers (the media type check, then ``store_one`` or
    ``store_batch``), answers with the same bytes and keeps the same metrics. What it
    cannot serve exactly as a handler would (no Content-Length, a body over the limit, a
    repeated header it reads) goes to Litestar. Litestar middleware and hooks never see
    the requests served here: whatever one adds for these routes must be added here too
    (tests/api/test_log_fast_path.py checks that both ways answer alike).

    In front of the checks (``handler`` makes them): ``hosts``, the Host check;
    ``cross_site``, the gate's refusal of a ``POST`` from another site's page;
    ``tokens``, the gate's token check (the authorizer, and the scopes ``POST /log`` and
    ``POST /logs`` need). A request any of them would refuse goes to ``handler``, which
    answers it; one they let through is served here (its principal, the token's, from
    the check made here), with no ASGI layer and no header scan of the gate's.
    """

    return PostDoor(handler, ingest, hosts, cross_site, tokens).asgi


#: what :meth:`PostDoor.admit` lets through: the path, the body's length, Content-Type,
#: Idempotency-Key, Content-Encoding and the principal the request is stored for
Admitted = tuple[str, int, bytes | None, str | None, str, str | None]


class PostDoor(WireDoor):
    """``POST /log`` and ``POST /logs`` with Litestar's checks made here: the ASGI app
    (:attr:`asgi`, see :func:`fast_post_log`), and the same steps for a request the HTTP
    protocol serves below ASGI (:mod:`logpipe_cli.http_guard`: :meth:`admit` on its
    headers, then :meth:`serve` on its whole body)."""

    def __init__(
        self,
        handler: ASGIApp,
        ingest: Ingest,
        hosts: HostCheck | None,
        cross_site: bool,
        tokens: tuple[Authorizer, RouteScope, RouteScope] | None,
    ) -> None:
        self.handler = handler
        self.ingest = ingest
        self.hosts = hosts
        self.cross_site = cross_site
        self.tokens = tokens
        self.max_body_bytes = ingest.max_body_bytes
        # the series _metrics_middleware would count, per route and status: looked up once
        self._series: dict[tuple[str, int], RequestTally] = {}

    def admit(
        self, path: str, headers: Iterable[tuple[bytes, bytes]], principal: str | None = None
    ) -> Admitted | None:
        """The request's headers read and checked (the Host check, the cross-site or the
        token check), or ``None`` when the checks behind (``handler``) must answer it:
        any of them would refuse it, its length is unusable or over the limit, or a
        header read here is repeated. ``principal``: the one a gate in front granted,
        when this door makes no token check."""
        length, ctype, idem, encoding, host, origin, authorization = _headers_read(headers)
        hosts = self.hosts
        if (
            not 0 <= length <= self.max_body_bytes
            or (hosts is not None and host is not None and not hosts.allows(host))
            or (self.cross_site and origin is not None and not same_origin(origin, host))
        ):
            return None
        tokens = self.tokens
        if tokens is not None:
            verdict = tokens[0].check(authorization, tokens[1] if path == "/log" else tokens[2])
            if type(verdict) is not Grant:
                return None  # the gate behind refuses it
            principal = verdict.principal
        return path, length, ctype, idem, encoding, principal

    def refusal(self, admitted: Admitted) -> tuple[str, Answer | None]:
        """The request's media type, and the 415 answer if its route refuses it (its
        body is then never read)."""
        ctype = admitted[2]
        if ctype == b"application/json":  # what nearly every client sends
            media = "application/json"
        elif ctype == b"application/x-ndjson":
            media = "application/x-ndjson"
        else:
            media = ctype.decode("latin-1").split(";", 1)[0].strip().lower() if ctype else ""
        if admitted[0] == "/log":
            return media, self.ingest.log_media_refusal(media)
        return media, self.ingest.batch_media_refusal(media)

    async def store(
        self, admitted: Admitted, media: str, body: bytes | Answer, client: str | None
    ) -> Answer:
        """``body`` stored as the request's route stores it (or the answer it already
        is: too large, the client gone). An unexpected error is raised: each caller
        logs it and answers 500, as api._unexpected_error_handler does."""
        path, _length, _ctype, idem, encoding, principal = admitted
        if type(body) is bytes and len(body) > self.max_body_bytes:
            return _too_large(self.ingest)
        if isinstance(body, tuple):  # an Answer
            return body
        if path == "/log":
            return await self.ingest.store_one(
                media, body, idem, principal=principal, client=client
            )
        return await self.ingest.store_batch(
            media, encoding, body, principal=principal, client=client
        )

    async def serve(self, admitted: Admitted, body: bytes, client: str | None) -> Answer:
        """The answer to an admitted request whose whole ``body`` is in."""
        media, answer = self.refusal(admitted)
        if answer is not None:
            return answer
        return await self.store(admitted, media, body, client)

    def count(self, path: str, status: int, start: float) -> None:
        """The request in the series ``_metrics_middleware`` would count it in."""
        tally = self._series.get((path, status))
        if tally is None:
            tally = self._series[path, status] = self.ingest.metrics.tally(
                path, "POST", str(status)
            )
        tally.add(time.perf_counter() - start)

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if (
            (path != "/log" and path != "/logs")
            or scope["type"] != _HTTP
            or scope.get("method") != "POST"
        ):
            await self.handler(scope, receive, send)
            return
        start = time.perf_counter()
        admitted = self.admit(path, scope["headers"], None if self.tokens else principal_of(scope))
        if admitted is None:
            await self.handler(scope, receive, send)
            return
        status = 500
        try:
            media, answer = self.refusal(admitted)
            if answer is None:  # the body is read only for a request that may be stored
                body: bytes | Answer | None = whole_body(receive)  # the usual: all there
                if body is None:
                    message = await receive()
                    if message["type"] == "http.request" and not message.get("more_body"):
                        body = message.get("body", b"")  # or else in one message
                    else:
                        body = await _body_or_answer(self.ingest, receive, message)
                client = scope.get("client")
                answer = await self.store(admitted, media, body, client[0] if client else None)
            status, content, headers = answer
        except Exception:  # as api._unexpected_error_handler logs and answers
            log.exception("unexpected error on POST %r", path)  # as api.py spells it
            status, content, headers = INTERNAL_ERROR
        try:
            # the client is gone (CLIENT_CLOSED): count it, send nothing
            if status != CLIENT_CLOSED and not (
                status == 200 and not headers and send_json_200(send, content)
            ):
                await _send_answer(scope, receive, send, (status, content, headers))
        finally:
            self.count(path, status, start)


_Headers = tuple[int, bytes | None, str | None, str, bytes | None, bytes | None, bytes | None]
#: what :func:`_headers_read` says of a request with a header it reads repeated
_REPEATED: _Headers = (-2, None, None, "", None, None, None)


def _headers_read(headers: Iterable[tuple[bytes, bytes]]) -> _Headers:
    """Content-Length (-1 if absent, -2 if unusable (not digits, or more than 20 of
    them) or any of the headers read here
    repeated: then nothing else is read), Content-Type and Idempotency-Key (``None`` if
    absent), Content-Encoding (``identity`` if absent), Host, Origin and Authorization
    (``None`` if absent)."""
    length = -1
    ctype: bytes | None = None
    idem: str | None = None
    encoding: str | None = None
    host: bytes | None = None
    origin: bytes | None = None
    authorization: bytes | None = None
    for name, value in headers:
        if name == b"host":
            if host is not None:
                return _REPEATED
            host = value
        elif name == b"content-length":
            # llhttp lets any run of leading zeros through (they never overflow its
            # counter), and int() refuses more than 4300 digits: a value longer than
            # any usable length goes to the handler, which answers it 400
            if length != -1 or not value.isdigit() or len(value) > 20:
                return _REPEATED
            length = int(value)
        elif name == b"content-type":
            if ctype is not None:
                return _REPEATED
            ctype = value
        elif name == b"authorization":
            if authorization is not None:
                return _REPEATED
            authorization = value
        elif name == b"idempotency-key":
            if idem is not None:
                return _REPEATED
            idem = value.decode("latin-1")
        elif name == b"content-encoding":
            if encoding is not None:
                return _REPEATED
            encoding = value.decode("latin-1")
        elif name == b"origin":
            if origin is not None:
                return _REPEATED
            origin = value
    encoding = "identity" if encoding is None else encoding
    return length, ctype, idem, encoding, host, origin, authorization


async def _body_or_answer(
    ingest: Ingest, receive: Receive, message: ReceiveMessage
) -> bytes | Answer:
    """The request's body, from its first ``message``, or the answer when there is none
    to store: the client left (no answer reaches it) or the body is over
    ``max_body_bytes`` (413)."""
    try:
        body = await _read_body(receive, ingest.max_body_bytes, message)
    except _Disconnected:
        return problem_answer(CLIENT_CLOSED, DISCONNECTED)
    return _too_large(ingest) if body is None else body


def _too_large(ingest: Ingest) -> Answer:
    ingest.metrics.refuse("too_large")
    return problem_answer(413, "request body too large")


async def _send_answer(scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
    """``answer`` sent as ASGI messages (when :func:`send_json_200` could not write it)."""
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
