"""A chunked request's trailer fields (after its last chunk) are held
to the header limit: llhttp hands trailers to the same callbacks as headers, httptools
keeps an unfinished one in memory (joined anew at each read) and uvicorn appends each
to the request's header list, but neither the header count (headers are done by then)
nor the body budget (no body bytes) saw them. ``logpipe serve`` grew from 67 MB to
480 MB on 400 MB of trailers sent in 2 s, answered or not, token or not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.test_http_guard_answer import connect

pytestmark = pytest.mark.anyio
HEAD = (
    b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
LIMIT = 32 * 1024  # HttpLimits().max_header_bytes
READ = 64 * 1024


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers before reading the body, as the token check does."""
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def trailers(one_line: bool) -> bytes:
    if one_line:  # one trailer never finished: it stays in httptools' buffer
        return b"X-T: " + b"a" * (64 * READ)
    return (b"X-T: " + b"a" * 1000 + b"\r\n") * (4 * READ // 1000)


async def feed_until_closed(proto: Any, transport: Any, data: bytes) -> int:
    """Feed ``data`` a read of ``READ`` bytes at a time until the connection closes;
    how many bytes were fed."""
    fed = 0
    while fed < len(data) and not transport.closed:
        proto.data_received(data[fed : fed + READ])
        fed += READ
        await asyncio.sleep(0)
    return fed


@pytest.mark.parametrize("one_line", [True, False], ids=["one-trailer", "many-trailers"])
async def test_trailers_past_the_header_limit_close_the_connection(one_line: bool) -> None:
    proto, transport = connect(ok)
    proto.data_received(HEAD + b"5\r\nhello\r\n0\r\n")
    fed = await feed_until_closed(proto, transport, trailers(one_line))
    assert transport.closed
    assert fed <= LIMIT + 2 * READ, fed
    assert b"431" in b"".join(transport.writes).split(b"\r\n", 1)[0]
    # what the request's header list took is bounded too
    assert sum(len(n) + len(v) for n, v in proto.headers) <= LIMIT + READ
    proto.connection_lost(None)


async def test_trailers_after_an_early_answer_close_the_connection_without_another() -> None:
    proto, transport = connect(refuse)
    proto.data_received(HEAD + b"5\r\nhello\r\n")
    for _ in range(100):
        if b"401" in b"".join(transport.writes):
            break
        await asyncio.sleep(0.01)
    proto.data_received(b"0\r\n")
    fed = await feed_until_closed(proto, transport, trailers(False))
    assert transport.closed
    assert fed <= LIMIT + 2 * READ, fed
    assert b"".join(transport.writes).count(b"HTTP/1.1 ") == 1  # the 401 alone
    proto.connection_lost(None)


async def test_small_trailers_and_many_small_chunks_are_served() -> None:
    proto, transport = connect(ok)
    body = b'{"user_id":"u1","event":"e","timestamp":1}\n' * 2000
    # one chunk per 7 bytes: framing larger than the header limit, and ordinary trailers
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in pieces)
    assert len(chunks) - len(body) > LIMIT
    request = HEAD + chunks + b"0\r\nX-Checksum: abc\r\nX-Other: " + b"b" * 1000 + b"\r\n\r\n"
    for i in range(0, len(request), 4096):
        proto.data_received(request[i : i + 4096])
        await asyncio.sleep(0)
    for _ in range(100):
        if b"".join(transport.writes).endswith(body):
            break
        await asyncio.sleep(0.01)
    out = b"".join(transport.writes)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    assert out.endswith(body)
    assert not transport.closed
    proto.connection_lost(None)
