"""The drain pipelines read their replies straight from redis-py's hiredis reader
(``buffer._read_replies``), not through ``Connection.read_response``: on a real Redis,
with replies spread over many socket reads, error replies in place, and the same
answers as redis-py's own path."""

from __future__ import annotations

from typing import Any

import pytest
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from logpipe_cli.buffer import _read_replies
from tests.integration.conftest import Rig

pytestmark = pytest.mark.anyio


async def _pipeline(rig: Rig, cmds: list[tuple[Any, ...]]) -> list[Any]:
    return await rig.buffer._pipeline("testing", cmds)


async def test_replies_come_from_the_hiredis_reader(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = b"x" * 1000
    rig.raw.rpush("l", *([value] * 300))  # ~300 KB a reply: many socket reads
    rig.raw.set("s", "not a list")
    assert await _pipeline(rig, [("PING",)]) == [b"PONG"]  # connected (its setup reads too)

    async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read_response used")

    monkeypatch.setattr(_AsyncHiredisParser, "read_response", refuse)
    cmds: list[tuple[Any, ...]] = []
    for _ in range(20):
        cmds += [("LRANGE", "l", 0, -1), ("LRANGE", "s", 0, -1), ("PING",), ("LLEN", "l")]
    replies = await _pipeline(rig, cmds)
    assert len(replies) == 80
    for i in range(0, 80, 4):
        assert replies[i] == [value] * 300
        assert isinstance(replies[i + 1], ResponseError)
        assert "WRONGTYPE" in str(replies[i + 1])
        assert replies[i + 2] == b"PONG"
        assert replies[i + 3] == 300
    # the connection went back to the pool in step: the next call reads its own replies
    assert await _pipeline(rig, [("LLEN", "l"), ("PING",)]) == [300, b"PONG"]


async def test_the_other_path_gives_the_same_answers(rig: Rig) -> None:
    rig.raw.rpush("l", b"a", b"b")
    rig.raw.set("s", "x")
    cmds: list[tuple[Any, ...]] = [("LRANGE", "l", 0, -1), ("LLEN", "s"), ("PING",)]

    class Other:  # a connection whose parser is not redis-py's hiredis one
        _parser = None

        def __init__(self, conn: Connection) -> None:
            self.conn = conn

        async def read_response(self, **kwargs: Any) -> Any:
            return await self.conn.read_response(**kwargs)

    pool = rig.client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(b"".join(conn.pack_command(*c)[0] for c in cmds))
        other = await _read_replies(Other(conn), 3)
        await conn.send_packed_command(b"".join(conn.pack_command(*c)[0] for c in cmds))
        fast = await _read_replies(conn, 3)
    finally:
        await pool.release(conn)
    assert other[0] == fast[0] == [b"a", b"b"]
    assert isinstance(other[1], ResponseError)
    assert isinstance(fast[1], ResponseError)
    assert str(other[1]) == str(fast[1])
    assert other[2] == fast[2] == b"PONG"
