"""The number of header (and trailer) fields is bounded as well as their bytes: each
field costs the process ~120 bytes (uvicorn's tuple of two bytes objects, one of them
a lower-cased copy), so 32 KiB of ``a:`` lines, 6,000 fields, held ~720 KB per
connection while its body was awaited (``logpipe serve`` took 185 MB for 256 such
connections, 6 MB sent, no token needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from logpipe_cli.http_guard import MAX_HEADER_FIELDS
from tests.unit.test_http_guard_answer import connect

pytestmark = pytest.mark.anyio


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def request(fields: int) -> bytes:
    # Host and Content-Length are fields too
    return (
        b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        + b"a:\r\n" * (fields - 2)
        + b"\r\n"
    )


async def test_more_header_fields_than_the_bound_are_a_431() -> None:
    proto, transport = connect(ok)
    proto.data_received(request(MAX_HEADER_FIELDS + 1))
    await asyncio.sleep(0)
    assert transport.closed
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 431")
    proto.connection_lost(None)


async def test_the_bound_itself_is_served() -> None:
    proto, transport = connect(ok)
    proto.data_received(request(MAX_HEADER_FIELDS) + b"x" * 100)
    for _ in range(100):
        if transport.writes:
            break
        await asyncio.sleep(0.01)
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 200")
    assert not transport.closed
    proto.connection_lost(None)


CHUNKED = b"POST /logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("one_read", [False, True], ids=["own-read", "with-the-body"])
async def test_more_trailer_fields_than_the_bound_close_the_connection(one_read: bool) -> None:
    proto, transport = connect(ok)
    # (httptools hands a field on once the next one begins: one more line than the bound)
    body, trailers = b"1\r\nx\r\n0\r\n", b"a:\r\n" * (MAX_HEADER_FIELDS + 2)
    if one_read:  # the whole request at once: the message ends in the same read
        proto.data_received(CHUNKED + body + trailers + b"\r\n")
    else:
        proto.data_received(CHUNKED + body)
        proto.data_received(trailers)
    await asyncio.sleep(0)
    assert transport.closed
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 431")
    proto.connection_lost(None)


@pytest.mark.parametrize("spelling", [b"Host", b"host", b"HOST"])
async def test_a_second_host_field_is_a_400(spelling: bytes) -> None:
    # the DNS-rebinding guard read the first Host, the cross-site check the last
    proto, transport = connect(ok)
    proto.data_received(
        b"POST /logs HTTP/1.1\r\nHost: 127.0.0.1\r\n" + spelling + b": evil.example\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    await asyncio.sleep(0)
    assert transport.closed
    answer = b"".join(transport.writes)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"more than one Host header field" in answer
    proto.connection_lost(None)
