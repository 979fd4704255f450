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
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import WrongTypeError
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


async def test_duplicates_within_one_call_and_values_with_newlines(
    buffer: Buffer, raw: redis.Redis
) -> None:
    items = [(A, b'{"n":1}'), (B, b'{"n":2}'), (A, b'{"n":\n3}'), (A, b'{"n":4}')]
    stored = await buffer.store(items, ids=["i", "i", "i", "j"], now=NOW)
    # grouped by list in the script (A's three first): the indexes are the caller's
    assert stored.duplicates == [2]
    assert raw.lrange(A, 0, -1) == [b'{"n":1}', b'{"n":4}']
    assert raw.lrange(B, 0, -1) == [b'{"n":2}']


async def test_the_window_spans_the_bucket_before_and_after(
    buffer: Buffer, raw: redis.Redis
) -> None:
    await buffer.store([(A, b"{}")], ids=["x"], now=NOW)
    key = keys.id_set("a", int(NOW // W))
    assert raw.smembers(key) == {b"x"}
    # dropped whole at the end of the next bucket: every id kept at least W seconds
    assert raw.expiretime(key) == (int(NOW // W) + 2) * W
    for later in (NOW + W - 1, NOW - W + 1):  # a clock ahead or behind by under W
        assert (await buffer.store([(A, b"{}")], ids=["x"], now=later)).duplicates == [0]
    assert (await buffer.store([(A, b"{}")], ids=["x"], now=NOW + 2 * W)).duplicates == []


async def test_dedupe_off_stores_every_copy(redis_url: str, raw: redis.Redis) -> None:
    cfg = RedisSettings(url=redis_url, dedupe_seconds=0)
    client = aioredis.Redis.from_url(redis_url)
    buf = Buffer(client, cfg)
    stored = await buf.store([(A, b"{}"), (A, b"{}")], ids=["x", "x"], now=NOW)
    await client.aclose()
    assert stored.duplicates == []
    assert raw.llen(A) == 2
    assert not list(raw.scan_iter(keys.IDS_PREFIX + "*"))


async def test_an_id_set_of_another_type_refuses_its_lists(
    buffer: Buffer, raw: redis.Redis
) -> None:
    raw.set(keys.id_set("a", int(NOW // W)), "hand-written")
    with pytest.raises(WrongTypeError) as caught:
        await buffer.store([(B, b"{}"), (A, b"{}")], ids=["x", "y"], now=NOW)
    assert caught.value.keys == [A]
    assert not raw.exists(A, B)  # nothing written


async def test_the_committer_gives_each_request_its_own_duplicates(buffer: Buffer) -> None:
    committer = GroupCommitter(buffer)
    await committer.append([(A, b"{}")], ["seen"])
    answers = await asyncio.gather(
        committer.append([(A, b"{}"), (A, b"{}")], ["n1", "seen"]),
        committer.append([(B, b"{}")]),
        committer.append([(A, b"{}"), (A, b"{}"), (A, b"{}")], ["n1", "n2", "n2"]),
    )
    assert answers == [[1], [], [0, 2]]


async def test_a_replayed_flush_stores_nothing_more(buffer: Buffer, raw: redis.Redis) -> None:
    await buffer.store([(A, b"{}")], "f1", ids=["x"], now=NOW)
    assert (await buffer.store([(A, b"{}")], "f1", ids=["x"], now=NOW)).buffered == 1
    assert raw.llen(A) == 1


def test_settings_default_window() -> None:
    assert replace(RedisSettings()).dedupe_seconds == 86400
