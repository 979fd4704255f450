"""The dedupe sets' expiry when the API remembers which sets already expire
(buffer.ExpiringIdSets): APPEND skips their TTL, and every way a set can come back
without an expiry is forgotten in time. On the real redis-server, through the lean
connection (the API's way; the cache is used only there)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer, ExpiringIdSets, connect
from logpipe_cli.errors import RedisUnavailableError, WrongTypeError
from logpipe_cli.resp import LeanRedis
from logpipe_cli.settings import RedisSettings

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
W = 86400
NOW = float(int(time.time()))
BUCKET = int(NOW // W)
A, B = keys.event_key("a", 1), keys.event_key("b", 1)
SET_A = keys.id_set("a", BUCKET)


@pytest.fixture
async def buffer(redis_url: str) -> AsyncIterator[Buffer]:
    cfg = RedisSettings(url=redis_url)
    client = connect(cfg)
    lean = LeanRedis.from_url(redis_url, 2.0)
    assert lean is not None
    buf = Buffer(client, cfg)
    buf.write_through(lean)
    # the connection opened (the cache is used on an open one: it knows its number)
    await buf.store([(keys.event_key("w", 1), b"{}")], ids=["w"], now=NOW)
    yield buf
    await lean.aclose()
    await client.aclose()


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def ttl_calls(raw: redis.Redis) -> int:
    """TTL commands Redis ran so far (scripts' included)."""
    return int(raw.info("commandstats").get("cmdstat_ttl", {}).get("calls", 0))


async def store_until_stored(buffer: Buffer, eid: str, now: float = NOW) -> None:
    """Store one event for user a, as the committer does: again after a connection
    error (the lean connection learns of a killed connection on its next call)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await buffer.store([(A, b'{"n":1}')], ids=[eid], now=now)
            return
        except (RedisUnavailableError, RedisConnectionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


async def test_a_known_set_is_not_asked_its_ttl_and_still_dedupes(
    buffer: Buffer, raw: redis.Redis
) -> None:
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=NOW)
    assert 0 < raw.ttl(SET_A) <= 2 * W
    before = ttl_calls(raw)
    again = await buffer.store([(A, b'{"n":2}'), (A, b'{"n":3}')], ids=["x", "y"], now=NOW)
    assert again.duplicates == [0]
    assert ttl_calls(raw) == before  # known to expire: not asked
    # another user's set is new to this process: asked, and given its expiry
    await buffer.store([(B, b'{"n":4}')], ids=["x"], now=NOW)
    assert ttl_calls(raw) == before + 1
    assert 0 < raw.ttl(keys.id_set("b", BUCKET)) <= 2 * W
    assert raw.lrange(A, 0, -1) == [b'{"n":1}', b'{"n":3}']


async def test_a_set_lost_with_its_redis_gets_its_expiry_again(
    buffer: Buffer, raw: redis.Redis
) -> None:
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=NOW)
    # Redis "restarts" empty: the data gone and the connection with it
    raw.flushall()
    raw.client_kill_filter(_type="normal", skipme=True)
    # the API notices while idle, so its next write is its first on a new connection
    lean = buffer._lean
    assert lean is not None
    deadline = time.monotonic() + 10
    while lean.connected:
        assert time.monotonic() < deadline, "the killed connection was not noticed"
        await asyncio.sleep(0.01)
    # another user's write opens the new connection; a's is the next on it
    await buffer.store([(B, b'{"n":2}')], ids=["y"], now=NOW)
    await buffer.store([(A, b'{"n":3}')], ids=["y"], now=NOW)
    assert 0 < raw.ttl(SET_A) <= 2 * W


async def test_a_write_that_failed_on_a_lost_connection_is_not_trusted(
    buffer: Buffer, raw: redis.Redis
) -> None:
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=NOW)
    raw.flushall()
    raw.client_kill_filter(_type="normal", skipme=True)
    # the next write goes out on the dead connection and fails: forgotten, and sent again
    await store_until_stored(buffer, "y")
    assert 0 < raw.ttl(SET_A) <= 2 * W


async def test_the_next_bucket_is_asked_its_ttl(buffer: Buffer, raw: redis.Redis) -> None:
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=NOW)
    await buffer.store([(A, b'{"n":2}')], ids=["y"], now=NOW + W)
    assert 0 < raw.ttl(keys.id_set("a", BUCKET + 1)) <= 3 * W


async def test_a_set_deleted_by_hand_gets_its_expiry_once_forgotten(
    buffer: Buffer, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=NOW)
    raw.delete(SET_A)
    # the documented limit: written again while the API still knows it, no expiry yet
    await buffer.store([(A, b'{"n":2}')], ids=["y"], now=NOW)
    assert raw.ttl(SET_A) == -1
    # ... until the API forgets (max_age_s later): the next write gives it one
    later = time.monotonic() + ExpiringIdSets().max_age_s + 1
    monkeypatch.setattr("logpipe_cli.buffer.time.monotonic", lambda: later)
    await buffer.store([(A, b'{"n":3}')], ids=["z"], now=NOW)
    assert 0 < raw.ttl(SET_A) <= 2 * W


async def test_a_refused_write_forgets_what_it_knew(buffer: Buffer, raw: redis.Redis) -> None:
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=NOW)
    raw.set(B, "not a list")
    with pytest.raises(WrongTypeError):
        await buffer.store([(A, b'{"n":2}'), (B, b'{"n":3}')], ids=["y", "z"], now=NOW)
    assert raw.lrange(A, 0, -1) == [b'{"n":1}']  # nothing of the refused call stored
    assert raw.smembers(SET_A) == {b"x"}
    before = ttl_calls(raw)
    await buffer.store([(A, b'{"n":4}')], ids=["y"], now=NOW)
    assert ttl_calls(raw) == before + 1  # asked again


def test_what_is_known_is_forgotten_at_each_turn() -> None:
    sets = ExpiringIdSets(max_keys=2, max_age_s=60)
    known = sets.current(bucket=7, connection=1, now=0.0)
    known.update({A, B})
    assert sets.current(7, 1, 59.0) == {A, B}
    assert sets.current(8, 1, 59.0) == set()  # the bucket turned
    sets.current(8, 1, 59.0).add(A)
    assert sets.current(8, 2, 59.0) == set()  # another connection
    sets.current(8, 2, 59.0).add(A)
    assert sets.current(8, 2, 120.0) == set()  # too old
    sets.current(8, 2, 120.0).update({"1", "2", "3"})
    assert sets.current(8, 2, 121.0) == set()  # too many
    sets.current(8, 2, 121.0).add(A)
    sets.forget()
    assert sets.current(8, 2, 121.0) == set()
