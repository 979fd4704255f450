"""Cluster mode against a real Redis Cluster (tests/redis_cluster.py: 3 masters, 3
replicas): the write path split by slot, the drainer on every master, the summed
counters, dedupe, rate limits, backpressure and WAIT per master."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster as SyncCluster

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer, Charge, RateLimit, RateLimitedErrors
from logpipe_cli.drainer import Drainer
from logpipe_cli.errors import BufferFullError
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import Settings
from logpipe_cli.sink import path_for
from logpipe_cli.slots import key_slot
from tests.conftest import MakeSettings
from tests.redis_cluster import RedisCluster

pytestmark = pytest.mark.redis

DAY = 19675
USERS = [f"u{i}" for i in range(40)]


def line(user: str, n: int, day: int = DAY) -> bytes:
    body = {"user_id": user, "event": f"e{n}", "timestamp": day * 86400 + n}
    return json.dumps(body, separators=(",", ":")).encode()


def cluster_settings(
    make_settings: MakeSettings, cluster: RedisCluster, tmp_path: Path, **redis_cfg: Any
) -> Settings:
    return make_settings(
        cluster.seed_url,
        redis={"mode": "cluster", **redis_cfg},
        drainer={"logs_dir": str(tmp_path / "logs"), "lease_seconds": 5.0},
    )


def items_for(users: list[str], per_user: int) -> list[tuple[str, bytes]]:
    return [(EventKey(u, DAY).key, line(u, n)) for n in range(per_user) for u in users]


def test_a_flush_over_many_slots_is_stored_drained_and_counted(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    items = items_for(USERS, 3)
    assert len({key_slot(k) for k, _ in items}) > 10  # spread over slots and masters

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            assert buffer.sharded is not None
            await buffer.append(items, "flush-1")
            await buffer.append(items, "flush-1")  # sent again: stored once
            counters, _ = await buffer.counters()
            assert counters["buffered"] == counters["accepted"] == len(items)
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report
            assert report.events == len(items)
            counters, last = await buffer.counters()
            assert counters["buffered"] == 0
            assert counters["drained_events"] == len(items)
            assert last["ok"] == "1"

    asyncio.run(go())
    for u in USERS:
        path = path_for(Path(settings.drainer.logs_dir), EventKey(u, DAY))
        assert path.read_bytes().splitlines() == [line(u, n) for n in range(3)]
    assert redis_cluster.drained()


def test_companions_share_their_lists_slot(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    ek = EventKey("q", DAY)
    bad = b"not json"

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append([(ek.key, line("q", 1)), (ek.key, bad)])
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report

    asyncio.run(go())
    client = SyncCluster.from_url(redis_cluster.seed_url)
    try:
        assert client.lrange(ek.quarantine, 0, -1) == [bad]
        assert client.keyslot(ek.quarantine) == client.keyslot(ek.key)
    finally:
        client.close()


def test_dedupe_finds_a_retried_event_and_returns_its_index(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    items = items_for(USERS[:10], 2)
    ids = [f"id-{i}" for i in range(len(items))]

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            first = await buffer.store(items, ids=ids)
            assert first.duplicates == []
            # a retry of half of them (new flush id), and two new events
            again = items[:10] + items_for(["new"], 2)
            again_ids = ids[:10] + ["n1", "n2"]
            second = await buffer.store(again, ids=again_ids)
            assert second.duplicates == list(range(10))
            counters, _ = await buffer.counters()
            assert counters["buffered"] == len(items) + 2

    asyncio.run(go())


def test_rate_limit_refuses_without_storing_and_refunds_the_others(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    rate = RateLimit(events_per_second=1.0, burst=5)
    items = items_for(["a", "b"], 4)  # 8 events: 4 of a's request, 4 of b's

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            charges = [Charge("token:a", 4), Charge("token:b", 4)]
            await buffer.append(items, charges=charges, rate=rate)
            # a has 1 token left, b too: a request of b for 3 is refused, a's for 1 passes,
            # and, the flush refused, a's charge is given back
            more = [(EventKey("a", DAY).key, line("a", 9))] + [
                (EventKey("b", DAY).key, line("b", 9 + n)) for n in range(3)
            ]
            with pytest.raises(RateLimitedErrors) as caught:
                await buffer.append(
                    more, charges=[Charge("token:a", 1), Charge("token:b", 3)], rate=rate
                )
            assert list(caught.value.refused) == [1]
            counters, _ = await buffer.counters()
            assert counters["buffered"] == 8
            # a's token is still there (refunded): a request of 1 passes
            await buffer.append(more[:1], charges=[Charge("token:a", 1)], rate=rate)

    asyncio.run(go())


def test_backpressure_refuses_once_the_summed_counters_are_at_the_limit(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path, max_buffered_events=10)

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append(items_for(USERS[:10], 1))
        # a new process (fresh figure): 10 buffered, one more is over
        async with Buffer.connect(settings.redis) as buffer:
            with pytest.raises(BufferFullError):
                await buffer.append(items_for(["x"], 1))

    asyncio.run(go())


def test_min_replicas_waits_on_every_master(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path, min_replicas=1)
    items = items_for(USERS, 2)

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append(items)
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report
            assert report.events == len(items)

    asyncio.run(go())
    # every event is on its master's replica too: the replicas hold the drained state
    assert redis_cluster.drained()


def test_per_slot_keys_live_in_their_slot() -> None:
    for slot in (0, 1, 5000, 16383):
        for name in (keys.STATS, keys.FLUSHES, keys.REPLICATED):
            assert key_slot(keys.slot_key(name, slot)) == slot
