"""Attacks on the id sets' known expiry (buffer.ExpiringIdSets, APPEND's '2' flag): ways
a set is left without any expiry that README's "Idempotent events" does not name."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.resp import LeanRedis
from logpipe_cli.settings import RedisSettings

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
W = 10  # a short dedupe window (dedupe_seconds may be anything >= 1)
A = keys.event_key("a", 1)


@pytest.fixture
async def buffer(redis_url: str) -> AsyncIterator[Buffer]:
    cfg = RedisSettings(url=redis_url, dedupe_seconds=W)
    client = connect(cfg)
    lean = LeanRedis.from_url(redis_url, 2.0)
    assert lean is not None
    buf = Buffer(client, cfg)
    buf.write_through(lean)
    await buf.store([(keys.event_key("w", 1), b"{}")], ids=["w"])  # opens the connection
    yield buf
    await lean.aclose()
    await client.aclose()


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


async def test_an_api_clock_behind_redis_by_two_windows_leaves_no_set_without_expiry(
    buffer: Buffer, raw: redis.Redis
) -> None:
    # The bucket and its EXPIREAT time come from the API host's clock, the expiry is
    # applied by Redis's clock. An API clock 3 windows behind Redis's (30 s here) makes
    # the EXPIREAT time already past: Redis deletes the set at once. Before
    # ExpiringIdSets each write did that again (dedupe off, nothing kept); now the API
    # takes the set to expire and its next write makes it again, with no expiry ever
    # (the bucket turns and nothing reads this set's TTL again).
    now = time.time() - 3 * W
    bucket = int(now // W)
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=now)
    await buffer.store([(A, b'{"n":2}')], ids=["y"], now=now)
    assert raw.ttl(keys.id_set("a", bucket)) != -1, "an id set left without an expiry"


async def test_a_set_deleted_by_hand_and_made_again_keeps_no_expiry_past_its_bucket(
    buffer: Buffer, raw: redis.Redis
) -> None:
    # README's "Deleting id sets by hand" says the set made again without an expiry gets
    # one on its user's next write once the API forgets; a write in the next bucket goes
    # to the next bucket's set, and nothing reads this one's TTL again: it never expires
    # the start of the next bucket (an API clock a little ahead of Redis's: '2' trusted)
    now = float((int(time.time() // W) + 1) * W)
    bucket = int(now // W)
    await buffer.store([(A, b'{"n":1}')], ids=["x"], now=now)
    raw.delete(keys.id_set("a", bucket))
    await buffer.store([(A, b'{"n":2}')], ids=["y"], now=now)
    await buffer.store([(A, b'{"n":3}')], ids=["z"], now=now + W)  # the bucket turned
    assert 0 < raw.ttl(keys.id_set("a", bucket + 1)) <= 4 * W
    assert raw.ttl(keys.id_set("a", bucket)) == -1  # the documented limit, for good
