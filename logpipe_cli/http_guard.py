"""Limits at the HTTP layer: header size, header and body deadlines, a connection cap and a
budget of request-body bytes in flight, enforced in uvicorn's httptools protocol.

Measured against an unguarded ``logpipe serve`` (issue 9): 4 connections each sending an
unfinished 256 MiB header line took it from 77 MB to 1.3 GB, 1,000 connections stalling
near the end of a 1 MiB body to 1.1 GB, idle and trickling connections were never closed
and ~20k idle sockets exhausted the fd limit. uvicorn's own knobs do not cover this:
``limit_concurrency`` accepts every connection and only answers its requests 503 (so idle
sockets would turn every real request away), ``h11_max_incomplete_event_size`` applies to
h11 only, and ``timeout_keep_alive`` runs only between requests, never before the first.

The checks live in the protocol, below ASGI, so a refused connection never reaches the
app (nor the ``POST /log`` fast path) and holds no task. Each process (each ``--workers``
worker) keeps its own counts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from logpipe_cli.answers import CLIENT_CLOSED, INTERNAL_ERROR, Answer, problem_answer
from logpipe_cli.wire import WireCycle, WireDoor

logger = logging.getLogger("uvicorn.error")

#: file descriptors kept back from the connection cap: Redis pools, log files, the listener
FD_RESERVE = 128
#: requests one connection may have queued behind the one in progress (HTTP/1.1
#: pipelining); one more closes the connection
MAX_PIPELINED = 32
#: header fields of one request (and as many trailer fields): each costs ~120 bytes
#: of Python objects whatever its size, so max_header_bytes alone let 32 KiB of empty
#: fields hold ~720 KB (Apache's LimitRequestFields is 100 too)
MAX_HEADER_FIELDS = 100


@dataclass(frozen=True)
class HttpLimits:
    """What one client connection may take; each process applies them on its own."""

    #: request line + header fields of one request; over it: 431 and the connection closed
    max_header_bytes: int = 32 * 1024
    #: from a connection's opening (or a request's first byte) to its last header byte
    header_timeout_s: float = 10.0
    #: from a request's last header byte to its last body byte
    body_timeout_s: float = 30.0
    #: open connections; a new one past it closes the oldest connection with no request in
    #: progress, or is refused with 503 if every one has a request in progress
    max_connections: int = 2048
    #: request-body bytes received and not yet answered, all connections together; a
    #: request that would go past it gets 503 with Retry-After and is closed
    max_inflight_body_bytes: int = 64 * 1024 * 1024
    #: idle time allowed between two requests on one connection (uvicorn's keep-alive)
    keepalive_s: float = 5.0


def fd_bounded(limits: HttpLimits) -> HttpLimits:
    """``limits`` with ``max_connections`` lowered to fit the process's fd limit, so the
    cap is met before ``accept`` starts failing with EMFILE."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or limits.max_connections <= soft - FD_RESERVE:
        return limits
    cap = max(1, soft - FD_RESERVE)
    logger.warning(
        "max_connections %d is above what the fd limit (%d) allows: using %d",
        limits.max_connections,
        soft,
        cap,
    )
    return HttpLimits(**{**limits.__dict__, "max_connections": cap})


class ConnectionGuard:
    """Counts shared by the connections of one server process.

    Handed to every protocol through ``functools.partial``; pickled (empty) into each
    ``--workers`` process, so each worker counts its own.
    """

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        #: open connections, oldest first; a value of True = no request in progress
        self.open: OrderedDict[GuardedHttpToolsProtocol, bool] = OrderedDict()
        self.inflight_body_bytes = 0

    def evict_idle(self) -> bool:
        """Close the connection idle the longest (no request in progress, or only part of
        its headers in); False if every connection has a request in progress."""
        for proto, idle in self.open.items():
            if idle:
                proto.drop("evicted: connection cap reached")
                return True
        return False


def _problem_response(status: int, detail: str, *, retry_after: bool) -> bytes:
    """A whole HTTP response carrying the API's usual ``{"detail": ...}`` body."""
    _status, body, _headers = problem_answer(status, detail)
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    if retry_after:
        head.append(b"retry-after: 1\r\n")
    return b"".join([*head, b"\r\n", body])


#: what uvicorn writes for ``Expect: 100-continue`` before any answer: never held
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _HeadHeld:
    """A response's transport that holds its head (status line and headers) until the
    first body bytes, so that a whole small answer leaves in one ``write`` (one syscall)
    rather than two.

    uvicorn writes the head when the app sends ``http.response.start`` and the body on
    ``http.response.body``; a write costs more than everything logpipe does in Python
    to store one event (issue 12's profile). The head is never held past the response:
    the next write, ``close`` or the response's end (``done``) sends it. The head is
    known by its first bytes (``HTTP/``; a body write never starts so: uvicorn writes a
    body as it is, or chunked behind a hex length), not by asking the cycle: a
    reference to the cycle, which references this, would make a reference cycle per
    request for the garbage collector, whose pauses showed in the p99.
    """

    __slots__ = ("_held", "_holding", "_transport", "then")

    def __init__(self, transport: asyncio.Transport, then: Any) -> None:
        self._transport = transport
        self._held: bytes | None = None
        #: True until the response's head has been taken
        self._holding = True
        #: what the cycle calls when its response is complete (the protocol's hook)
        self.then: Any = then

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            # closed under the response (a flood of pipelined requests, a limit): uvloop
            # raises on a write to a closed handle, a traceback per connection dropped
            return
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._holding and data[:5] == b"HTTP/" and data != _CONTINUE:
            self._holding = False
            self._held = data
        else:
            self._transport.write(data)

    def write_whole(self, response: bytes) -> None:
        """A whole response (head and body) at once: nothing to hold."""
        self._holding = False
        if not self._transport.is_closing():  # as write: not on a closed handle
            self._transport.write(response)

    def release(self) -> None:
        """Send a held head now (the response ended without a body write, e.g. HEAD)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def done(self) -> None:
        """The response is complete: its head is out, then the protocol hears of it."""
        self.release()
        then, self.then = self.then, None
        if then is not None:
            then()

    def close(self) -> None:
        self.release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else uvicorn may ask of it
        return getattr(self._transport, name)


#: the head of :func:`send_json_200`'s answers up to the Content-Length value, as
#: uvicorn writes it for the fast path's two headers
_JSON_200 = STATUS_LINE[200] + b"content-type: application/json\r\ncontent-length: "


def send_json_200(send: Any, body: bytes) -> bool:
    """Answer ``200`` with the JSON ``body`` at once, byte for byte as uvicorn's ``send``
    answers ``http.response.start`` (Content-Type and Content-Length) then
    ``http.response.body``, when ``send`` is a guarded connection's own (no layer wraps
    it) and the answer needs nothing but writing: False (nothing done) otherwise, and
    the caller sends the two messages.

    The two messages cost more than writing the answer (issue 12's profile: two
    coroutine calls, two message dicts, the header checks and a head held for the body).
    """
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        return False
    held: Any = cycle.transport
    if (
        type(held) is not _HeadHeld
        or cycle.response_started
        or cycle.disconnected
        or cycle.flow.write_paused
        or cycle.default_headers
        or cycle.access_log
        or cycle.scope["method"] == "HEAD"
    ):
        return False
    # what send() does with the two messages, in order
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    keep_alive = cycle.keep_alive
    held.write_whole(answer_bytes((200, body, {}), keep_alive))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        held.close()
    cycle.on_response()
    return True


def whole_body(receive: Any) -> bytes | None:
    """The request's body, taken as ``receive()`` would answer it with one
    ``http.request`` message, when ``receive`` is uvicorn's httptools connection's own and
    the whole body has arrived (the usual for a small request): ``None`` otherwise
    (nothing done), and the caller awaits ``receive()``.

    ``receive()`` makes two coroutines and a message dict to hand over bytes that are
    already there (issue 12's profile); this does what it does in that case, in order.
    """
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        return None
    try:
        if (
            cycle.more_body
            or cycle.waiting_for_100_continue
            or cycle.disconnected
            or cycle.response_complete
            or not cycle.message_event.is_set()
        ):
            return None
        flow = cycle.flow
        cycle.body  # noqa: B018 (read before anything changes)
    except AttributeError:  # a uvicorn whose request cycle differs: receive() as usual
        return None
    flow.resume_reading()
    cycle.message_event.clear()
    body = bytes(cycle.body)
    cycle.body = bytearray()
    return body


_JSON_TYPE = b"content-type: application/json\r\n"


def answer_bytes(answer: Answer, keep_alive: bool) -> bytes:
    """``answer`` as uvicorn's ``send`` writes what the ASGI app sends for it
    (``send_json_200``'s bytes for a plain 200, a Litestar ``ASGIResponse``'s headers
    for any other: its own, then Content-Type and Content-Length)."""
    status, body, headers = answer
    end = b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n"
    if status == 200 and not headers:
        return b"%b%d%b%b" % (_JSON_200, len(body), end, body)
    head = [STATUS_LINE[status]]
    for name, value in headers.items():
        head.append(b"%b: %b\r\n" % (name.lower().encode("latin-1"), value.encode("latin-1")))
    head.append(_JSON_TYPE)
    head.append(b"content-length: %d%b" % (len(body), end))
    return b"".join([*head, body])


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HttpLimits` enforced.

    Costs on the fast path: a counter per read, one sum over the header fields per
    request, and no timer for a request that arrives in one read (the common case).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.limits = guard.limits
        self.timeout_keep_alive = self.limits.keepalive_s  # type: ignore[assignment]
        #: True between requests and while a request line and headers are being read
        self._reading_headers = True
        #: bytes read since the current header block began (bounds unfinished headers)
        self._header_bytes = 0
        #: True from the last header byte to the last body byte of a request
        self._reading_body = False
        #: body bytes this connection holds against the shared budget
        self._body_bytes = 0
        #: body bytes handed on so far, and the bytes read since the last of them while
        #: the body is read (chunk framing, trailer fields: see data_received)
        self._body_seen = 0
        self._framing_bytes = 0
        #: the request's header fields: any more in its list are trailer fields
        self._header_fields = 0
        #: requests whose headers are complete, so a read can tell it began another
        self._requests = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: when the connection, idle since its last answer, is closed (None: not idle)
        self._idle_until: float | None = None
        #: the one keep-alive timer, armed for the first idle deadline and moved on
        #: lazily (see on_response_complete)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: the app whose ASGI handler may be a WireDoor's (Litestar, below uvicorn's
        #: layers), or None
        self._root: Any = _handler_owner(self.app)

    # ---- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if len(guard.open) >= self.limits.max_connections and not guard.evict_idle():
            self._respond_and_close(503, "too many connections: retry later", retry_after=True)
            return
        guard.open[self] = True
        # a connection that never sends a request is closed like a slow one
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._header_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        """Stop counting this connection: timers off, budget back, out of the cap. A
        wire request whose body never came whole is counted as the ASGI cycle counts
        it, as one whose client left (its serving never started: nothing else will)."""
        cycle: Any = self.cycle
        if not self._closed and self._reading_body and type(cycle) is WireCycle:
            cycle.door.count(cycle.path, CLIENT_CLOSED, cycle.start)
        self._closed = True
        for timer in (self._header_timer, self._body_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._idle_timer = None
        self._idle_until = None
        self._release_body()
        self.guard.open.pop(self, None)

    def drop(self, why: str) -> None:
        """Close the connection without an answer: it has no request in progress, or an
        answer has begun and cannot be replaced."""
        logger.debug("closing a connection from %s: %s", self.client, why)
        self._forget()
        if not self.transport.is_closing():
            self.transport.close()

    def _respond_and_close(self, status: int, detail: str, *, retry_after: bool = False) -> None:
        """Answer ``status`` unless a response has begun, then close the connection.

        A request task waiting for its body sees a disconnect and ends; its own answer,
        if it tries one, is dropped.
        """
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # half an answer is out: only closing is left
                self.drop(detail)
                return
            cycle.disconnected = True
            cycle.message_event.set()
        # debug: an attacker opening connections by the thousand must not flood the log
        logger.debug("%d to %s: %s", status, self.client, detail)
        self._forget()
        if not self.transport.is_closing():
            self.transport.write(_problem_response(status, detail, retry_after=retry_after))
            self.transport.close()

    # ---- reads -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._reading_headers:
            self._header_bytes += len(data)
        in_body, seen, requests = self._reading_body, self._body_seen, self._requests
        super().data_received(data)
        if self._closed:
            return
        if in_body and self._reading_body and requests == self._requests:
            # A chunked body's trailer fields (header fields after its last chunk: kept
            # by httptools until complete, then appended to the request's header list)
            # are neither headers nor body to the counts above. Reads that carry no
            # body byte (trailers, or framing alone) are held to the header limit
            # together; a read with body bytes starts the count again (what it held
            # after them, at most one read, is not counted), so no trailer escapes it.
            if self._body_seen != seen:
                self._framing_bytes = 0
            else:
                self._framing_bytes += len(data)
            # (uvicorn appends the trailer fields to the request's header list)
            if (
                self._framing_bytes > self.limits.max_header_bytes
                or len(self.headers) - self._header_fields > MAX_HEADER_FIELDS
            ):
                self._trailers_too_large()
                return
        if self._reading_headers:
            if self._header_bytes > self.limits.max_header_bytes:
                self._too_large()
            elif self._header_timer is None and self._header_bytes:
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._header_timeout
                )
        elif self._reading_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def on_message_begin(self) -> None:
        # uvicorn's, but for the scope: built in on_headers_complete, and only for a
        # request served over ASGI
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        """The request's scope, as uvicorn's on_message_begin makes it."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        if self._closed:
            return
        self._reading_headers = False
        self._header_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        # a whole header block read in one go passes the per-read count: measure it
        size = len(self.url) + 16
        hosts = 0
        forwarded = False
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            hosts += name == b"host"
            if name[:12] == b"x-forwarded-":
                forwarded = True
        if size > self.limits.max_header_bytes:
            self._too_large()
            return
        if len(self.headers) > MAX_HEADER_FIELDS:
            self._respond_and_close(
                431, f"too many request header fields: the limit is {MAX_HEADER_FIELDS}"
            )
            return
        if hosts > 1:
            # RFC 9112 3.2: a 400. Which one counted differed between the checks that
            # read Host (the DNS-rebinding guard took the first, the cross-site check
            # the last): one answer for all of them instead
            self._respond_and_close(400, "more than one Host header field")
            return
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_complete
            and len(self.pipeline) >= MAX_PIPELINED
        ):
            # uvicorn queues a request pipelined behind one in progress, and reads on
            # after each answer: without a bound a client sending them by the thousand
            # holds ~2 KB per request queued. No answer: answers go out in order.
            self.drop(f"more than {MAX_PIPELINED} requests pipelined")
            return
        self._reading_body = True
        self._requests += 1
        self._framing_bytes = 0
        self._header_fields = len(self.headers)
        self.guard.open[self] = False
        if (
            self._root is not None
            and self.url in _WIRE_PATHS
            and (cycle is None or cycle.response_complete)
            and not forwarded
            and not self.expect_100_continue
            and self._wire_begin()
        ):
            return
        self._asgi_scope()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            held = _HeadHeld(self.transport, cycle.on_response)
            cycle.transport = held  # type: ignore[assignment]
            cycle.on_response = held.done

    def _wire_begin(self) -> bool:
        """Serve the request below ASGI if its route's WireDoor admits it (the parser is
        at its last header byte): True if it does."""
        start = time.perf_counter()
        door = getattr(self._root.asgi_handler, "__self__", None)
        if not isinstance(door, WireDoor) or self.pipeline or self.root_path:
            return False
        parser = self.parser
        if parser.get_method() != b"POST" or parser.should_upgrade():
            return False
        path = self.url.decode("ascii")
        admitted = door.admit(path, self.headers)
        if admitted is None:
            return False
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        self.cycle = WireCycle(door, path, admitted, keep_alive, start)  # type: ignore[assignment]
        return True

    async def _serve_wire(self, cycle: WireCycle) -> None:
        """The request's answer from ``door``, written in one piece unless the client
        left; then on to the next request, as uvicorn's cycle would."""
        door = cycle.door
        status = CLIENT_CLOSED
        try:
            client = self.client
            try:
                answer = await door.serve(
                    cycle.admitted, bytes(cycle.body), client[0] if client else None
                )
            except Exception:  # the door's own answer for these is a 500 too
                logger.exception("unexpected error on POST %r", cycle.path)
                answer = INTERNAL_ERROR
            cycle.body = bytearray()
            status = answer[0]
            if cycle.disconnected or status == CLIENT_CLOSED:
                return
            cycle.response_started = True
            transport = self.transport
            if not transport.is_closing():
                transport.write(answer_bytes(answer, cycle.keep_alive))
            if cycle.keep_alive and self.flow.write_paused:
                # the client is not reading its answers: still in progress, so a request
                # it sends meanwhile queues (and pauses reading) as uvicorn's send would
                # wait here; else each answer would pile up in this process's memory
                await self.flow.drain()
            cycle.response_complete = True
            if not cycle.keep_alive:
                transport.close()
            self.on_response_complete()
        finally:
            door.count(cycle.path, status, cycle.start)

    def handle_websocket_upgrade(self) -> None:
        """Refuse a WebSocket upgrade (logpipe serves none), while the connection is still
        this protocol's: handed to uvicorn's WebSocket protocol, it never told this one
        that it closed, and its slot in the connection cap stayed taken, as busy, until
        the body timeout fired on a connection long gone."""
        self._respond_and_close(400, "WebSocket is not served here: this API speaks plain HTTP")

    def _too_large(self) -> None:
        self._respond_and_close(
            431,
            f"request header fields too large: the limit is {self.limits.max_header_bytes} bytes",
        )

    def _trailers_too_large(self) -> None:
        detail = (
            f"request trailer fields too large: the limit is {self.limits.max_header_bytes} "
            f"bytes and {MAX_HEADER_FIELDS} fields"
        )
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            self.drop(detail)  # answered already (a refusal before the body): only close
        else:
            self._respond_and_close(431, detail)

    def on_body(self, body: bytes) -> None:
        if self._closed:
            return
        self._body_seen += len(body)
        cycle: Any = self.cycle
        if cycle is not None and not cycle.response_complete:
            guard = self.guard
            if guard.inflight_body_bytes + len(body) > self.limits.max_inflight_body_bytes:
                self._respond_and_close(
                    503, "too many request bytes in flight: retry later", retry_after=True
                )
                return
            guard.inflight_body_bytes += len(body)
            self._body_bytes += len(body)
            if type(cycle) is WireCycle:
                cycle.body += body  # at most max_body_bytes (its Content-Length)
                return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._closed:
            return
        if len(self.headers) - self._header_fields > MAX_HEADER_FIELDS:  # trailers, one read
            self._trailers_too_large()
            return
        self._reading_body = False
        self._reading_headers = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        cycle: Any = self.cycle
        if type(cycle) is WireCycle:
            if not cycle.response_complete and not cycle.disconnected:
                task = self.loop.create_task(self._serve_wire(cycle))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._release_body()
        if not self._closed and not self._reading_body and not self.pipeline:
            # no request in progress: evictable at the cap, after those idle for longer
            self.guard.open[self] = True
            self.guard.open.move_to_end(self)
        # uvicorn's on_response_complete, but for its keep-alive timer: uvicorn arms a
        # new one after each answer and cancels it on the next read, ~1.9 us a request
        # with uvloop; here an idle deadline is noted and one timer follows it lazily
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_until = until = self.loop.time() + self.timeout_keep_alive
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_at(until, self._idle_timeout)

    def _unset_keepalive_if_required(self) -> None:
        """Called by uvicorn on every read (and here on every answer): not idle."""
        self._idle_until = None
        if self.timeout_keep_alive_task is not None:  # a timer of uvicorn's own
            super()._unset_keepalive_if_required()

    def _idle_timeout(self) -> None:
        """The keep-alive timer: close the connection if it is still idle at its
        deadline, else follow the deadline set since (none while a request is served:
        the next answer arms the timer again)."""
        self._idle_timer = None
        until = self._idle_until
        if until is None:
            return
        # libuv's timers count whole milliseconds (uvicorn's own fire as early)
        if self.loop.time() + 0.001 >= until:
            self._idle_until = None
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(until, self._idle_timeout)

    def _release_body(self) -> None:
        if self._body_bytes:
            self.guard.inflight_body_bytes -= self._body_bytes
            self._body_bytes = 0

    # ---- deadlines -------------------------------------------------------------------

    def _header_timeout(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the next request's headers trickle in while this one is answered: close after
            cycle.keep_alive = False
            return
        if self._header_bytes:
            self._respond_and_close(
                408,
                f"request headers not received within {self.limits.header_timeout_s:g} s",
            )
        else:
            self.drop("no request within the header timeout")

    def _body_timeout(self) -> None:
        self._body_timer = None
        self._respond_and_close(
            408, f"request body not received within {self.limits.body_timeout_s:g} s"
        )


#: the request targets a WireDoor may serve
_WIRE_PATHS = frozenset((b"/log", b"/logs"))


def _handler_owner(app: Any) -> Any:
    """The app below uvicorn's layers (each keeps the next as ``app``) that has an ASGI
    handler a :class:`WireDoor` may own (Litestar's ``asgi_handler``), or ``None``."""
    for _ in range(8):
        if app is None or hasattr(app, "asgi_handler"):
            return app
        app = getattr(app, "app", None)
    return None


def protocol_factory(limits: HttpLimits) -> functools.partial[GuardedHttpToolsProtocol]:
    """What to pass as uvicorn's ``http=``: the guarded protocol with its shared counts.

    uvicorn takes a class or anything that builds a protocol from ``config``,
    ``server_state`` and ``app_state``; a partial also pickles into ``--workers`` processes.
    """
    return functools.partial(GuardedHttpToolsProtocol, guard=ConnectionGuard(fd_bounded(limits)))
