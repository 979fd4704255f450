"""``POST /log`` and ``POST /logs`` served below ASGI (``http_guard``'s wire path onto
``fastpath.PostDoor``) answer byte for byte as the same requests served through uvicorn's
ASGI cycle, store the same lines and count the same metrics; whatever the door does not
admit goes the ASGI way.

Each shape is sent to ``serve``'s own app (Host check, proxy-headers layer, the fast
path) behind ``serve``'s protocol on an in-memory connection, once with the wire path
and once with it switched off, against a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from uvicorn.config import Config
from uvicorn.server import ServerState

from logpipe_cli import http_guard
from logpipe_cli.fastpath import PostDoor
from logpipe_cli.http_guard import ConnectionGuard, GuardedHttpToolsProtocol, HttpLimits
from logpipe_cli.server import served_app
from logpipe_cli.settings import Settings
from tests.conftest import MakeSettings
from tests.unit.test_http_guard_answer import Transport

pytestmark = pytest.mark.anyio
NOW = int(time.time())


def event(user: str = "u1", **extra: Any) -> bytes:
    doc = {"user_id": user, "event": "clicked", "timestamp": NOW, **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: 127.0.0.1:8000"]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    if not any(h.lower().startswith("content-type") for h in headers):
        head.append("Content-Type: application/json")
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


CHUNKED = b"%x\r\n%b\r\n0\r\n\r\n" % (len(event()), event())
NDJSON = "Content-Type: application/x-ndjson"
BATCH = b"\n".join(event(f"u{i}") for i in range(5))

#: shape -> (requests sent on one connection, in one read each; whether the wire path
#: serves the first)
SHAPES: dict[str, tuple[list[bytes], bool]] = {
    "one event": ([post("/log", event())], True),
    "three kept alive": ([post("/log", event(f"u{i}")) for i in range(3)], True),
    "Connection: close": ([post("/log", event(), "Connection: close")], True),
    "HTTP/1.0": ([post("/log", event(), version="1.0")], True),
    "bad JSON": ([post("/log", b'{"user_id":')], True),
    "a field missing": ([post("/log", b'{"user_id":"u1","timestamp":1}')], True),
    "bad user_id": ([post("/log", event("../etc"))], True),
    "wrong media type": ([post("/log", event(), "Content-Type: text/plain")], True),
    "media type with charset": (
        [post("/log", event(), "Content-Type: application/json; charset=utf-8")],
        True,
    ),
    "an Idempotency-Key, twice": (
        [post("/log", event(), "Idempotency-Key: k-1")] * 2,
        True,
    ),
    "event_id duplicate": ([post("/log", event(event_id="e-1"))] * 2, True),
    "batch NDJSON": ([post("/logs", BATCH, NDJSON)], True),
    "batch JSON array": ([post("/logs", b"[" + BATCH.replace(b"\n", b",") + b"]")], True),
    "batch gzip": (
        [post("/logs", gzip.compress(BATCH), NDJSON, "Content-Encoding: gzip")],
        True,
    ),
    "batch with a bad line": ([post("/logs", BATCH + b"\nnope", NDJSON)], True),
    "too large": ([post("/log", event(), "Content-Length: 99999999")[:200]], False),
    "chunked": ([post("/log", CHUNKED, "Transfer-Encoding: chunked")], False),
    "a query string": ([post("/log?x=1", event())], False),
    "X-Forwarded-For": ([post("/log", event(), "X-Forwarded-For: 10.0.0.9")], False),
    "Expect: 100-continue": ([post("/log", event(), "Expect: 100-continue")], False),
    "another Host": ([post("/log", event()).replace(b"127.0.0.1:8000", b"evil.example")], False),
    "cross-site": ([post("/log", event(), "Origin: https://evil.example")], False),
    "two Content-Types": (
        [post("/log", event(), "Content-Type: application/json", "Content-Type: text/plain")],
        False,
    ),
    "GET /logs": ([b"GET /logs HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"], False),
    # 429 with Retry-After, once the bucket of one event is spent
    "over the rate limit": ([post("/log", event(f"u{i}")) for i in range(3)], True),
    "a batch over the rate limit's burst": ([post("/logs", BATCH, NDJSON)], True),
}
#: settings of a shape, besides the test's Redis
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "over the rate limit": {"limits": {"events_per_second": 0.001, "burst": 1}},
    "a batch over the rate limit's burst": {"limits": {"events_per_second": 0.001, "burst": 2}},
}


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Any]:
    """``serve``'s app through its lifespan's startup (and its shutdown after)."""
    app: Any = served_app(settings)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    up = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await queue.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            up.set()

    await queue.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan"}, receive, send))
    await asyncio.wait_for(up.wait(), 10)
    try:
        yield app
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await life


def connect(
    app: Any, limits: HttpLimits | None = None
) -> tuple[GuardedHttpToolsProtocol, Transport, ServerState]:
    # as serve runs it: uvicorn's proxy-headers layer in front
    config = Config(app=app, lifespan="off", access_log=False, server_header=False,
                    date_header=False)  # fmt: skip
    config.load()
    state = ServerState()
    proto = GuardedHttpToolsProtocol(
        config, state, {}, asyncio.get_running_loop(),
        guard=ConnectionGuard(limits or HttpLimits()),
    )  # fmt: skip
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport, state


async def exchange(app: Any, requests: list[bytes]) -> tuple[list[bytes], bool]:
    """Each request in one read, the next once the last is answered: the answers and
    whether the connection was closed."""
    proto, transport, state = connect(app)
    answers: list[bytes] = []
    for request in requests:
        before = len(transport.writes)
        proto.data_received(request)
        while len(transport.writes) == before and not transport.closed:
            transport.wrote.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transport.wrote.wait(), 0.5)
            if not state.tasks and len(transport.writes) == before:
                break  # nothing in progress: no answer is coming (a refused connection)
        answers.append(b"".join(transport.writes[before:]))
        if transport.closed:
            break
    if state.tasks:
        await asyncio.wait(set(state.tasks), timeout=5)
    proto.connection_lost(None)
    return answers, transport.closed


def stored(store: redis.Redis) -> dict[Any, Any]:
    return {k: store.lrange(k, 0, -1) for k in sorted(store.keys("logs:*"))}


def metrics(app: Any) -> dict[str, float]:
    text = app.state.services.metrics.render({}).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("logpipe_http_requests_total", "logpipe_events_"))
        and not line.startswith("#")
    }


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the wire path served (PostDoor.serve's calls)."""
    calls: list[str] = []
    original = PostDoor.serve

    async def counting(self: PostDoor, admitted: Any, body: bytes, client: str | None) -> Any:
        calls.append(admitted[0])
        return await original(self, admitted, body, client)

    monkeypatch.setattr(PostDoor, "serve", counting)
    return calls


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_the_wire_path_answers_as_the_asgi_cycle(
    shape: str,
    settings_for: MakeSettings,
    store: redis.Redis,
    served: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests, wire = SHAPES[shape]
    settings = settings_for(**SETTINGS.get(shape, {}))
    with monkeypatch.context() as patch:
        patch.setattr(http_guard, "_WIRE_PATHS", frozenset())
        async with started(settings) as app:
            slow = await exchange(app, requests)
            slow_stored, slow_metrics = stored(store), metrics(app)
    assert served == []
    store.flushdb()
    async with started(settings) as app:
        fast = await exchange(app, requests)
        fast_stored, fast_metrics = stored(store), metrics(app)
    assert bool(served) == wire, served
    assert fast == slow
    assert all(fast[0]), fast  # every request answered
    assert fast_stored == slow_stored
    assert fast_metrics == slow_metrics


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 5 s: {what}")


async def test_requests_pipelined_behind_a_wire_request_are_answered_in_order(
    settings_for: MakeSettings, store: redis.Redis, served: list[str]
) -> None:
    # all in one read: the first is served below ASGI, the others queue behind it as
    # ASGI cycles (a wire request is never started while another is in progress)
    requests = [post("/log", event(f"u{i}")) for i in range(4)]
    requests.insert(2, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n")
    async with started(settings_for()) as app:
        proto, transport, _ = connect(app)
        proto.data_received(b"".join(requests))
        await wait_for(lambda: b"".join(transport.writes).count(b"HTTP/1.1 200") == 5, "5 answers")
        proto.connection_lost(None)
    out = b"".join(transport.writes)
    bodies = [a.split(b"\r\n\r\n", 1)[1] for a in out.split(b"HTTP/1.1 ")[1:]]
    assert [b'"key"' in b for b in bodies] == [True, True, False, True, True]
    assert served == ["/log"]
    users = sorted(k.split(b":")[1] for k in store.keys(b"logs:*") if isinstance(k, bytes))
    assert users == [b"user_u0", b"user_u1", b"user_u2", b"user_u3"]


async def test_a_body_in_several_reads_is_served_whole(
    settings_for: MakeSettings, store: redis.Redis, served: list[str]
) -> None:
    request = post("/logs", BATCH, NDJSON)
    async with started(settings_for()) as app:
        proto, transport, _ = connect(app)
        for i in range(0, len(request), 7):  # headers and body cut everywhere
            proto.data_received(request[i : i + 7])
            await asyncio.sleep(0)
        await wait_for(lambda: transport.writes, "an answer")
        proto.connection_lost(None)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    assert served == ["/logs"]
    assert len(store.keys("logs:*")) == 5


async def test_a_client_gone_while_its_event_is_stored_is_sent_nothing(
    settings_for: MakeSettings, store: redis.Redis, served: list[str]
) -> None:
    async with started(settings_for()) as app:
        proto, transport, state = connect(app)
        proto.data_received(post("/log", event()))
        assert state.tasks  # in progress: its flush is on its way to Redis
        proto.connection_lost(None)
        await asyncio.wait(set(state.tasks), timeout=5)
        counted = metrics(app)
    assert counted['logpipe_http_requests_total{method="POST",route="/log",status="200"}'] == 1
    assert transport.writes == []
    assert served == ["/log"]
    assert store.llen(store.keys("logs:*")[0]) == 1  # a 200 it never heard of, as over ASGI


async def test_a_server_shutting_down_answers_then_closes(
    settings_for: MakeSettings, served: list[str]
) -> None:
    async with started(settings_for()) as app:
        proto, transport, state = connect(app)
        proto.data_received(post("/log", event()))
        proto.shutdown()  # uvicorn's, on SIGTERM: the request in progress is finished
        assert not transport.closed
        await asyncio.wait(set(state.tasks), timeout=5)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in transport.writes[0]
    assert transport.closed
    assert served == ["/log"]


async def test_a_body_that_stops_coming_is_answered_408_and_nothing_stored(
    settings_for: MakeSettings, store: redis.Redis, served: list[str]
) -> None:
    async with started(settings_for()) as app:
        proto, transport, _ = connect(app, HttpLimits(body_timeout_s=0.2))
        proto.data_received(post("/log", event())[:-5])
        await wait_for(lambda: transport.closed, "the connection closed")
        proto.connection_lost(None)
    assert transport.writes[0].startswith(b"HTTP/1.1 408 ")
    assert served == []
    assert store.keys("logs:*") == []


async def test_a_client_not_reading_its_answers_stops_the_reading(
    settings_for: MakeSettings, store: redis.Redis, served: list[str]
) -> None:
    # the transport's buffer over its high-water mark after the first answer: the next
    # request must wait (queued, reading paused) until the client reads, not be answered
    # into a buffer that grows without bound
    async with started(settings_for()) as app:
        proto, transport, state = connect(app)
        real_write = transport.write

        def write(data: bytes | bytearray | memoryview) -> None:
            real_write(data)
            proto.pause_writing()  # as asyncio's transports call it

        transport.write = write  # type: ignore[method-assign]
        proto.data_received(post("/log", event("u1")))
        await wait_for(lambda: transport.writes, "the first answer")
        proto.data_received(post("/log", event("u2")))
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert len(transport.writes) == 1  # the second waits for the client to read
        transport.write = real_write  # type: ignore[method-assign]
        proto.resume_writing()
        await wait_for(lambda: len(transport.writes) == 2, "the second answer")
        proto.connection_lost(None)
        if state.tasks:
            await asyncio.wait(set(state.tasks), timeout=5)
    assert all(w.startswith(b"HTTP/1.1 200 ") for w in transport.writes)
    assert len(store.keys("logs:*")) == 2


@pytest.mark.parametrize("how", ["the body timeout", "the client leaving"])
async def test_a_request_whose_body_never_completes_is_counted_as_over_asgi(
    how: str,
    settings_for: MakeSettings,
    store: redis.Redis,
    served: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Half a body, then the body timeout or the client gone: the wire path counts the
    request in the same series as the ASGI cycle (the client left: 499), never not at all."""

    async def half_a_request(app: Any) -> dict[str, float]:
        proto, transport, state = connect(app, HttpLimits(body_timeout_s=0.2))
        proto.data_received(post("/log", event())[:-5])
        if how == "the body timeout":
            await wait_for(lambda: transport.closed, "the connection closed")
        await asyncio.sleep(0)
        proto.connection_lost(None)
        if state.tasks:
            await asyncio.wait(set(state.tasks), timeout=5)
        return {k: v for k, v in metrics(app).items() if "http_requests" in k}

    with monkeypatch.context() as patch:
        patch.setattr(http_guard, "_WIRE_PATHS", frozenset())
        async with started(settings_for()) as app:
            slow = await half_a_request(app)
    async with started(settings_for()) as app:
        fast = await half_a_request(app)
    assert slow == {'logpipe_http_requests_total{method="POST",route="/log",status="499"}': 1.0}
    assert fast == slow
    assert served == []
    assert store.keys("logs:*") == []
