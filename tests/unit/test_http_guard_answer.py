"""``send_json_200`` (the ``POST /log`` fast path's answer in one write) puts on the wire
exactly what uvicorn's ``send`` writes for the same answer sent as two ASGI messages, and
leaves the connection in the same state: kept alive, or closed when the request asked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from logpipe_cli.http_guard import (
    ConnectionGuard,
    GuardedHttpToolsProtocol,
    HttpLimits,
    send_json_200,
)

pytestmark = pytest.mark.anyio
BODY = b'{"stored":true,"key":"logs:user_u1:20000"}'


async def two_messages(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY, "more_body": False})


taken: list[bool] = []


async def at_once(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    taken.append(send_json_200(send, BODY))
    if not taken[-1]:
        await two_messages_send(send)


async def two_messages_send(send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY, "more_body": False})


async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A layer that wraps ``send`` (as the gate does for CORS): no answer at once."""

    async def passing(message: Any) -> None:
        await send(message)

    await at_once(scope, receive, passing)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.wrote = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.wrote.set()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(
    app: Any, state: ServerState | None = None
) -> tuple[GuardedHttpToolsProtocol, Transport]:
    """``app`` behind the guarded protocol (default limits) on a fresh in-memory
    connection (call from the running loop)."""
    config = Config(app=app, lifespan="off", access_log=False, proxy_headers=False)
    config.load()
    proto = GuardedHttpToolsProtocol(
        config,
        state or ServerState(),
        {},
        asyncio.get_running_loop(),
        guard=ConnectionGuard(HttpLimits()),
    )
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport


async def serve(app: Any, requests: list[bytes]) -> tuple[list[bytes], bool, int]:
    """What ``app`` behind the guarded protocol writes for ``requests`` (one at a time),
    whether the connection was closed, and the responses the protocol saw complete."""
    state = ServerState()
    proto, transport = connect(app, state)
    for n, request in enumerate(requests, 1):
        proto.data_received(request)
        # (an interim 100 Continue may come first)
        while b"".join(transport.writes).count(b"HTTP/1.1 200") < n:
            transport.wrote.clear()
            await asyncio.wait_for(transport.wrote.wait(), 5)
    if state.tasks:  # the last request's task, past its answer
        await asyncio.wait(set(state.tasks), timeout=5)
    closed = transport.closed
    assert (proto._idle_until is None) == closed  # idle, or closed
    proto.connection_lost(None)
    return transport.writes, closed, state.total_requests


REQUEST = b"POST /log HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
SHAPES = {
    "kept alive": [REQUEST, REQUEST, REQUEST],
    "connection close": [REQUEST, REQUEST.replace(b"Host: x", b"Host: x\r\nConnection: close")],
    "HTTP/1.0": [REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0")],
    "100-continue": [REQUEST.replace(b"Host: x", b"Host: x\r\nExpect: 100-continue")],
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_the_answer_at_once_is_the_two_messages_answer(shape: str) -> None:
    taken.clear()
    slow = await serve(two_messages, SHAPES[shape])
    fast = await serve(at_once, SHAPES[shape])
    assert taken
    assert all(taken)
    assert b"".join(fast[0]) == b"".join(slow[0])
    assert fast[1:] == slow[1:]
    # one write per answer (an interim 100 Continue aside)
    assert len([w for w in fast[0] if w.startswith(b"HTTP/1.1 200")]) == len(SHAPES[shape])


async def test_a_wrapped_send_gets_the_two_messages() -> None:
    taken.clear()
    slow = await serve(two_messages, SHAPES["kept alive"])
    fast = await serve(wrapped, SHAPES["kept alive"])
    assert taken == [False, False, False]
    assert fast == slow


async def test_not_for_a_send_of_anything_else() -> None:
    async def send(message: Any) -> None:
        raise AssertionError("not called")

    assert not send_json_200(send, BODY)
