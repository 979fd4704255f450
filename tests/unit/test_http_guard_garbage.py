"""Serving a request through the guarded protocol leaves no reference cycle behind.

A cycle per request is freed only by the garbage collector, whose collections then run
every few hundred requests and grow with the heap: issue 12's bench saw POST /log's p99
go from ~6 ms to 50-80 ms when each answer's head holder and its request cycle referred
to each other. Here requests go through the real protocol on a stand-in transport, with
the collector off, and what it finds afterwards is counted.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from tests.unit.test_http_guard_answer import connect

pytestmark = pytest.mark.anyio
BODY = b'{"stored":true}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def test_requests_leave_no_garbage_cycles() -> None:
    proto, transport = connect(app)
    request = b"POST /log HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"

    async def serve(n: int) -> None:
        for _ in range(n):
            transport.wrote.clear()
            proto.data_received(request)
            await transport.wrote.wait()
            await asyncio.sleep(0)  # the cycle's task ends

    await serve(5)  # warm: whatever is made once per connection or process
    gc.collect()
    gc.disable()
    try:
        await serve(200)
        found = gc.collect()
    finally:
        gc.enable()
    # each answer one write, head and body together
    assert transport.writes[-1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[-1].endswith(b"\r\n\r\n" + BODY)
    assert len(transport.writes) == 205
    assert found < 50, f"{found} objects in reference cycles after 200 requests"
    proto.connection_lost(None)
