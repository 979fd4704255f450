"""Requests pipelined behind one in progress are held to a depth: uvicorn queues each
one (a request cycle, its scope and an event, ~2 KB) and reads on after every answer
(and every ``receive()``), each read of 256 KiB bringing thousands more. ``logpipe
serve`` grew from 67 MB to 960 MB in 10 s on 15 MB of ``GET /healthz`` sent pipelined
on one connection (no token needed), answering 48 of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from logpipe_cli.http_guard import MAX_PIPELINED
from tests.unit.test_http_guard_answer import connect

pytestmark = pytest.mark.anyio
GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def answering(gate: asyncio.Event) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await gate.wait()
        body = scope["path"].encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_flood_of_pipelined_requests_closes_the_connection() -> None:
    gate = asyncio.Event()  # the first request is not answered while the flood arrives
    proto, transport = connect(answering(gate))
    for _ in range(4):  # reads of 256 KiB, as a socket gives them
        if transport.closed:
            break
        proto.data_received(GET * (256 * 1024 // len(GET)))
        await asyncio.sleep(0)
    assert transport.closed
    assert len(proto.pipeline) <= MAX_PIPELINED
    gate.set()
    proto.connection_lost(None)


async def test_requests_pipelined_up_to_the_depth_are_all_answered_in_order() -> None:
    gate = asyncio.Event()
    proto, transport = connect(answering(gate))
    paths = [b"/r%d" % i for i in range(MAX_PIPELINED + 1)]  # one served, the rest queued
    proto.data_received(b"".join(GET.replace(b"/healthz", p) for p in paths))
    assert not transport.closed
    assert len(proto.pipeline) == MAX_PIPELINED
    gate.set()
    for _ in range(200):
        if b"".join(transport.writes).count(b"HTTP/1.1 200") == len(paths):
            break
        await asyncio.sleep(0.01)
    out = b"".join(transport.writes)
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in out.split(b"HTTP/1.1 ")[1:]] == paths
    assert not transport.closed
    proto.connection_lost(None)


async def test_the_request_in_progress_writes_nothing_once_the_flood_closed_it() -> None:
    # uvloop raises on a write to a closed transport: the answer under way must not try
    gate = asyncio.Event()
    proto, transport = connect(answering(gate))
    writes_when_closed: list[bytes] = []
    real_write = transport.write

    def write(data: bytes | bytearray | memoryview) -> None:
        if transport.closed:
            writes_when_closed.append(bytes(data))
        real_write(data)

    transport.write = write  # type: ignore[method-assign]
    proto.data_received(GET * (MAX_PIPELINED + 2))
    assert transport.closed
    gate.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert writes_when_closed == []
    proto.connection_lost(None)
