"""The dedupe sets' expiry when the API remembers which sets already expire
(buffer.ExpiringIdSets): APPEND skips their TTL, and every way a set can come back
without an expiry is forgotten in time. On the real redis-server, through the lean
connection (the API's way; the cache is used only there)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

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


@contextlib.asynccontextmanager
async def lean_buffer(redis_url: str, **cfg: Any) -> AsyncIterator[Buffer]:
    """A buffer that writes through the lean connection, as the API's does, opened."""
    settings = RedisSettings(url=redis_url, **cfg)
    client = connect(settings)
    lean = LeanRedis.from_url(redis_url, 2.0)
    assert lean is not None
    buf = Buffer(client, settings)
    buf.write_through(lean)
    # the connection opened (the cache is used on an open one: it knows its number)
    await buf.store([(keys.event_key("w", 1), b"{}")], ids=["w"])
    try:
        yield buf
    finally:
        await lean.aclose()
        await client.aclose()


@pytest.fixture
async def buffer(redis_url: str) -> AsyncIterator[Buffer]:
    async with lean_buffer(redis_url) as buf:
        yield buf


#: a short dedupe window (dedupe_seconds may be anything >= 1), for clocks a window apart
SHORT_W = 10


@pytest.fixture
async def short_buffer(redis_url: str) -> AsyncIterator[Buffer]:
    async with lean_buffer(redis_url, dedupe_seconds=SHORT_W) as buf:
        yield buf


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def redis_restarts_empty(raw: redis.Redis) -> None:
    """As a Redis restarted without its data: the data gone, the clients' connections
    with it."""
    raw.flushall()
    raw.client_kill_filter(_type="normal", skipme=True)


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
    redis_restarts_empty(raw)
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
    redis_restarts_empty(raw)
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


# ---- attacks: ways a set is left without any expiry (an attacker helper's review) ----


async def test_an_api_clock_behind_redis_by_two_windows_leaves_no_set_without_expiry(
    short_buffer: Buffer, raw: redis.Redis
) -> None:
    # The bucket and its EXPIREAT time come from the API host's clock, the expiry is
    # applied by Redis's clock. An API clock 3 windows behind Redis's (30 s here) makes
    # the EXPIREAT time already past: Redis deletes the set at once. Before
    # ExpiringIdSets each write did that again (dedupe off, nothing kept); now the API
    # takes the set to expire and its next write makes it again, with no expiry ever
    # (the bucket turns and nothing reads this set's TTL again).
    now = time.time() - 3 * SHORT_W
    bucket = int(now // SHORT_W)
    await short_buffer.store([(A, b'{"n":1}')], ids=["x"], now=now)
    await short_buffer.store([(A, b'{"n":2}')], ids=["y"], now=now)
    assert raw.ttl(keys.id_set("a", bucket)) != -1, "an id set left without an expiry"


async def test_a_set_deleted_by_hand_and_made_again_keeps_no_expiry_past_its_bucket(
    short_buffer: Buffer, raw: redis.Redis
) -> None:
    # README's "Deleting id sets by hand" says the set made again without an expiry gets
    # one on its user's next write once the API forgets; a write in the next bucket goes
    # to the next bucket's set, and nothing reads this one's TTL again: it never expires
    # the start of the next bucket (an API clock a little ahead of Redis's: '2' trusted)
    now = float((int(time.time() // SHORT_W) + 1) * SHORT_W)
    bucket = int(now // SHORT_W)
    await short_buffer.store([(A, b'{"n":1}')], ids=["x"], now=now)
    raw.delete(keys.id_set("a", bucket))
    await short_buffer.store([(A, b'{"n":2}')], ids=["y"], now=now)
    await short_buffer.store([(A, b'{"n":3}')], ids=["z"], now=now + SHORT_W)  # the bucket turned
    assert 0 < raw.ttl(keys.id_set("a", bucket + 1)) <= 4 * SHORT_W
    assert raw.ttl(keys.id_set("a", bucket)) == -1  # the documented limit, for good
