"""The lean connection of the write path (logpipe_cli/resp.py) against a real redis-server:
the same replies as redis-py, NOSCRIPT handled, a fresh connection after a failure, a
deadline on every call, AUTH and SELECT from the URL; and the Buffer that uses it stores
exactly as the redis-py path does."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from logpipe_cli import scripts
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.errors import BufferFullError, RedisUnavailableError
from logpipe_cli.keys import EventKey
from logpipe_cli.resp import LeanRedis, pack, script_sha
from logpipe_cli.settings import RedisSettings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
KEY = EventKey("u1", 19675).key


@pytest.fixture
async def lean(redis_url: str) -> AsyncIterator[LeanRedis]:
    conn = LeanRedis.from_url(redis_url, 2.0)
    assert conn is not None
    yield conn
    await conn.aclose()


def test_pack_is_the_redis_protocol() -> None:
    assert pack(b"SET", "k\u00e9", 12) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n12\r\n"


def test_urls_it_does_not_handle_go_to_redis_py() -> None:
    assert LeanRedis.from_url("rediss://h:6380", 1.0) is None
    assert LeanRedis.from_url("redis://h:1/0?socket_timeout=3", 1.0) is None
    unix = LeanRedis.from_url("unix:///tmp/r.sock?db=2", 1.0)
    assert unix is not None
    assert unix.where == "/tmp/r.sock"


async def test_replies_as_redis_py_gives_them(lean: LeanRedis, redis_url: str) -> None:
    assert await lean.call(pack(b"RPUSH", KEY, b"a", b"b")) == 2
    assert await lean.call(pack(b"LRANGE", KEY, 0, -1)) == [b"a", b"b"]
    assert await lean.call(pack(b"GET", b"nothing")) is None
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await lean.call(pack(b"GET", KEY))
    # calls made at once share the connection and each gets its own reply
    got = await asyncio.gather(*(lean.call(pack(b"INCR", b"n")) for _ in range(50)))
    assert sorted(got) == list(range(1, 51))


async def test_noscript_loads_the_script_and_runs_it_once(lean: LeanRedis, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.script_flush()
        script = "return redis.call('INCR', KEYS[1])"
        assert await lean.evalsha(script, ["c"], []) == 1
        raw.script_flush()  # as after a restart
        assert await lean.evalsha(script, ["c"], []) == 2
        assert raw.get("c") == b"2"  # never run twice
    finally:
        raw.close()


async def test_a_restarted_redis_gets_a_fresh_connection(own_redis: RedisServer) -> None:
    lean = LeanRedis.from_url(own_redis.url, 2.0)
    assert lean is not None
    try:
        assert await lean.call(pack(b"PING")) == b"PONG"
        own_redis.kill()
        with pytest.raises(RedisConnectionError):
            await lean.call(pack(b"PING"))  # down: refused, not hung
        own_redis.start()
        assert await lean.call(pack(b"PING")) == b"PONG"
    finally:
        await lean.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


async def test_a_call_with_no_answer_times_out(silent_server: int) -> None:
    lean = LeanRedis(port=silent_server, timeout_s=0.2)
    try:
        with pytest.raises(RedisTimeoutError):
            await lean.call(pack(b"PING"))
    finally:
        await lean.aclose()


async def test_auth_and_db_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", extra_args=("--requirepass", "s3cret"))
    server.start()
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        lean = LeanRedis.from_url(url, 2.0)
        assert lean is not None
        try:
            await lean.call(pack(b"SET", b"k", b"v"))
        finally:
            await lean.aclose()
        raw = redis.Redis(port=server.port, password="s3cret", db=3)
        try:
            assert raw.get("k") == b"v"
        finally:
            raw.close()
        wrong = LeanRedis.from_url(f"redis://:nope@127.0.0.1:{server.port}", 2.0)
        assert wrong is not None
        with pytest.raises(RedisConnectionError) as caught:
            await wrong.call(pack(b"PING"))
        assert "nope" not in str(caught.value)
        await wrong.aclose()
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def lean_buffer(url: str, **cfg: int) -> AsyncIterator[Buffer]:
    settings = RedisSettings(url=url, **cfg)  # type: ignore[arg-type]
    client = connect(settings)
    lean = LeanRedis.from_url(url, 2.0)
    buf = Buffer(client, settings)
    buf.write_through(lean)
    try:
        yield buf
    finally:
        assert lean is not None
        await lean.aclose()
        await client.aclose()


async def test_the_buffer_stores_through_it_as_through_redis_py(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.script_flush()  # the first call meets NOSCRIPT
        async with lean_buffer(redis_url, max_buffered_events=4) as buf:
            assert await buf.append([(KEY, b'{"a":1}'), (KEY, b'{"a":2}')], "f1") == 2
            assert await buf.append([(KEY, b'{"a":1}'), (KEY, b'{"a":2}')], "f1") == 2
            stored = await buf.store([(KEY, b'{"b":1}')], "f2", ids=["x"])
            assert stored.duplicates == []
            again = await buf.store([(KEY, b'{"b":1}')], "f3", ids=["x"])
            assert again.duplicates == [0]
            with pytest.raises(BufferFullError):
                await buf.append([(KEY, b"{}")] * 5, "f4")
        assert raw.lrange(KEY, 0, -1) == [b'{"a":1}', b'{"a":2}', b'{"b":1}']
        assert raw.script_exists(script_sha(scripts.APPEND)) == [True]  # loaded on NOSCRIPT
    finally:
        raw.close()


async def test_the_buffer_says_unavailable_when_redis_is_down(own_redis: RedisServer) -> None:
    async with lean_buffer(own_redis.url) as buf:
        own_redis.kill()
        with pytest.raises(RedisUnavailableError, match="storing events"):
            await buf.append([(KEY, b"{}")], "f1")
        own_redis.start()
        assert await buf.append([(KEY, b"{}")], "f2") == 1


def test_under_uvloop_as_serve_runs_it(redis_url: str) -> None:
    """``serve`` runs on uvloop, whose transports differ from asyncio's (connection_made
    may come after create_connection returns): the same calls work there."""
    import uvloop

    async def calls() -> list[object]:
        conn = LeanRedis.from_url(redis_url, 2.0)
        assert conn is not None
        try:
            return [
                await conn.call(pack(b"PING")),
                await conn.evalsha("return 7", [], []),
                await conn.call(pack(b"PING")),
            ]
        finally:
            await conn.aclose()

    assert uvloop.run(calls()) == [b"PONG", 7, b"PONG"]
