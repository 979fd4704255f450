"""The Redis buffer's write path and counters, on fakeredis (with its Lua support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from logpipe_cli.buffer import AckItem, BeginItem, Buffer
from logpipe_cli.errors import BufferFullError, RedisUnavailableError
from logpipe_cli.keys import STATS, EventKey
from logpipe_cli.scripts import Acked, Began, Pending, Prepared
from logpipe_cli.settings import RedisSettings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    client = fakeredis.aioredis.FakeRedis()
    yield client
    await client.aclose()


def buffer(client: Any, **cfg: Any) -> Buffer:
    return Buffer(client, RedisSettings(**cfg))


async def test_append_groups_by_key_in_order(fake: Any) -> None:
    buf = buffer(fake)
    items = [
        ("logs:user_a:1", b'{"n":1}'),
        ("logs:user_b:1", b'{"n":2}'),
        ("logs:user_a:1", b'{"n":3}'),
        ("logs:user_a:2", b'{"n":4}'),
        ("logs:user_b:1", b'{"n":5}'),
    ]
    assert await buf.append(items) == 5
    assert await fake.lrange("logs:user_a:1", 0, -1) == [b'{"n":1}', b'{"n":3}']
    assert await fake.lrange("logs:user_b:1", 0, -1) == [b'{"n":2}', b'{"n":5}']
    assert await fake.lrange("logs:user_a:2", 0, -1) == [b'{"n":4}']
    assert await buf.stats() == {"accepted": 5, "buffered": 5, "buffered_bytes": 35}


async def test_append_adds_to_what_is_there(fake: Any) -> None:
    buf = buffer(fake)
    await buf.append([("logs:user_a:1", b"{}")])
    assert await buf.append([("logs:user_a:1", b'{"x":1}')]) == 2
    assert await fake.lrange("logs:user_a:1", 0, -1) == [b"{}", b'{"x":1}']


async def test_append_many_values_in_one_key(fake: Any) -> None:
    buf = buffer(fake)
    values = [b'{"i":%d}' % i for i in range(2500)]  # more than one RPUSH chunk
    assert await buf.append([("logs:user_a:1", v) for v in values]) == 2500
    assert await fake.lrange("logs:user_a:1", 0, -1) == values


async def test_append_nothing(fake: Any) -> None:
    assert await buffer(fake).append([]) == 0
    assert await fake.keys("logs:*") == []


async def test_backpressure_refuses_the_whole_batch(fake: Any) -> None:
    buf = buffer(fake, max_buffered_events=3)
    assert await buf.append([("logs:user_a:1", b"{}"), ("logs:user_a:1", b"{}")]) == 2
    with pytest.raises(BufferFullError) as info:
        await buf.append([("logs:user_a:1", b'{"x":1}'), ("logs:user_b:1", b'{"x":2}')])
    assert info.value.http_status == 503
    assert "max_buffered_events" in info.value.detail
    assert await fake.llen("logs:user_a:1") == 2
    assert await fake.exists("logs:user_b:1") == 0
    assert await buf.stats() == {
        "accepted": 2,
        "buffered": 2,
        "buffered_bytes": 4,
        "refused_full": 2,
    }
    assert await buf.append([("logs:user_a:1", b'{"x":3}')]) == 3  # exactly at the limit
    with pytest.raises(BufferFullError):
        await buf.append([("logs:user_a:1", b'{"x":4}')])


async def test_no_limit_when_zero(fake: Any) -> None:
    buf = buffer(fake, max_buffered_events=0)
    await fake.hset(STATS, "buffered", 10**9)
    assert await buf.append([("logs:user_a:1", b"{}")]) == 10**9 + 1


async def test_no_ttl_by_default(fake: Any) -> None:
    await buffer(fake).append([("logs:user_a:1", b"{}")])
    assert await fake.ttl("logs:user_a:1") == -1


async def test_key_expiration_sets_a_ttl_on_every_key_written(fake: Any) -> None:
    buf = buffer(fake, key_expiration_seconds=120)
    await buf.append([("logs:user_a:1", b"{}"), ("logs:user_b:1", b"{}")])
    for key in ("logs:user_a:1", "logs:user_b:1"):
        assert 0 < await fake.ttl(key) <= 120
    assert await fake.ttl(STATS) == -1  # the counters never expire


async def test_find_drainable_sorts_out_unsafe_keys(fake: Any) -> None:
    buf = buffer(fake)
    for key in ("logs:user_a:1", "logs:user_b:2", "logs:user_../x:1", "logs:user_a:01"):
        await fake.rpush(key, b"{}")
    await fake.rpush("logpipe:claim:{logs:user_c:3}", b"{}")
    await fake.rpush("logpipe:claim:{logs:user_a/b:3}", b"{}")
    found, unsafe = await buf.find_drainable("logs:user_*:*")
    assert found == [EventKey("a", 1), EventKey("b", 2), EventKey("c", 3)]
    assert unsafe == ["logpipe:claim:{logs:user_a/b:3}", "logs:user_../x:1", "logs:user_a:01"]


async def test_claim_renames_and_appends_go_to_a_fresh_list(fake: Any) -> None:
    buf = buffer(fake)
    ek = EventKey("a", 1)
    await buf.append([(ek.key, b'{"n":1}')])
    (claim,) = await buf.claim([ek], "me", 5000)
    assert claim.status == "claimed"
    assert await fake.exists(ek.key) == 0
    assert await fake.lrange(ek.claim, 0, -1) == [b'{"n":1}']
    await buf.append([(ek.key, b'{"n":2}')])
    assert await fake.lrange(ek.key, 0, -1) == [b'{"n":2}']
    (other,) = await buf.claim([ek], "you", 5000)
    assert (other.status, other.detail) == ("busy", "me")


async def test_claim_empty_and_wrong_type(fake: Any) -> None:
    buf = buffer(fake)
    await fake.set("logs:user_s:1", "x")
    empty, wrong = await buf.claim([EventKey("e", 1), EventKey("s", 1)], "me", 5000)
    assert empty.status == "empty"
    assert (wrong.status, wrong.detail) == ("wrongtype", "string")
    assert await fake.get("logs:user_s:1") == b"x"


async def test_ack_trims_and_counts(fake: Any) -> None:
    buf = buffer(fake)
    ek = EventKey("a", 1)
    await buf.append([(ek.key, b'{"n":%d}' % i) for i in range(3)])
    await buf.claim([ek], "me", 5000)
    (batch,) = await buf.begin([BeginItem(ek, 0)], "me", 5000, 2)
    assert batch == Began("held", [b'{"n":0}', b'{"n":1}'])
    assert await fake.get(ek.offset) == b"0"
    assert await fake.get(ek.holder) == b"0 me"
    assert await buf.ack([AckItem(ek, 2, 2, 16, [], 16)], "me", 5000) == [Acked("held", 1)]
    assert await fake.exists(ek.offset) == 0
    assert await fake.get(ek.holder) == b"16 me"  # acknowledged so far, and by whom
    assert await buf.ack([AckItem(ek, 1, 0, 0, [b"bad"], 16)], "me", 5000) == [Acked("held", 0)]
    assert await fake.exists(ek.claim, ek.lease, ek.holder) == 0
    assert await fake.lrange(ek.quarantine, 0, -1) == [b"bad"]
    stats = await buf.stats()
    expected = {
        "accepted": 3,
        "buffered": 0,
        "drained_events": 2,
        "drained_bytes": 16,
        "quarantined": 1,
    }
    assert {k: stats.get(k) for k in expected} == expected


async def test_lease_checks_refuse_a_stranger(fake: Any) -> None:
    buf = buffer(fake)
    ek = EventKey("a", 1)
    await buf.append([(ek.key, b"{}")])
    await buf.claim([ek], "me", 5000)
    assert await buf.begin([BeginItem(ek, 0)], "you", 5000, 10) == [Began("lost", [])]
    assert await buf.prepare([ek], "you", 5000) == [Prepared(Pending.LOST)]
    assert await buf.prepare([ek], "me", 5000) == [Prepared(Pending.CLEAN, "", "")]
    assert await buf.ack([AckItem(ek, 1, 1, 3, [], 3)], "you", 5000) == [Acked("lost")]
    assert await buf.renew([ek], "you", 5000) == [False]
    assert await buf.renew([ek], "me", 5000) == [True]
    await buf.release([ek], "you")
    assert await fake.get(ek.lease) == b"me"
    await buf.release([ek], "me")
    assert await fake.exists(ek.lease) == 0
    assert await fake.llen(ek.claim) == 1  # releasing gives the lease up, never the events


async def test_connection_failure_is_redis_unavailable() -> None:
    from logpipe_cli.buffer import connect
    from tests.redis_server import free_port

    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}", timeout_seconds=1))
    try:
        with pytest.raises(RedisUnavailableError, match="redis unavailable while storing"):
            await Buffer(client, RedisSettings()).append([("logs:user_a:1", b"{}")])
        with pytest.raises(RedisUnavailableError, match="pinging"):
            await Buffer(client, RedisSettings()).ping()
    finally:
        await client.aclose()


async def test_scan_keys_parses_each_key_once_by_kind(fake: Any) -> None:
    buf = buffer(fake)
    for key in ("logs:user_a:1", "logs:user_../x:1", "logpipe:claim:{logs:user_c:3}"):
        await fake.rpush(key, b"{}")
    await fake.rpush("logpipe:quarantine:{logs:user_a:1}", b"bad")
    await fake.hset(STATS, "buffered", 1)
    found = {k.name: (k.kind, k.event_key) async for k in buf.scan_keys("*")}
    assert found == {
        "logs:user_a:1": ("events", EventKey("a", 1)),
        "logs:user_../x:1": ("events", None),  # not canonical: no file for it
        "logpipe:claim:{logs:user_c:3}": ("claim", EventKey("c", 3)),
        "logpipe:quarantine:{logs:user_a:1}": ("quarantine", EventKey("a", 1)),
        STATS: ("events", None),  # a pattern of "*" matches it: reported, never drained
    }
    claims = [k.name async for k in buf.scan_keys("logs:user_*:*", ("claim",))]
    assert claims == ["logpipe:claim:{logs:user_c:3}"]
