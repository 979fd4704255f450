"""The API's front door, in front of the ``POST /log`` fast path and Litestar's router:
bearer tokens (:mod:`logpipe_cli.auth`) and CORS.

One ASGI layer for every route, so the fast path, which Litestar middleware never sees,
is guarded exactly as the handlers are. Without tokens it still refuses a ``POST`` from a
page on a site that ``cors_origins`` does not allow (see :func:`_cross_site`).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from logpipe_cli.auth import Authorizer, Grant, Refusal, RouteScope
from logpipe_cli.metrics import ApiMetrics

#: what a preflight allows (RFC: Access-Control-Allow-Headers lists request headers)
ALLOW_METHODS = b"GET, POST"
ALLOW_HEADERS = b"Authorization, Content-Type, Content-Encoding"
#: how long a browser may cache a preflight's answer
MAX_AGE_S = 600
#: answer headers a page's script may read (a 503's and a 401's)
EXPOSE_HEADERS = b"Retry-After, WWW-Authenticate"
#: routes not declared (404s, Litestar's own) need an admin token: closed unless said
DEFAULT_SCOPE: RouteScope = "admin"
#: two Authorization headers: which one counts is not defined (RFC 9110 gives the header
#: no list form), so a proxy that checks the first and a gate that took the last would
#: disagree about who is asking; neither is taken
_REPEATED = Refusal(
    401, "send one Authorization header, not several", 'Bearer error="invalid_request"'
)


@dataclass(frozen=True)
class Cors:
    """Which browser origins may call the API."""

    origins: frozenset[bytes]

    @classmethod
    def of(cls, origins: tuple[str, ...]) -> Cors | None:
        return cls(frozenset(o.encode() for o in origins)) if origins else None

    def allows(self, origin: bytes) -> bool:
        return origin in self.origins or b"*" in self.origins


def principal_of(scope: Scope) -> str | None:
    """The principal the gate granted this request to (``None``: anonymous)."""
    state = scope.get("state")
    return state.get("principal") if isinstance(state, dict) else None


def route_scope(scopes: Mapping[str, RouteScope], path: str) -> RouteScope:
    """The scope ``path`` needs: as its route declares, ``read`` for the OpenAPI
    document, :data:`DEFAULT_SCOPE` for anything else."""
    found = scopes.get(path)
    if found is not None:
        return found
    return "read" if path == "/schema" or path.startswith("/schema/") else DEFAULT_SCOPE


def scope_needed(scopes: Mapping[str, RouteScope], method: str, path: str) -> RouteScope:
    """The scope a ``method`` request to ``path`` needs (see :func:`gate`)."""
    return scopes.get(f"{method} {path}") or route_scope(scopes, path)


def gate(
    app: ASGIApp,
    authorizer: Authorizer,
    scopes: Mapping[str, RouteScope],
    cors: Cors | None,
    metrics: ApiMetrics,
) -> ASGIApp:
    """``app`` behind the token check (when ``authorizer.enabled``) and CORS (``cors``).

    ``scopes`` maps each route's ``"METHOD /path"`` (and, for other methods, its path)
    to the scope it declares. A refused request gets
    ``401``/``403`` with ``{"detail": ...}`` and ``WWW-Authenticate``, and is counted in
    the request metrics as the routes' own answers are.
    """
    auth_on = authorizer.enabled
    if not auth_on and cors is None:
        return _cross_site_gate(app, scopes, metrics)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]
        authorization: bytes | None = None
        repeated = False
        origin: bytes | None = None
        preflight = False
        host: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                repeated = authorization is not None
                authorization = value
            elif name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = True
            elif name == b"host":
                host = value
        if (
            not auth_on
            and origin is not None
            and method == "POST"
            and not (cors is not None and cors.allows(origin))
            and not same_origin(origin, host)
        ):
            await _refuse(send, scope, _cross_site(origin), metrics, scopes)
            return
        if cors is not None:
            if origin is not None and cors.allows(origin):
                if preflight and method == "OPTIONS":
                    # the browser asks before a request with Authorization or JSON: answered
                    # here, with no token (browsers never send one on a preflight)
                    await _send(send, 204, b"", _preflight_headers(origin))
                    return
                send = _with_cors(send, origin)
            else:
                # the answer depends on Origin whatever it is: a shared cache that kept
                # the one without CORS headers must not serve it to an allowed page
                send = _with_headers(send, [_VARY])
        if auth_on:
            path = scope["path"]
            needs = scope_needed(scopes, method, path)
            verdict = authorizer.check(authorization, needs)
            if repeated and needs != "public":
                verdict = _REPEATED
            if not isinstance(verdict, Grant):
                await _refuse(send, scope, verdict, metrics, scopes)
                return
            scope.setdefault("state", {})["principal"] = verdict.principal
        await app(scope, receive, send)

    return guarded


def _cross_site_gate(
    app: ASGIApp, scopes: Mapping[str, RouteScope], metrics: ApiMetrics
) -> ASGIApp:
    """:func:`gate` with no tokens and no CORS origins: only the cross-site check, on
    ``POST`` (the two headers it needs found in one pass, nothing else looked at)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST":
            origin: bytes | None = None
            host: bytes | None = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"host":
                    host = value
            if origin is not None and not same_origin(origin, host):
                await _refuse(send, scope, _cross_site(origin), metrics, scopes)
                return
        await app(scope, receive, send)

    return guarded


async def _refuse(
    send: Send, scope: HTTPScope, refusal: Refusal, metrics: ApiMetrics, scopes: Mapping[str, str]
) -> None:
    """Answer ``refusal`` and count it in the request metrics as routes count theirs."""
    start = time.perf_counter()
    body = msgspec.json.encode({"detail": refusal.detail})
    extra = [(b"www-authenticate", refusal.challenge.encode())] if refusal.challenge else []
    await _send(send, refusal.status, body, extra, json=True)
    path = scope["path"]
    route = path if path in scopes else "other"
    metrics.requests.labels(route, scope["method"], str(refusal.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - start)


def same_origin(origin: bytes, host: bytes | None) -> bool:
    """Whether ``Origin`` names this server as the request reached it (its ``Host``):
    a page logpipe served itself (the OpenAPI UI)."""
    if host is None:
        return False
    scheme, sep, rest = origin.partition(b"://")
    return bool(sep) and scheme in (b"http", b"https") and rest.lower() == host.lower()


def _cross_site(origin: bytes) -> Refusal:
    """Without tokens, a browser on any site can POST here: a form, or ``fetch`` in
    ``no-cors`` mode with a body of no declared type, is sent without a preflight (and
    logpipe takes a body without Content-Type as JSON). Browsers say where such a
    request comes from in ``Origin``; one from a page that is not allowed is refused,
    else every web page a developer opens could write events into, or drain, the
    logpipe on their own machine."""
    shown = origin.decode("latin-1")
    return Refusal(
        403,
        f"a request from a page on {shown!r} is refused: with no tokens, only origins in "
        "server.cors_origins may post here",
        "",
    )


def _preflight_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", str(MAX_AGE_S).encode()),
        _VARY,
    ]


_VARY = (b"vary", b"Origin")


def _with_cors(send: Send, origin: bytes) -> Send:
    """``send`` that adds an allowed origin's CORS headers to the answer."""
    return _with_headers(
        send,
        [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSE_HEADERS),
            _VARY,
        ],
    )


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``extra`` headers to the answer."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), *extra]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], json: bool = False
) -> None:
    head = [(b"content-length", str(len(body)).encode()), *headers]
    if json:
        head.insert(0, (b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def host_allowed(host: bytes, allowed: frozenset[bytes]) -> bool:
    """Whether a request's ``Host`` names this API for :func:`host_guard`: an IP address,
    a name of one label (``localhost``, a compose service, a hosts-file alias: no one
    else's DNS answers for it), a name under ``localhost``, or a name in ``allowed``
    (``*``: any). A rebinding attacker needs a DNS name of their own: it has a dot."""
    if b"*" in allowed:
        return True
    # the name without the port: [::1]:8000 -> ::1, localhost:8000 -> localhost
    bracketed = host.startswith(b"[")
    name = (host[1:].partition(b"]") if bracketed else host.partition(b":"))[0].lower()
    if b"." not in name.rstrip(b".") or name.endswith(b".localhost") or name in allowed:
        return bool(name)
    try:
        ipaddress.ip_address(name.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


#: Host values whose verdict :func:`host_guard` remembers (then it starts over), and the
#: longest it remembers (a DNS name is at most 253 bytes, a port adds 6)
_KNOWN_HOSTS = 256
_KNOWN_HOST_BYTES = 300


class HostCheck:
    """:func:`host_allowed` against one ``allowed`` list, its verdict remembered per
    ``Host`` value: parsing an IP address costs ~2 us, more than the rest of a Host
    check, and clients send the same few names again and again."""

    __slots__ = ("_known", "_names")

    def __init__(self, allowed: Iterable[str]) -> None:
        self._names = frozenset(n.lower().encode() for n in allowed)
        self._known: dict[bytes, bool] = {}

    def allows(self, host: bytes) -> bool:
        ok = self._known.get(host)
        if ok is None:
            ok = host_allowed(host, self._names)
            if len(host) <= _KNOWN_HOST_BYTES:
                if len(self._known) >= _KNOWN_HOSTS:
                    self._known.clear()
                self._known[host] = ok
        return ok


def host_guard(app: ASGIApp, allowed: Iterable[str] | HostCheck) -> ASGIApp:
    """``app`` answering only requests whose ``Host`` it recognizes (:func:`host_allowed`);
    ``serve`` puts it in front when no token is configured. A request with no ``Host``
    (HTTP/1.0) passes.

    DNS rebinding: a page on ``http://evil.example:8000`` whose name then resolves to
    127.0.0.1 is, to the browser, the same origin as an API listening there, so it may
    read every answer (``GET /logs`` of any user) and post without a preflight. Its
    requests still say ``Host: evil.example:8000``; an IP address cannot be rebound.
    """
    check = allowed if isinstance(allowed, HostCheck) else HostCheck(allowed)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            host = None
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value
                    break
            if host is not None and not check.allows(host):
                shown = host.decode("latin-1")
                detail = (
                    f"Host {shown!r} is not a name this API answers to without tokens: "
                    "add it to server.allowed_hosts, or configure tokens"
                )
                await _send(send, 421, msgspec.json.encode({"detail": detail}), [], json=True)
                return
        await app(scope, receive, send)

    return guarded
