"""The HTTP API: ``create_app(settings, redis=None) -> Litestar``.

Routes, their OpenAPI declarations and the probes; the work is done by services that
know nothing of HTTP: :class:`~logpipe_cli.ingest.Ingest` (the write path) and
:class:`~logpipe_cli.drain_runner.DrainRunner` (``POST /drain``). The lifespan opens
them as one :class:`Services` object and closes them.

``POST /log`` and ``POST /logs`` are the hot paths. Requests with a Content-Length are
served by :mod:`logpipe_cli.fastpath` in front of Litestar's router; the rest by the
handlers here. Both call the same ``Ingest`` methods, which build the answers, so they answer
the same bytes; and either way the write goes through the group committer, so
concurrent requests share Redis round trips.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any

import msgspec
import redis.asyncio as aioredis
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.enums import ParamType, ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.params import Parameter
from litestar.response import Stream
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from logpipe_cli import __version__
from logpipe_cli.answers import (
    CLIENT_CLOSED,
    DISCONNECTED,
    INTERNAL_ERROR,
    Answer,
    error_answer,
    problem_answer,
)
from logpipe_cli.auth import Authorizer, RouteScope, load_authorizer
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.drain_runner import DrainRunner
from logpipe_cli.errors import LogpipeError
from logpipe_cli.events import event_json_schema
from logpipe_cli.fastpath import fast_post_log
from logpipe_cli.gate import Cors, HostCheck, gate, host_guard, principal_of, scope_needed
from logpipe_cli.ingest import Ingest
from logpipe_cli.metrics import CONTENT_TYPE, ApiMetrics
from logpipe_cli.query import MAX_EXPORT_LIMIT, MAX_LIMIT, EventReader, Query
from logpipe_cli.resp import LeanRedis
from logpipe_cli.schemas import (
    LOGS_QUERY_PARAMETERS,
    ApiCounts,
    BatchProblem,
    BatchStored,
    DrainSummary,
    EventsPage,
    Problem,
    Ready,
    StatsDoc,
    Stored,
)
from logpipe_cli.settings import Settings
from logpipe_cli.stats import collect, last_drain_of

_encode = msgspec.json.encode
log = logging.getLogger("logpipe.api")


@dataclass(frozen=True)
class Services:
    """What the routes work with: opened by the app's lifespan, closed by it."""

    settings: Settings
    metrics: ApiMetrics
    #: the write path's Redis client: probes, ``/stats``, ``/metrics``
    buffer: Buffer
    ingest: Ingest
    #: on a Redis client of its own, so a drain cannot take the write path's connections
    drains: DrainRunner


def services_of(app: Litestar) -> Services:
    """The services of a running ``app`` (``app.state`` holds them untyped)."""
    services = app.state.get("services")
    if not isinstance(services, Services):
        raise RuntimeError("the app's lifespan is not running: no services")
    return services


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
    if exc.status_code == 500 and detail == DISCONNECTED:
        # Litestar's word for a client gone mid-body: not a server error. The metrics
        # middleware counts this 499 and sends nothing (there is no one to send it to).
        return _problem(CLIENT_CLOSED, detail)
    if exc.status_code == 413:
        detail = "request body too large"
        services_of(request.app).metrics.refuse("too_large")
    return _problem(exc.status_code, detail, **(exc.headers or {}))


def _unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Litestar logs nothing with debug off: this is the one log line (and traceback) per
    # error. The request's headers and body are left out: they may hold a token.
    # the path as repr: a client-chosen %0A in it cannot start a forged log line
    log.error("unexpected error on %s %r", request.method, request.url.path, exc_info=exc)
    return _response(INTERNAL_ERROR)


def _media_type(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


_ERRORS = {
    400: ResponseSpec(Problem, description="Malformed JSON or an invalid field; `field` names it"),
    413: ResponseSpec(
        Problem,
        description="Body larger than server.max_body_bytes, or a batch over a count limit",
    ),
    415: ResponseSpec(Problem, description="Content-Type is not JSON"),
    429: ResponseSpec(
        Problem, description="Over limits.events_per_second; retry after `Retry-After` s"
    ),
    500: ResponseSpec(
        Problem, description="A target Redis key holds another type (written by hand)"
    ),
    503: ResponseSpec(
        Problem, description="Redis unreachable or buffer full; retry after `Retry-After` s"
    ),
}


#: the answers of a route that needs a token (when tokens are configured)
_AUTH_ERRORS = {
    401: ResponseSpec(
        Problem,
        description="Tokens are configured and the request has none, or an unknown one "
        "(`WWW-Authenticate: Bearer`)",
    ),
    403: ResponseSpec(Problem, description="The token's scope does not allow this route"),
}
#: the OpenAPI security requirement of a route that needs a token
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _needs(scope: RouteScope) -> dict[str, Any]:
    """A route's declaration of the token scope it needs: its ``opt`` (read by the
    gate), its security requirement and its 401/403 answers (read by OpenAPI).
    Every route declares one; one that does not needs an admin token."""
    if scope == "public":
        return {"opt": {"scope": scope}}
    return {"opt": {"scope": scope}, "security": _BEARER}


def _openapi_schema(doc: dict[str, Any]) -> Schema:
    """A JSON Schema dict (``events.event_json_schema``) as Litestar's OpenAPI ``Schema``."""
    kwargs: dict[str, Any] = {}
    for name, value in doc.items():
        attr = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
        if name == "type":
            value = OpenAPIType(value)
        elif name == "properties":
            value = {k: _openapi_schema(v) for k, v in value.items()}
        elif name == "propertyNames":
            value = _openapi_schema(value)
        kwargs[attr] = value
    return Schema(**kwargs)


#: the event's schema, derived from the one statement of the rules (events.RULES)
_EVENT_SCHEMA = _openapi_schema(event_json_schema())


def _with_body(
    content: dict[str, Schema], description: str, headers: tuple[OpenAPIParameter, ...] = ()
) -> type[Operation]:
    """An OpenAPI operation documenting a body (and headers) the handler reads raw (for
    speed)."""

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={mt: OpenAPIMediaType(schema=sc) for mt, sc in content.items()},
                description=description,
                required=True,
            )
            if headers:
                self.parameters = [*(self.parameters or []), *headers]

    return BodyOperation


_ROUTES = frozenset({"/log", "/logs", "/healthz", "/readyz", "/stats", "/metrics", "/drain"})


def _metrics_middleware(app: ASGIApp, metrics: ApiMetrics) -> ASGIApp:
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
            if status != CLIENT_CLOSED:  # the client is gone: count it, send nothing
                await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            path = scope["path"]
            route = path if path in _ROUTES else "other"
            _observe(metrics, route, method, status, start)

    return middleware


def _observe(metrics: ApiMetrics, route: str, method: str, status: int, start: float) -> None:
    """Count one request and its latency (since ``start``, a ``perf_counter()``)."""
    metrics.requests.labels(route, method, str(status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - start)


@post(
    "/log",
    summary="Ingest one event",
    description=(
        "Stores one JSON event in Redis. `200` means it is in Redis. An `Idempotency-Key` "
        "header (1-128 of letters, digits and . _ : -) becomes the event's `event_id`; "
        "if the event has another `event_id`: 400. An event whose id its user stored "
        'within redis.dedupe_seconds is not stored again: `200` with `"duplicate": true`.'
    ),
    responses={
        200: ResponseSpec(Stored, description="Stored in Redis (or stored before: duplicate)"),
        **_ERRORS,
        **_AUTH_ERRORS,
    },
    status_code=200,
    operation_class=_with_body(
        {"application/json": _EVENT_SCHEMA},
        "One event",
        (
            OpenAPIParameter(
                name="Idempotency-Key",
                param_in=ParamType.HEADER,
                required=False,
                description="The event's id, if the body has no `event_id` (or the same one)",
                schema=_openapi_schema(event_json_schema()["properties"]["event_id"]),
            ),
        ),
    ),
    **_needs("ingest"),
)
async def post_log(request: Request[Any, Any, Any]) -> Response[bytes]:
    # Requests with a Content-Length are answered by the ASGI fast path (see
    # fastpath.fast_post_log) with the same calls; this handler serves the rest and
    # the OpenAPI docs.
    ingest = services_of(request.app).ingest
    media = _media_type(request)
    refusal = ingest.log_media_refusal(media)  # before reading a body it would refuse
    if refusal is not None:
        return _response(refusal)
    keys = request.headers.getall("idempotency-key", [])
    if len(keys) > 1:
        ingest.metrics.refuse("invalid")
        return _problem(400, "Idempotency-Key: send it once", "Idempotency-Key")
    idem = keys[0] if keys else None
    client = request.client.host if request.client else None
    body = await request.body()
    principal = principal_of(request.scope)
    return _response(await ingest.store_one(media, body, idem, principal=principal, client=client))


@post(
    "/logs",
    summary="Ingest a batch of events",
    description=(
        "NDJSON (`application/x-ndjson`) or a JSON array, optionally gzip-encoded. "
        "Every event is validated first: one bad event refuses the whole batch (400, "
        "listing each bad event's index and reason) and nothing is stored. Events whose "
        "`event_id` their user stored within redis.dedupe_seconds (or earlier in the "
        "batch) are not stored again: `duplicates` counts them and `duplicate_indexes` "
        "lists them (both only when there are some)."
    ),
    responses={
        200: ResponseSpec(BatchStored, description="Every event stored in Redis"),
        **_ERRORS,
        **_AUTH_ERRORS,
        # a bad event lists every bad one (BatchRefused); a body that is no batch at all
        # (not JSON, not an array, bad gzip) is a Problem
        400: ResponseSpec(
            BatchProblem,
            description="Batch refused, nothing stored: every bad event listed in `errors`, "
            "or a body that is not a batch (`detail` says why)",
        ),
    },
    **_needs("ingest"),
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
    # Requests with a Content-Length are answered by the ASGI fast path (see
    # fastpath.fast_post_log) with the same calls; this handler serves the rest and
    # the OpenAPI docs.
    ingest = services_of(request.app).ingest
    media = _media_type(request)
    refusal = ingest.batch_media_refusal(media)  # before reading a body it would refuse
    if refusal is not None:
        return _response(refusal)
    encoding = request.headers.get("content-encoding", "identity")
    client = request.client.host if request.client else None
    body = await request.body()
    principal = principal_of(request.scope)
    return _response(
        await ingest.store_batch(media, encoding, body, principal=principal, client=client)
    )


def _param(name: str) -> Any:
    return Parameter(required=False, description=LOGS_QUERY_PARAMETERS[name])


_NDJSON = "application/x-ndjson"


@get(
    "/logs",
    summary="Read one user's events",
    description=(
        "Events from the day files and from Redis (claimed or not), in the order they "
        "were stored, each exactly once even while a drainer moves them. Page with "
        "`next_cursor`: no event skipped or repeated. With `Accept: application/x-ndjson` "
        'the events are streamed one per line, then a last line `{"next_cursor": ...}`.'
    ),
    responses={
        200: ResponseSpec(EventsPage, description="A page of events"),
        400: ResponseSpec(Problem, description="A malformed parameter; `field` names it"),
        503: ResponseSpec(Problem, description="Redis unreachable; retry after `Retry-After` s"),
        **_AUTH_ERRORS,
    },
    **_needs("read"),
)
async def get_logs(
    request: Request[Any, Any, Any],
    user_id: Annotated[str | None, _param("user_id")] = None,
    event: Annotated[list[str] | None, _param("event")] = None,
    since: Annotated[str | None, _param("since")] = None,
    until: Annotated[str | None, _param("until")] = None,
    limit: Annotated[str | None, _param("limit")] = None,
    cursor: Annotated[str | None, _param("cursor")] = None,
    order: Annotated[str | None, _param("order")] = None,
) -> Response[bytes] | Stream:
    services = services_of(request.app)
    ndjson = _NDJSON in request.headers.get("accept", "")
    # NDJSON streams with flat memory; a JSON page is held whole
    q = Query.parse(
        user_id,
        event,
        since,
        until,
        limit,
        cursor,
        order,
        max_limit=MAX_EXPORT_LIMIT if ndjson else MAX_LIMIT,
    )
    srv = services.settings.server
    reader = EventReader(
        services.buffer,
        services.settings.drainer.logs_dir,
        partition_by=srv.partition_by,
        max_future_s=srv.max_future_seconds,
        lock_timeout_s=2 * services.settings.drainer.lease_seconds,
    )
    if ndjson:
        lines = reader.export(q)
        first = await anext(lines)  # a bad cursor or Redis down is still a 400 / 503 here

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in lines:
                yield chunk

        return Stream(body(), media_type=_NDJSON)
    page = await reader.page(q)
    doc = b'{"events":[%s],"next_cursor":%s}' % (
        b",".join(f.raw for f in page.events),
        _encode(page.next_cursor),
    )
    return Response(doc, media_type=MediaType.JSON)


@get("/healthz", summary="Liveness: 200 while the process serves", **_needs("public"))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    summary="Readiness: 200 only while Redis answers",
    responses={
        200: ResponseSpec(Ready, description="Redis answers"),
        503: ResponseSpec(Problem, description="Redis does not answer"),
    },
    **_needs("public"),
)
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    try:
        rtt = await services_of(request.app).buffer.ping()
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
        500: ResponseSpec(
            Problem, description="A key logpipe keeps in Redis holds another type (by hand)"
        ),
        503: ResponseSpec(Problem, description="Redis does not answer"),
        **_AUTH_ERRORS,
    },
    **_needs("read"),
)
async def stats(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request.app)
    metrics = services.metrics
    try:
        doc = await collect(
            services.buffer,
            services.settings.drainer.log_pattern,
            ApiCounts(metrics.accepted, dict(metrics.refused), metrics.started_at),
        )
    except LogpipeError as exc:
        return _error_response(exc)
    return Response(_encode(doc), media_type=MediaType.JSON)


@get(
    "/metrics",
    summary="Prometheus metrics",
    description=(
        "Text exposition format. Redis-wide values are left out while Redis is down. "
        "Needs an admin token unless auth.metrics_public is true."
    ),
    media_type=CONTENT_TYPE,
    responses=_AUTH_ERRORS,
    **_needs("admin"),
)
async def prometheus(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request.app)
    metrics = services.metrics
    shared: dict[str, Any] = {}
    try:
        counters, last = await services.buffer.counters()
    except LogpipeError:
        metrics.redis_errors += 1
    else:
        shared["buffered"] = counters.get("buffered", 0)
        shared["buffered_bytes"] = counters.get("buffered_bytes", 0)
        shared["drained_events"] = counters.get("drained_events", 0)
        done = last_drain_of(last)
        if done is not None and done.at:
            shared["last_drain_at"] = done.at
    return Response(metrics.render(shared), media_type=CONTENT_TYPE)


@post(
    "/drain",
    summary="Drain now",
    description=(
        "Runs one drain pass in the API process (into drainer.logs_dir; a relative "
        "logs_dir is taken from the API's working directory when it starts) and answers "
        "with its summary, as `logpipe drain --once` prints it. One pass runs at a time: "
        "a request that arrives while one runs waits for it and gets its summary. `200` "
        "when the pass met no error, `500` (same body) otherwise. Keys another drainer "
        "holds are left to it and listed in `busy`."
    ),
    status_code=200,
    responses={
        200: ResponseSpec(DrainSummary, description="The pass met no error"),
        500: ResponseSpec(DrainSummary, description="The pass met an error (see `errors`)"),
        **_AUTH_ERRORS,
    },
    **_needs("admin"),
)
async def drain(request: Request[Any, Any, Any]) -> Response[bytes]:
    report = await services_of(request.app).drains.drain()
    return Response(
        _encode(report.as_dict()),
        status_code=200 if report.ok else 500,
        media_type=MediaType.JSON,
    )


def _lifespan(
    settings: Settings,
    metrics: ApiMetrics,
    redis: aioredis.Redis | None,
    front: FrontDoor,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Open the services (and the ``POST /log`` fast path onto them) for the app's life."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if redis is None:
                # two pools: a drain pass's pipelines never queue the write path's calls
                client, drain_client = connect(settings.redis), connect(settings.redis)
                stack.push_async_callback(client.aclose)
                stack.push_async_callback(drain_client.aclose)
            else:
                client = drain_client = redis
            buffer = Buffer(client, settings.redis)
            if buffer.sharded is not None:  # cluster mode: its background counter read
                stack.push_async_callback(buffer.sharded.aclose)
            if redis is None and settings.redis.mode == "standalone":
                # the write path's one call through a lean connection (logpipe_cli/resp.py)
                lean = LeanRedis.from_url(settings.redis.url, settings.redis.timeout_seconds)
                if lean is not None:
                    stack.push_async_callback(lean.aclose)
                    buffer.write_through(lean)
            ingest = Ingest(settings, buffer, metrics)
            drains = DrainRunner(Buffer(drain_client, settings.redis), settings.drainer)
            stack.push_async_callback(drains.aclose)  # before its client closes
            app.state.services = Services(settings, metrics, buffer, ingest, drains)
            router = app.asgi_handler
            app.asgi_handler = front.around(router, ingest)
            try:
                yield
            finally:
                app.asgi_handler = router
                app.state.pop("services", None)

    return lifespan


def route_scopes(handlers: list[HTTPRouteHandler], settings: Settings) -> dict[str, RouteScope]:
    """Each route's path -> the token scope it declares (``/metrics``: ``public`` when
    ``auth.metrics_public``)."""
    scopes: dict[str, RouteScope] = {}
    for handler in handlers:
        scope: RouteScope = handler.opt.get("scope", "admin")
        for path in handler.paths:
            for method in handler.http_methods:
                scopes[f"{method} {path}"] = scope
            # a path two routes share (GET and POST /logs) but for another method: the
            # scope both agree on, else admin
            scopes[path] = scope if scopes.get(path, scope) == scope else "admin"
    if settings.auth.metrics_public:
        scopes["/metrics"] = scopes["GET /metrics"] = "public"
    return scopes


@dataclass(frozen=True)
class FrontDoor:
    """What goes in front of the app: the Host check (``hosts``, if any), then the token
    and CORS gate (``gate``); also without tokens or CORS origins the gate refuses a POST
    from a page on another site (see gate.py). ``light``: no CORS origins, so the
    ``POST /log`` fast path can make the gate's checks itself; ``tokens``: the token
    check, if tokens are configured (the authorizer, the scopes of ``POST /log`` and
    ``POST /logs``)."""

    gate: Callable[[ASGIApp], ASGIApp]
    hosts: HostCheck | None
    light: bool
    tokens: tuple[Authorizer, RouteScope, RouteScope] | None = None

    def around(self, router: ASGIApp, ingest: Ingest) -> ASGIApp:
        """``router`` behind the checks, with the ``POST /log`` fast path onto ``ingest``.

        With no CORS origins, the fast path goes first and makes the Host check, and the
        cross-site check (no tokens) or the token check (tokens) itself, from the one
        pass over the headers it makes anyway (two ASGI layers and two header scans
        fewer per request); a request it would refuse it passes to the checks behind
        it, which answer it as ever. Else (CORS) it goes behind the gate, which grants
        the request's principal and wraps ``send`` for CORS.
        """
        if self.light:
            return fast_post_log(
                self._checks(router),
                ingest,
                hosts=self.hosts,
                cross_site=self.tokens is None,
                tokens=self.tokens,
            )
        return self._checks(fast_post_log(router, ingest))

    def _checks(self, app: ASGIApp) -> ASGIApp:
        app = self.gate(app)
        return app if self.hosts is None else host_guard(app, self.hosts)


def _front_door(
    settings: Settings,
    authorizer: Authorizer,
    handlers: list[HTTPRouteHandler],
    metrics: ApiMetrics,
    allowed_hosts: Iterable[str] | None,
) -> FrontDoor:
    cors = Cors.of(settings.server.cors_origins)
    scopes = route_scopes(handlers, settings)
    return FrontDoor(
        gate=lambda app: gate(app, authorizer, scopes, cors, metrics),
        hosts=None if allowed_hosts is None else HostCheck(allowed_hosts),
        light=cors is None,
        tokens=(
            (
                authorizer,
                scope_needed(scopes, "POST", "/log"),
                scope_needed(scopes, "POST", "/logs"),
            )
            if authorizer.enabled
            else None
        ),
    )


def create_app(
    settings: Settings,
    redis: aioredis.Redis | None = None,
    *,
    allowed_hosts: Iterable[str] | None = None,
) -> Litestar:
    """The API app. Give it a Redis client to share one, or let its lifespan own two
    (one for the write path and probes, one for ``POST /drain``).

    ``allowed_hosts``: answer only requests whose ``Host`` is an IP address, a name of
    one label, a name under ``localhost`` or one of these (``None``: any Host); the
    DNS-rebinding check (:func:`~logpipe_cli.gate.host_guard`) ``serve`` puts in front
    when no token is configured.

    A relative ``drainer.logs_dir`` is resolved here, once, against the working
    directory: ``POST /drain`` writes there even if the process changes directory later.
    """
    logs_dir = os.path.abspath(settings.drainer.logs_dir)
    settings = replace(settings, drainer=replace(settings.drainer, logs_dir=logs_dir))
    metrics = ApiMetrics()
    handlers = [post_log, post_logs, get_logs, healthz, readyz, stats, prometheus, drain]
    front = _front_door(settings, load_authorizer(settings.auth), handlers, metrics, allowed_hosts)
    return Litestar(
        route_handlers=handlers,
        middleware=[DefineMiddleware(_metrics_middleware, metrics=metrics)],
        lifespan=[_lifespan(settings, metrics, redis, front)],
        exception_handlers={
            LogpipeError: _logpipe_error_handler,
            HTTPException: _http_error_handler,
            Exception: _unexpected_error_handler,
        },
        openapi_config=OpenAPIConfig(
            title="logpipe",
            version=__version__,
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="A token from auth.*_tokens (`logpipe token new`); "
                        "needed only when tokens are configured",
                    )
                }
            ),
        ),
        # one limit for every route; the POST /log fast path applies it too
        request_max_body_size=settings.server.max_body_bytes,
        debug=False,
    )
