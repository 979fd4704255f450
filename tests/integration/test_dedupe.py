"""Dedupe in the APPEND script, on the real redis-server: an event id stored once per user
within the window, duplicates reported by index, buckets dropped by their expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis
import redis.asyncio as aioredis

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer, Charge, RateLimit, RateLimitedErrors, connect
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import BufferFullError
from logpipe_cli.settings import RedisSettings

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
W = 86400
#: buckets expire at a Unix time (EXPIREAT): a time in the past would drop them at once
NOW = float(int(time.time()))
A, B = keys.event_key("a", 1), keys.event_key("b", 1)


@pytest.fixture
async def buffer(redis_url: str) -> AsyncIterator[Buffer]:
    cfg = RedisSettings(url=redis_url)
    client = connect(cfg)
    yield Buffer(client, cfg)
    await client.aclose()


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


async def test_an_id_is_stored_once_per_user(buffer: Buffer, raw: redis.Redis) -> None:
    first = await buffer.store([(A, b'{"n":1}'), (B, b'{"n":2}')], ids=["x", "x"], now=NOW)
    assert first.duplicates == []  # the same id for two users: two events
    again = await buffer.store(
        [(A, b'{"n":3}'), (A, b'{"n":4}'), (B, b'{"n":5}')], ids=["x", None, "y"], now=NOW
    )
    assert again.duplicates == [0]
    assert raw.lrange(A, 0, -1) == [b'{"n":1}', b'{"n":4}']
    assert raw.lrange(B, 0, -1) == [b'{"n":2}', b'{"n":5}']
    assert raw.hget(keys.STATS, "accepted") == b"4"
    assert raw.hget(keys.STATS, "buffered") == b"4" == str(again.buffered).encode()


async def test_an_id_is_per_user_over_every_day_of_theirs(buffer: Buffer, raw: redis.Redis) -> None:
    # the script reads the user from each list's name: the user's lists of two days
    # share one bucket, and users whose names share a prefix or hold . @ + do not
    users = ["a", "ab", "a.b@c+d"]
    first = [(keys.event_key(u, 1), b'{"d":1}') for u in users]
    assert (await buffer.store(first, ids=["x"] * 3, now=NOW)).duplicates == []
    second = [(keys.event_key(u, 2), b'{"d":2}') for u in users]
    assert (await buffer.store(second, ids=["x"] * 3, now=NOW)).duplicates == [0, 1, 2]
    bucket = int(NOW // W)
    assert set(raw.keys(keys.IDS_PREFIX + "*")) == {keys.id_set(u, bucket).encode() for u in users}


async def test_a_bucket_that_lost_its_expiry_gets_it_back(buffer: Buffer, raw: redis.Redis) -> None:
    # the expiry is written when the bucket has none (a TTL read first), not per flush
    await buffer.store([(A, b"{}")], ids=["x"], now=NOW)
    key = keys.id_set("a", int(NOW // W))
    raw.persist(key)
    assert raw.ttl(key) == -1
    await buffer.store([(A, b"{}")], ids=["y"], now=NOW)
    assert raw.expiretime(key) == (int(NOW // W) + 2) * W


async def test_duplicates_within_one_call_and_values_with_newlines(
    buffer: Buffer, raw: redis.Redis
) -> None:
    items = [(A, b'{"n":1}'), (B, b'{"n":2}'), (A, b'{"n":\n3}'), (A, b'{"n":4}')]
    stored = await buffer.store(items, ids=["i", "i", "i", "j"], now=NOW)
    # grouped by list in the script (A's three first): the indexes are the caller's
    assert stored.duplicates == [2]
    assert raw.lrange(A, 0, -1) == [b'{"n":1}', b'{"n":4}']
    assert raw.lrange(B, 0, -1) == [b'{"n":2}']


async def test_an_id_is_remembered_for_at_least_the_window(
    buffer: Buffer, raw: redis.Redis
) -> None:
    await buffer.store([(A, b"{}")], ids=["x"], now=NOW)
    key = keys.id_set("a", int(NOW // W))
    assert raw.smembers(key) == {b"x"}
    # dropped whole at the end of the next bucket: every id kept at least W seconds
    assert raw.expiretime(key) == (int(NOW // W) + 2) * W
    # just under W later: in the same bucket or the next one, which checks this one too
    assert (await buffer.store([(A, b"{}")], ids=["x"], now=NOW + W - 1)).duplicates == [0]
    # two buckets later an id is forgotten (its set has expired by then in real time)
    await buffer.store([(A, b"{}")], ids=["z"], now=NOW)
    assert (await buffer.store([(A, b"{}")], ids=["z"], now=NOW + 2 * W)).duplicates == []


async def test_dedupe_off_stores_every_copy(redis_url: str, raw: redis.Redis) -> None:
    cfg = RedisSettings(url=redis_url, dedupe_seconds=0)
    client = aioredis.Redis.from_url(redis_url)
    buf = Buffer(client, cfg)
    stored = await buf.store([(A, b"{}"), (A, b"{}")], ids=["x", "x"], now=NOW)
    await client.aclose()
    assert stored.duplicates == []
    assert raw.llen(A) == 2
    assert not list(raw.scan_iter(keys.IDS_PREFIX + "*"))


async def test_an_id_set_of_another_type_stores_rather_than_fails(
    buffer: Buffer, raw: redis.Redis
) -> None:
    # written by hand: the script must not fail half-way; a's events are stored (at
    # least once), b's deduplicated as usual
    raw.set(keys.id_set("a", int(NOW // W)), "hand-written")
    items = [(B, b"{}"), (A, b"{}"), (B, b"{}"), (A, b"{}")]
    stored = await buffer.store(items, ids=["x", "y", "x", "y"], now=NOW)
    assert stored.duplicates == [2]
    assert (raw.llen(A), raw.llen(B)) == (2, 1)
    assert raw.get(keys.id_set("a", int(NOW // W))) == b"hand-written"


async def test_the_committer_gives_each_request_its_own_duplicates(buffer: Buffer) -> None:
    committer = GroupCommitter(buffer)
    await committer.append([(A, b"{}")], ["seen"])
    answers = await asyncio.gather(
        committer.append([(A, b"{}"), (A, b"{}")], ["n1", "seen"]),
        committer.append([(B, b"{}")]),
        committer.append([(A, b"{}"), (A, b"{}"), (A, b"{}")], ["n1", "n2", "n2"]),
    )
    assert list(answers) == [[1], [], [0, 2]]


async def test_a_replayed_flush_stores_nothing_more(buffer: Buffer, raw: redis.Redis) -> None:
    await buffer.store([(A, b"{}")], "f1", ids=["x"], now=NOW)
    assert (await buffer.store([(A, b"{}")], "f1", ids=["x"], now=NOW)).buffered == 1
    assert raw.llen(A) == 1


def test_settings_default_window() -> None:
    assert replace(RedisSettings()).dedupe_seconds == 86400


# ---- with the limits (merged from main): bytes, charges, refusals ------------------------


async def test_duplicates_add_no_bytes(buffer: Buffer, raw: redis.Redis) -> None:
    await buffer.store([(A, b'{"n":1}'), (B, b"{}")], ids=["x", "y"], now=NOW)
    assert raw.hget(keys.STATS, "buffered_bytes") == b"9"
    # both grouped shapes: joined by newlines (A) and one value per argument (B)
    again = await buffer.store(
        [(A, b'{"n":1}'), (A, b'{"n":22}'), (B, b"{\n}"), (B, b"{}")],
        ids=["x", "z", None, "y"],
        now=NOW,
    )
    assert again.duplicates == [0, 3]
    assert raw.hget(keys.STATS, "buffered_bytes") == str(9 + 8 + 3).encode()
    assert raw.hget(keys.STATS, "accepted") == b"4" == raw.hget(keys.STATS, "buffered")


async def test_duplicates_are_charged_and_a_refused_flush_stores_no_id(
    buffer: Buffer, raw: redis.Redis
) -> None:
    rate = RateLimit(events_per_second=0.001, burst=3)  # no token comes back in the test
    two = [Charge("token:t", 2)]
    first = await buffer.store(
        [(A, b"{}"), (A, b"{}")], ids=["p", "q"], now=NOW, charges=two, rate=rate
    )
    assert first.duplicates == []
    # two duplicates, still two events sent: one token left, so the request is refused
    with pytest.raises(RateLimitedErrors) as refused:
        await buffer.store(
            [(A, b"{}"), (A, b"{}")], ids=["p", "r"], now=NOW, charges=two, rate=rate
        )
    assert list(refused.value.refused) == [0]
    # nothing of the refused flush was written: "r" is new afterwards
    one = [Charge("token:t", 1)]
    last = await buffer.store([(A, b"{}")], ids=["r"], now=NOW, charges=one, rate=rate)
    assert last.duplicates == []
    assert raw.llen(A) == 3


async def test_a_full_buffer_refuses_before_any_id_is_kept(
    redis_url: str, raw: redis.Redis
) -> None:
    cfg = RedisSettings(url=redis_url, max_buffered_events=1)
    async with Buffer.connect(cfg) as buffer:
        with pytest.raises(BufferFullError):
            await buffer.store([(A, b"{}"), (A, b"{}")], ids=["s", "t"], now=NOW)
        assert not list(raw.scan_iter(match=keys.IDS_PREFIX + "*"))
        assert (await buffer.store([(A, b"{}")], ids=["s"], now=NOW)).duplicates == []
