"""The guarded protocol closes a connection left idle ``keepalive_s`` after its last
answer, as uvicorn does, with one timer that follows the deadline rather than a new
timer per answer: a connection that keeps asking is never closed in between, one that
stops is closed once its last answer is ``keepalive_s`` old."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from logpipe_cli.http_guard import ConnectionGuard, GuardedHttpToolsProtocol, HttpLimits
from tests.unit.test_http_guard_answer import REQUEST, Transport, two_messages

pytestmark = pytest.mark.anyio
KEEPALIVE_S = 0.3


class Clocked(Transport):
    """Notes the loop time of its close."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_at: float | None = None
        self.gone = asyncio.Event()

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = asyncio.get_running_loop().time()
        super().close()
        self.gone.set()


async def test_idle_connections_close_keepalive_after_their_last_answer() -> None:
    loop = asyncio.get_running_loop()
    config = Config(app=two_messages, lifespan="off", access_log=False, proxy_headers=False)
    config.load()
    state = ServerState()
    proto = GuardedHttpToolsProtocol(
        config, state, {}, loop, guard=ConnectionGuard(HttpLimits(keepalive_s=KEEPALIVE_S))
    )
    transport = Clocked()
    proto.connection_made(transport)
    answered: list[float] = []
    # requests each under keepalive_s after the last answer, for several keepalive_s:
    # the timer set after the first answer must move on, not close the connection
    while not answered or answered[-1] - answered[0] < 3 * KEEPALIVE_S:
        proto.data_received(REQUEST)
        while len(b"".join(transport.writes).split(b"HTTP/1.1 200")) <= len(answered) + 1:
            transport.wrote.clear()
            await asyncio.wait_for(transport.wrote.wait(), 5)
        answered.append(loop.time())
        assert not transport.closed
        await asyncio.sleep(KEEPALIVE_S / 3)  # the client's pause: time must pass here
    await asyncio.wait_for(transport.gone.wait(), 10 * KEEPALIVE_S)
    assert transport.closed_at is not None
    # closed once the last answer was keepalive_s old (to libuv's millisecond), not before
    assert transport.closed_at - answered[-1] >= KEEPALIVE_S - 0.002
    assert state.total_requests == len(answered)
    proto.connection_lost(None)


async def test_a_request_in_progress_at_the_deadline_is_not_closed() -> None:
    loop = asyncio.get_running_loop()
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await two_messages(scope, receive, send)

    config = Config(app=slow, lifespan="off", access_log=False, proxy_headers=False)
    config.load()
    proto = GuardedHttpToolsProtocol(
        config,
        ServerState(),
        {},
        loop,
        guard=ConnectionGuard(HttpLimits(keepalive_s=KEEPALIVE_S)),
    )
    transport = Clocked()
    proto.connection_made(transport)
    proto.data_received(REQUEST)
    await asyncio.wait_for(transport.wrote.wait(), 5)
    proto.data_received(REQUEST.replace(b"/log", b"/slow"))
    # past the first answer's deadline, with the second request still being served
    await asyncio.sleep(2 * KEEPALIVE_S)
    assert not transport.closed
    transport.wrote.clear()
    release.set()
    await asyncio.wait_for(transport.wrote.wait(), 5)
    answered = loop.time()
    await asyncio.wait_for(transport.gone.wait(), 10 * KEEPALIVE_S)
    assert transport.closed_at is not None
    assert transport.closed_at - answered >= KEEPALIVE_S - 0.002
    proto.connection_lost(None)
