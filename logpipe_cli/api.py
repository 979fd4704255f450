"""The HTTP API: ``create_app(settings, redis=None) -> Litestar``.

``POST /log`` is the hot path. Requests with a Content-Length are served by
:mod:`logpipe_cli.fastpath` in front of Litestar's router; the rest by the handler
here, which answers the same bytes (both build them with :mod:`logpipe_cli.answers`).
Either way the write goes through the group committer, so concurrent requests share
Redis round trips.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from logpipe_cli import __version__
from logpipe_cli.answers import Answer, error_answer, problem_answer, refusal_reason
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.drainer import Drainer
from logpipe_cli.errors import (
    InvalidEventError,
    LogpipeError,
)
from logpipe_cli.events import (
    MAX_EVENT_CHARS,
    SECONDS_PER_DAY,
    Event,
    day_of,
    decode_json,
    parse_event,
    validate_batch,
)
from logpipe_cli.fastpath import fast_post_log
from logpipe_cli.keys import USER_ID_RE, event_key
from logpipe_cli.metrics import CONTENT_TYPE, ApiMetrics
from logpipe_cli.schemas import (
    BatchError,
    BatchRefused,
    BatchStored,
    DrainSummary,
    Problem,
    Ready,
    StatsDoc,
    Stored,
)
from logpipe_cli.settings import Settings
from logpipe_cli.stats import collect

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
#: batch errors listed in one answer; the count says how many there were in all
MAX_LISTED_ERRORS = 100
_encode = msgspec.json.encode


def _problem(status: int, detail: str, field: str | None = None, **headers: str) -> Response[bytes]:
    return _response(problem_answer(status, detail, field, **headers))


def _response(answer: Answer) -> Response[bytes]:
    status, body, headers = answer
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def _error_response(exc: LogpipeError) -> Response[bytes]:
    return _response(error_answer(exc))


def _logpipe_error_handler(_: Request[Any, Any, Any], exc: LogpipeError) -> Response[bytes]:
    return _error_response(exc)


def _http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    detail = exc.detail
    if exc.status_code == 413:
        detail = "request body too large"
        request.app.state.metrics.refuse("too_large")
    return _problem(exc.status_code, detail, **(exc.headers or {}))


def _media_type(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


_ERRORS = {
    400: ResponseSpec(Problem, description="Malformed JSON or an invalid field; `field` names it"),
    413: ResponseSpec(Problem, description="Body larger than server.max_body_bytes"),
    415: ResponseSpec(Problem, description="Content-Type is not JSON"),
    500: ResponseSpec(
        Problem, description="A target Redis key holds another type (written by hand)"
    ),
    503: ResponseSpec(
        Problem, description="Redis unreachable or buffer full; retry after `Retry-After` s"
    ),
}


_EVENT_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["user_id", "event", "timestamp"],
    properties={
        "user_id": Schema(
            type=OpenAPIType.STRING,
            min_length=1,
            max_length=128,
            pattern=USER_ID_RE.pattern,
            description="ASCII letters, digits and . _ - @ +, not starting with '.'",
        ),
        "event": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_EVENT_CHARS),
        "timestamp": Schema(
            type=OpenAPIType.INTEGER,
            minimum=0,
            description="Unix seconds; at most server.max_future_seconds ahead of the server",
        ),
    },
    additional_properties=True,
    description="An event; fields beyond these three are stored as sent.",
    examples=[{"user_id": "123", "event": "clicked_button", "timestamp": 1712345678}],
)


def _with_body(content: dict[str, Schema], description: str) -> type[Operation]:
    """An OpenAPI operation documenting a body the handler reads raw (for speed)."""

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={mt: OpenAPIMediaType(schema=sc) for mt, sc in content.items()},
                description=description,
                required=True,
            )

    return BodyOperation


_ROUTES = frozenset({"/log", "/logs", "/healthz", "/readyz", "/stats", "/metrics", "/drain"})


def _metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Count requests and time them by route and status (known routes only)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope.get("method", "")
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            path = scope["path"]
            route = path if path in _ROUTES else "other"
            _observe(scope["app"].state.metrics, route, method, status, start)

    return middleware


def _observe(metrics: ApiMetrics, route: str, method: str, status: int, start: float) -> None:
    """Count one request and its latency (since ``start``, a ``perf_counter()``)."""
    metrics.requests.labels(route, method, str(status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - start)


def create_app(settings: Settings, redis: aioredis.Redis | None = None) -> Litestar:
    """The API app. Give it a Redis client to share one, or let its lifespan own one."""
    srv = settings.server
    by_ingest = srv.partition_by == "ingest"

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = redis if redis is not None else connect(settings.redis)
        buffer = Buffer(client, settings.redis)
        app.state.buffer = buffer
        app.state.committer = GroupCommitter(buffer, settings.redis.write_retry_seconds)
        app.state.drainer = Drainer(buffer, settings.drainer)
        try:
            yield
        finally:
            if redis is None:
                await client.aclose()

    metrics = ApiMetrics()

    def route(event: Event, now: float) -> str:
        if by_ingest:
            return event_key(event.user_id, day_of(now))
        return event_key(event.user_id, event.timestamp // SECONDS_PER_DAY)  # day_of, inlined

    def route_batch(events: list[Event], now: float) -> list[tuple[str, bytes]]:
        """``(key, line)`` per event; a key is built once per user and day, not per event."""
        made: dict[str, tuple[int, str]] = {}
        items: list[tuple[str, bytes]] = []
        for event in events:
            day = event.timestamp // SECONDS_PER_DAY
            hit = made.get(event.user_id)
            if hit is None or hit[0] != day:
                hit = made[event.user_id] = (day, route(event, now))
            items.append((hit[1], event.line))
        return items

    def refusal(exc: LogpipeError, events: int = 1) -> Answer:
        """Count ``events`` refused for ``exc``'s reason; the answer that says why."""
        metrics.refuse(refusal_reason(exc), events)
        return error_answer(exc)

    def refused(exc: LogpipeError, events: int = 1) -> Response[bytes]:
        return _response(refusal(exc, events))

    @post(
        "/log",
        summary="Ingest one event",
        description="Stores one JSON event in Redis. `200` means it is in Redis.",
        request_max_body_size=srv.max_body_bytes,
        responses={200: ResponseSpec(Stored, description="Stored in Redis"), **_ERRORS},
        status_code=200,
        operation_class=_with_body({"application/json": _EVENT_SCHEMA}, "One event"),
    )
    async def post_log(request: Request[Any, Any, Any]) -> Response[bytes]:
        # Requests with a Content-Length are answered by the ASGI fast path (see
        # fastpath.fast_post_log) with the same checks; this handler serves the rest and
        # the OpenAPI docs.
        refusal = check_log_media(_media_type(request))
        if refusal is not None:
            return _response(refusal)
        return _response(await store_one(request.app.state.committer, await request.body()))

    def check_log_media(media: str) -> Answer | None:
        """``POST /log``'s Content-Type check: the 415 answer, or ``None`` to go on."""
        if media and not _is_json(media):
            metrics.refuse("media_type")
            return problem_answer(415, f"Content-Type must be application/json, got {media}")
        return None

    async def store_one(committer: GroupCommitter, body: bytes) -> Answer:
        """``POST /log`` once the body is read: validate, store, and say how it went."""
        now = time.time()
        try:
            event = parse_event(body, now=now, max_future_s=srv.max_future_seconds)
            key = route(event, now)
            await committer.append([(key, event.line)])
        except LogpipeError as exc:
            return refusal(exc)
        metrics.accepted += 1
        return 200, b'{"stored":true,"key":' + _encode(key) + b"}", {}

    @post(
        "/logs",
        summary="Ingest a batch of events",
        description=(
            "NDJSON (`application/x-ndjson`) or a JSON array, optionally gzip-encoded. "
            "Every event is validated first: one bad event refuses the whole batch (400, "
            "listing each bad event's index and reason) and nothing is stored."
        ),
        request_max_body_size=srv.max_body_bytes,
        responses={
            200: ResponseSpec(BatchStored, description="Every event stored in Redis"),
            **_ERRORS,
            400: ResponseSpec(BatchRefused, description="Batch refused; nothing stored"),
        },
        status_code=200,
        operation_class=_with_body(
            {
                "application/x-ndjson": Schema(
                    type=OpenAPIType.STRING, description="One event (JSON object) per line"
                ),
                "application/json": Schema(type=OpenAPIType.ARRAY, items=_EVENT_SCHEMA),
            },
            "A batch of events; send `Content-Encoding: gzip` to compress it",
        ),
    )
    async def post_logs(request: Request[Any, Any, Any]) -> Response[bytes]:
        media = _media_type(request)
        ndjson = media in NDJSON_TYPES
        if not ndjson and not _is_json(media):
            metrics.refuse("media_type")
            return _problem(
                415, f"Content-Type must be application/x-ndjson or application/json, got {media}"
            )
        try:
            body = _decompress(await request.body(), request, srv.max_body_bytes)
            docs = _split_batch(body, ndjson)
        except LogpipeError as exc:
            return refused(exc)
        if len(docs) > srv.max_batch_events:
            metrics.refuse("too_large", len(docs))
            return _problem(
                413, f"batch has {len(docs)} events; at most {srv.max_batch_events} allowed"
            )
        now = time.time()
        events, refusals = validate_batch(
            docs, now=now, max_future_s=srv.max_future_seconds, raw=ndjson
        )
        if refusals:
            metrics.refuse("invalid", len(docs))
            refusal = BatchRefused(
                f"{len(refusals)} of {len(docs)} events invalid; nothing stored",
                [BatchError(i, detail) for i, detail in refusals[:MAX_LISTED_ERRORS]],
            )
            return Response(_encode(refusal), status_code=400, media_type=MediaType.JSON)
        items = route_batch(events, now)
        if items:
            try:
                await request.app.state.committer.append(items)
            except LogpipeError as exc:
                return refused(exc, len(items))
        metrics.accepted += len(items)
        return Response(_encode(BatchStored(len(items))), media_type=MediaType.JSON)

    @get("/healthz", summary="Liveness: 200 while the process serves")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/readyz",
        summary="Readiness: 200 only while Redis answers",
        responses={
            200: ResponseSpec(Ready, description="Redis answers"),
            503: ResponseSpec(Problem, description="Redis does not answer"),
        },
    )
    async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            rtt = await request.app.state.buffer.ping()
        except LogpipeError as exc:
            return _error_response(exc)
        return Response(
            _encode({"status": "ready", "redis_rtt_ms": round(rtt * 1000, 3)}),
            media_type=MediaType.JSON,
        )

    @get(
        "/stats",
        summary="Buffered keys and events, totals, and the last drain",
        description=(
            "`buffered` and `totals` come from Redis (all API processes and drainers); "
            "`api` counts this process since it started."
        ),
        responses={
            200: ResponseSpec(StatsDoc, description="The pipeline's state"),
            503: ResponseSpec(Problem, description="Redis does not answer"),
        },
    )
    async def stats(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            data = await collect(request.app.state.buffer, settings.drainer.log_pattern)
        except LogpipeError as exc:
            return _error_response(exc)
        data["api"] = {
            "accepted": metrics.accepted,
            "refused": dict(metrics.refused),
            "started_at": metrics.started_at,
        }
        return Response(_encode(data), media_type=MediaType.JSON)

    @get(
        "/metrics",
        summary="Prometheus metrics",
        description="Text exposition format. Redis-wide values are left out while Redis is down.",
        media_type=CONTENT_TYPE,
    )
    async def prometheus(request: Request[Any, Any, Any]) -> Response[bytes]:
        buffer: Buffer = request.app.state.buffer
        shared: dict[str, Any] = {}
        try:
            counters, last = await buffer.counters()
        except LogpipeError:
            metrics.redis_errors += 1
        else:
            shared["buffered"] = counters.get("buffered", 0)
            shared["drained_events"] = counters.get("drained_events", 0)
            if last.get("at"):
                shared["last_drain_at"] = float(last["at"])
        return Response(metrics.render(shared), media_type=CONTENT_TYPE)

    @post(
        "/drain",
        summary="Drain now",
        description=(
            "Runs one drain pass in the API process (into drainer.logs_dir, relative to the "
            "API's working directory) and answers with its summary, as `logpipe drain --once` "
            "prints it. `200` when the pass met no error, `500` (same body) otherwise. Keys "
            "another drainer holds are left to it and listed in `busy`."
        ),
        status_code=200,
        responses={
            200: ResponseSpec(DrainSummary, description="The pass met no error"),
            500: ResponseSpec(DrainSummary, description="The pass met an error (see `errors`)"),
        },
    )
    async def drain(request: Request[Any, Any, Any]) -> Response[bytes]:
        report = await request.app.state.drainer.drain_once(wait_for_busy=False)
        return Response(
            _encode(report.as_dict()),
            status_code=200 if report.ok else 500,
            media_type=MediaType.JSON,
        )

    app = Litestar(
        route_handlers=[post_log, post_logs, healthz, readyz, stats, prometheus, drain],
        middleware=[_metrics_middleware],
        lifespan=[lifespan],
        exception_handlers={
            LogpipeError: _logpipe_error_handler,
            HTTPException: _http_error_handler,
        },
        openapi_config=OpenAPIConfig(title="logpipe", version=__version__),
        request_max_body_size=srv.max_body_bytes,
        debug=False,
    )
    app.state.metrics = metrics
    app.asgi_handler = fast_post_log(
        app.asgi_handler, metrics, srv.max_body_bytes, check_log_media, store_one
    )
    return app


def _decompress(body: bytes, request: Request[Any, Any, Any], limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise InvalidEventError(f"Content-Encoding {encoding!r} not supported (use gzip)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidEventError(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _TooLarge(f"decompressed body larger than {limit} bytes")
    if not inflater.eof:  # cut off: storing the lines that did arrive would lose the rest
        raise InvalidEventError("body is not valid gzip: the stream is truncated")
    return out


class _TooLarge(InvalidEventError):
    http_status = 413


def _split_batch(body: bytes, ndjson: bool) -> list[Any]:
    """NDJSON -> raw lines (decoded one by one); JSON -> the decoded array's items."""
    if ndjson:
        return [line for line in body.split(b"\n") if line.strip()]
    docs = decode_json(body)
    if not isinstance(docs, list):
        raise InvalidEventError("a JSON batch must be an array of events")
    return docs
