"""``whole_body`` (the ``POST /log`` fast path's body, taken without ``receive()``) gives
the bytes ``receive()`` would give, and only when it would give them in one message:
a body still arriving, a disconnected client or an ``Expect: 100-continue`` (whose
interim answer ``receive()`` writes) are left to ``receive()``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from logpipe_cli.http_guard import (
    whole_body,
)
from tests.unit.test_http_guard_answer import REQUEST, connect, serve

pytestmark = pytest.mark.anyio
BODY = b'{"user_id":"u1","event":"e","timestamp":1}'
POST = b"POST /log HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY)

seen: list[tuple[bytes | None, bytes]] = []


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 with the body as read: by ``whole_body`` if it can, else ``receive``."""
    taken = whole_body(receive)
    body = taken
    if body is None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
    seen.append((taken, body))
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_a_body_in_one_read_is_taken_whole_request_after_request() -> None:
    seen.clear()
    writes, closed, answered = await serve(echo, [POST + BODY] * 3)
    assert [s[0] for s in seen] == [BODY] * 3
    assert all(w.endswith(b"\r\n\r\n" + BODY) for w in writes)
    assert not closed
    assert answered == 3


async def test_a_body_still_arriving_and_100_continue_are_left_to_receive() -> None:
    seen.clear()
    expect = REQUEST.replace(b"Host: x", b"Host: x\r\nExpect: 100-continue")
    writes, _, _ = await serve(echo, [expect])
    assert seen == [(None, b"{}")]
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"

    # the body in two reads: the request's task starts with half of it
    seen.clear()
    proto, transport = connect(echo)
    proto.data_received(POST + BODY[:10])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    proto.data_received(BODY[10:])
    for _ in range(100):
        if transport.writes:
            break
        await asyncio.sleep(0.01)
    assert seen == [(None, BODY)]
    assert transport.writes[-1].endswith(BODY)
    proto.connection_lost(None)


async def test_not_for_a_receive_of_anything_else() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("not called")

    assert whole_body(receive) is None


def test_not_for_a_request_cycle_without_the_state_it_reads() -> None:
    # a uvicorn whose request cycle names its state otherwise: receive() as usual, and
    # nothing touched (not an AttributeError in every request)
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    bare = RequestResponseCycle.__new__(RequestResponseCycle)  # none of its attributes
    assert whole_body(bare.receive) is None
