"""Cluster mode against a real Redis Cluster (tests/redis_cluster.py: 3 masters, 3
replicas): the write path split by slot, the drainer on every master, the summed
counters, dedupe, rate limits, backpressure and WAIT per master."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from redis.cluster import RedisCluster as SyncCluster

from logpipe_cli import keys
from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer, Charge, RateLimit, RateLimitedErrors
from logpipe_cli.drainer import Drainer
from logpipe_cli.errors import BufferFullError, RedisUnavailableError, ReplicasMissingError
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import Settings
from logpipe_cli.sink import path_for
from logpipe_cli.slots import key_slot
from tests.cli.conftest import Invoke
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


def test_a_drain_after_the_script_caches_were_flushed_writes_every_event_once(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    # a claim that meets NOSCRIPT did not run, and the read sent right after it in the
    # same pipeline read the claim before it existed: both are sent again, together
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    items = items_for(USERS, 4)

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append(items, "flush-noscript")
            for master in redis_cluster.masters():
                with redis_cluster.client(master.port) as c:
                    c.script_flush()
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report
            assert report.events == len(items)

    asyncio.run(go())
    for u in USERS:
        path = path_for(Path(settings.drainer.logs_dir), EventKey(u, DAY))
        assert path.read_bytes().splitlines() == [line(u, n) for n in range(4)]
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
            again_ids = [*ids[:10], "n1", "n2"]
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


def test_a_flush_sent_again_is_not_charged_again_after_another_process_charged(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """A flush sent again under its id (its reply lost) after another API process's
    flush charged the same token's bucket: RATE remembers only that last id, so only
    this process's memory of its own charge keeps it from paying twice (and from being
    refused as a whole with some of its slots already stored)."""
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    rate = RateLimit(events_per_second=0.001, burst=5)
    items = items_for(["a", "b", "c"], 1)

    async def go() -> None:
        async with (
            Buffer.connect(settings.redis) as first,
            Buffer.connect(settings.redis) as other,
        ):
            await first.append(items, "flush-f", charges=[Charge("token:p", 3)], rate=rate)
            await other.append(
                items_for(["d"], 1), "flush-g", charges=[Charge("token:p", 1)], rate=rate
            )
            # 1 token left: paying 3 again would be refused
            await first.append(items, "flush-f", charges=[Charge("token:p", 3)], rate=rate)
            counters, _ = await first.counters()
            assert counters["buffered"] == 4  # each event once
            await first.append(items_for(["e"], 1), charges=[Charge("token:p", 1)], rate=rate)
            with pytest.raises(RateLimitedErrors):
                await first.append(items_for(["e"], 1), charges=[Charge("token:p", 1)], rate=rate)

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


def users_in_one_slot(n: int) -> list[str]:
    """``n`` users whose lists share a hash slot (found by trying names)."""
    by_slot: dict[int, list[str]] = {}
    for i in range(1_000_000):
        user = f"s{i}"
        same = by_slot.setdefault(key_slot(EventKey(user, DAY).key), [])
        same.append(user)
        if len(same) == n:
            return same
    raise AssertionError("no slot with enough users")


async def append_until_stored(
    buffer: Buffer,
    items: list[tuple[str, bytes]],
    flush_id: str,
    tried: threading.Event | None = None,
    errors: list[str] | None = None,
) -> int:
    """Send one flush again under its id until it is answered (as the API does); returns
    how many times it failed. ``tried`` is set after each attempt."""
    failures = 0
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await buffer.append(items, flush_id)
            return failures
        except RedisUnavailableError as exc:
            if errors is not None:
                errors.append(str(exc))
            failures += 1
            if tried is not None:
                tried.set()
            assert asyncio.get_running_loop().time() < deadline, "never stored"
            await asyncio.sleep(0.05)


def test_a_slot_resharded_under_writes_loses_and_repeats_nothing(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    users = users_in_one_slot(3)
    slot = key_slot(EventKey(users[0], DAY).key)
    source = redis_cluster.node_for_slot(slot)
    target = next(m for m in redis_cluster.masters() if m is not source)
    sent: dict[str, list[bytes]] = {u: [] for u in users}
    tried = threading.Event()
    errors: list[str] = []

    def between() -> None:
        # a write tried between every two steps of the move, while the slot is split
        # (it is answered TRYAGAIN, or ASK, until its keys are together again)
        tried.clear()
        assert tried.wait(10), "no write during the move"

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            n = 0

            async def write() -> None:
                nonlocal n
                items = [(EventKey(u, DAY).key, line(u, n)) for u in users]
                await append_until_stored(buffer, items, f"f{n}", tried, errors)
                for u, (_, value) in zip(users, items, strict=True):
                    sent[u].append(value)
                n += 1
                tried.set()

            for _ in range(5):
                await write()
            move = asyncio.create_task(
                asyncio.to_thread(redis_cluster.migrate_slots, [slot], target, between=between)
            )
            while not move.done():
                await write()
            assert await move == 5  # 3 lists, the slot's counters and flush ids
            await write()
            assert redis_cluster.node_for_slot(slot) is target
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report
            counters, _ = await buffer.counters()
            assert counters["buffered"] == 0
            assert counters["accepted"] == counters["drained_events"] == 3 * n

    asyncio.run(go())
    # writes met the split slot (TRYAGAIN until its keys were together) and were sent again
    assert any("resharding" in e for e in errors), errors[:3]
    for u in users:
        path = path_for(Path(settings.drainer.logs_dir), EventKey(u, DAY))
        assert path.read_bytes().splitlines() == sent[u]


def test_a_killed_master_is_replaced_without_a_restart(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path, min_replicas=1)
    after = cluster_settings(make_settings, redis_cluster, tmp_path)
    first = items_for(USERS, 2)
    second = [(k, v.replace(b'"e', b'"f')) for k, v in first]

    async def go() -> int:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append(first, "first")  # on every master's replica (WAIT 1)
            redis_cluster.kill_master()
            # the same client (min_replicas 0 now: the promoted replica has none) finds
            # the new master once the cluster has promoted it
            buffer.cfg = after.redis
            assert buffer.sharded is not None
            buffer.sharded.cfg = after.redis
            failures = await append_until_stored(buffer, second, "second")
            report = await Drainer(buffer, after.drainer).drain_once()
            assert report.ok, report
            assert report.events == len(first) + len(second)
            return failures

    failures = asyncio.run(go())
    assert failures > 0  # it did meet the dead master
    for u in USERS:
        path = path_for(Path(settings.drainer.logs_dir), EventKey(u, DAY))
        got = path.read_bytes().splitlines()
        want = [v for k, v in first + second if k == EventKey(u, DAY).key]
        assert got == want


def test_the_api_stores_counts_drains_and_reads_back_in_cluster_mode(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    events = [
        {"user_id": u, "event": "e", "timestamp": DAY * 86400 + 5, "event_id": f"id-{u}"}
        for u in USERS
    ]
    body = "\n".join(json.dumps(e) for e in events)
    ndjson = {"content-type": "application/x-ndjson"}
    with TestClient(create_app(settings)) as client:
        assert client.post("/log", json=events[0]).status_code == 200
        resp = client.post("/logs", content=body, headers=ndjson)
        assert resp.status_code == 200, resp.text
        # the first one again (its id): a duplicate, found in its list's slot
        assert resp.json() == {
            "accepted": len(USERS),
            "duplicates": 1,
            "duplicate_indexes": [0],
        }
        stats = client.get("/stats").json()
        assert stats["buffered"]["events"] == len(USERS)
        drained = client.post("/drain")
        assert drained.status_code == 200, drained.text
        assert drained.json()["events"] == len(USERS)
        got = client.get("/logs", params={"user_id": USERS[3], "since": 0}).json()
        assert [e["event_id"] for e in got["events"]] == [f"id-{USERS[3]}"]
        assert client.get("/stats").json()["totals"]["drained_events"] == len(USERS)


def test_redis_check_lists_every_master_with_its_slots_and_replica(
    redis_cluster: RedisCluster, invoke: Invoke
) -> None:
    env = {"LOGPIPE_REDIS_URL": redis_cluster.seed_url, "LOGPIPE_REDIS_MODE": "cluster"}
    result = invoke("redis-check", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    masters = data["masters"]
    assert sorted(m["address"] for m in masters) == sorted(
        f"127.0.0.1:{m.port}" for m in redis_cluster.masters()
    )
    assert sum(m["slots"] for m in masters) == 16384
    assert all(len(m["replicas"]) == 1 for m in masters)
    assert data["replication"]["mode"] == "cluster"
    assert any("min_replicas is 0" in w for w in data["warnings"])
    table = invoke("redis-check", env=env)
    assert table.exit_code == 0, table.stderr
    assert "cluster" in table.stdout
    assert "slots" in table.stdout


def test_two_drainers_share_the_keys_of_every_master(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    items = items_for(USERS, 5)

    async def go() -> None:
        async with (
            Buffer.connect(settings.redis) as one,
            Buffer.connect(settings.redis) as two,
        ):
            await one.append(items)
            reports = await asyncio.gather(
                Drainer(one, settings.drainer, "one").drain_once(),
                Drainer(two, settings.drainer, "two").drain_once(),
            )
            assert all(r.ok for r in reports), reports
            # each key drained by one of them (the other found it busy, or empty)
            assert sum(r.events for r in reports) == len(items)

    asyncio.run(go())
    for u in USERS:
        path = path_for(Path(settings.drainer.logs_dir), EventKey(u, DAY))
        assert path.read_bytes().splitlines() == [line(u, n) for n in range(5)]
    assert redis_cluster.drained()


def test_with_min_replicas_a_master_without_replica_keeps_its_keys_until_one_is_back(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = cluster_settings(make_settings, redis_cluster, tmp_path, min_replicas=1)
    items = items_for(USERS, 2)
    victim = redis_cluster.masters()[0]
    on_victim = {
        k for k, _ in items if redis_cluster.node_for_slot(key_slot(k)).port == victim.port
    }
    assert 0 < len(on_victim) < len(USERS)

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append(items)
            _, replica = redis_cluster.kill_master(victim)
            await asyncio.to_thread(redis_cluster.wait_promoted, replica)
            # the promoted replica has no replica: its keys stay, the others drain
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report
            assert report.events == 2 * (len(USERS) - len(on_victim))
            # and a write to one of its slots is refused (503), not acknowledged unsafely
            late = [(next(iter(on_victim)), line("late", 1))]
            with pytest.raises(ReplicasMissingError, match="min_replicas"):
                await buffer.append(late)
            # known short now: the next one is refused before it is written
            with pytest.raises(ReplicasMissingError, match="not stored"):
                await buffer.append(late)
            # while a flush for the other masters goes through
            other = next(k for k, _ in items if k not in on_victim)
            await buffer.append([(other, line("other", 1))])
            await asyncio.to_thread(redis_cluster.restore)  # the dead node rejoins
            report = await Drainer(buffer, settings.drainer).drain_once()
            assert report.ok, report

    asyncio.run(go())
    for u in USERS:
        path = path_for(Path(settings.drainer.logs_dir), EventKey(u, DAY))
        assert path.read_bytes().splitlines()[:2] == [line(u, n) for n in range(2)]
    assert redis_cluster.drained()
