"""The write path's own Python, per request, with no socket and no Redis: what logpipe
adds above the HTTP server and the round trips, measured in-process so that a loaded
machine hardly moves it (best of ``--repeat`` runs).

    python -m bench.ingest_cpu [--requests 20000] [--concurrency 32] [--repeat 5] [--only S]

``POST /log`` requests go through the same ASGI app ``serve`` runs (gate off, the fast
path, Ingest, the group committer, Buffer.store and the lean connection's packing) with
``concurrency`` requests in flight, as wrk's connections keep them; the lean connection
is replaced by a stand-in that answers each script call on the next loop iteration, as
if Redis answered at once. ``POST /logs`` bodies of 100 events (over 1,000 users) go the
same way through the Litestar route. ``POST /log, on the wire`` goes further out: the
bytes wrk sends are fed to ``serve``'s own protocol (http_guard's, over uvicorn's
httptools parser) on ``concurrency`` in-memory connections and reach ``serve``'s app
(uvicorn's proxy-headers layer, Litestar's call, the fast path with the Host and
cross-site checks); each answer is
taken from the connection's transport: everything but the syscalls and the event loop's
polling. ``trivial ASGI app, on the wire`` is the same for ``bench/trivial_app.py``
behind uvicorn's own httptools protocol, as ``bench.run`` serves it: the floor.
Printed: microseconds per request and per event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench import trivial_app
from logpipe_cli.api import create_app
from logpipe_cli.http_guard import HttpLimits, protocol_factory
from logpipe_cli.resp import LeanRedis, pack
from logpipe_cli.server import checked_hosts, served_app
from logpipe_cli.settings import load_settings


class _Instant(LeanRedis):
    """Packs every call as the lean connection does, sends nothing, answers "stored"."""

    async def evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        pack(b"EVALSHA", "0" * 40, len(keys), *keys, *args)
        await asyncio.sleep(0)
        return 1


def _scope(path: str, body_len: int, ctype: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", ctype),
            (b"content-length", str(body_len).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


@contextlib.asynccontextmanager
async def _started(app: Any) -> AsyncIterator[None]:
    """``app`` (logpipe's Litestar app) through its lifespan's startup, its writes sent
    to an :class:`_Instant` stand-in, and through its shutdown on the way out."""
    lifespan_q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def lrecv() -> dict[str, Any]:
        return await lifespan_q.get()

    async def lsend(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await lifespan_q.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app({"type": "lifespan"}, lrecv, lsend))
    await started.wait()
    app.state.services.buffer.write_through(_Instant(timeout_s=1.0))
    try:
        yield
    finally:
        await lifespan_q.put({"type": "lifespan.shutdown"})
        await life


async def _run(path: str, bodies: list[bytes], ctype: bytes, requests: int, conc: int) -> float:
    settings = load_settings({"redis": {"url": "redis://127.0.0.1:1"}}, {})
    app = create_app(settings)
    sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    scopes = [_scope(path, len(b), ctype) for b in bodies]

    async def client(offset: int, n: int) -> None:
        for i in range(n):
            k = (offset + i) % len(bodies)
            message = {"type": "http.request", "body": bodies[k], "more_body": False}

            async def receive(m: dict[str, Any] = message) -> dict[str, Any]:
                return m

            await app(dict(scopes[k]), receive, send)  # type: ignore[arg-type]

    per = requests // conc
    async with _started(app):
        start = time.process_time()
        await asyncio.gather(*(client(c * 7, per) for c in range(conc)))
        cpu = time.process_time() - start
    bad = [s for s in sent if s != 200]
    if bad:
        raise SystemExit(f"{len(bad)} answers were not 200: {bad[:5]}")
    return cpu / (per * conc) * 1e6


class _Wire:
    """A connection's transport in memory: each write is one whole answer (http_guard
    sends head and body together), handed to whoever waits for it."""

    def __init__(self, port: int) -> None:
        self._extra = {"peername": ("127.0.0.1", port), "sockname": ("127.0.0.1", 8000)}
        self.answer: asyncio.Future[bytes] | None = None
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _run_wire(bodies: list[bytes], requests: int, conc: int, trivial: bool) -> float:
    """``POST /log`` as bytes into ``serve``'s protocol and app (see the module's doc), or
    into uvicorn's own protocol and the trivial app as ``bench.run`` serves it."""
    settings = load_settings({"redis": {"url": "redis://127.0.0.1:1"}}, {})
    protocol: Any
    if trivial:
        app: Any = trivial_app.app
        protocol = HttpToolsProtocol
    else:
        # served_app's app, Host check included (served_app says when)
        assert checked_hosts(settings) is not None, "no Host check?"
        app = served_app(settings)
        protocol = protocol_factory(HttpLimits())
    config = Config(
        app=app,
        http=protocol,  # as serve passes it
        lifespan="off",
        access_log=False,
        server_header=False,
        date_header=False,
    )
    state = ServerState()
    wire = [
        (
            b"POST /log HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(b), b)
        )
        for b in bodies
    ]
    loop = asyncio.get_running_loop()
    bad: list[bytes] = []

    async def client(offset: int, n: int) -> None:
        transport = _Wire(50000 + offset)
        proto = protocol(config, state, {}, loop)
        proto.connection_made(transport)
        for i in range(n):
            transport.answer = loop.create_future()
            proto.data_received(wire[(offset + i) % len(wire)])
            answer = await transport.answer
            if transport.closed or not answer.startswith(b"HTTP/1.1 200 "):
                bad.append(answer)
        proto.connection_lost(None)

    per = requests // conc
    async with contextlib.nullcontext() if trivial else _started(app):
        start = time.process_time()
        await asyncio.gather(*(client(c * 7, per) for c in range(conc)))
        cpu = time.process_time() - start
    if bad:
        raise SystemExit(f"{len(bad)} answers were not 200: {bad[:2]}")
    return cpu / (per * conc) * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", help="run only the shapes whose name contains this")
    args = p.parse_args()
    ts = int(time.time())
    singles = [
        json.dumps(
            {"user_id": f"user_{u:03d}", "event": "visited", "timestamp": ts},
            separators=(",", ":"),
        ).encode()
        for u in range(1000)
    ]
    with_ids = [
        json.dumps(
            {"user_id": f"user_{u:03d}", "event": "visited", "timestamp": ts, "event_id": f"r-{u}"},
            separators=(",", ":"),
        ).encode()
        for u in range(1000)
    ]
    with_seq = [b.replace(b'"event_id"', b'"seq"') for b in with_ids]  # as bench.run's ids
    batches = [
        b"\n".join(singles[(b * 100 + i * 37) % 1000] for i in range(100)) for b in range(50)
    ]
    shapes = [
        ("trivial ASGI app, on the wire", "trivial", singles, b"", args.requests, 1),
        ("POST /log, on the wire", "wire", singles, b"application/json", args.requests, 1),
        ("POST /log", "/log", singles, b"application/json", args.requests, 1),
        ("POST /log, a seq field", "/log", with_seq, b"application/json", args.requests, 1),
        ("POST /log, an event_id", "/log", with_ids, b"application/json", args.requests, 1),
        ("POST /logs x100", "/logs", batches, b"application/x-ndjson", args.requests // 20, 100),
    ]
    for name, path, bodies, ctype, n, events in shapes:
        if args.only and args.only not in name:
            continue
        if path in ("wire", "trivial"):
            runs = [
                uvloop.run(_run_wire(bodies, n, args.concurrency, path == "trivial"))
                for _ in range(args.repeat)
            ]
        else:
            runs = [
                uvloop.run(_run(path, bodies, ctype, n, args.concurrency))
                for _ in range(args.repeat)
            ]
        best = min(runs)
        per_event = best / events
        print(f"{name}: {best:.1f} us/request, {per_event:.2f} us/event (best of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
