"""Attacks on cluster mode's write path where a flush is split over slots: one slot
refusing its share must not make the shares that were stored be stored again.

In standalone mode APPEND writes all or nothing, so the committer sends the requests
of a refused flush that were not at fault again as a new flush. In cluster mode each slot
runs its own APPEND: the slots without the bad key stored their events, and a new flush
(new id) would store them a second time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from redis.cluster import RedisCluster as SyncCluster

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import WrongTypeError
from logpipe_cli.keys import EventKey
from logpipe_cli.slots import key_slot
from tests.conftest import MakeSettings
from tests.redis_cluster import RedisCluster

pytestmark = pytest.mark.redis
DAY = 19675


def line(user: str, n: int) -> bytes:
    body = {"user_id": user, "event": f"e{n}", "timestamp": DAY * 86400 + n}
    return json.dumps(body, separators=(",", ":")).encode()


def test_a_request_sharing_a_flush_with_a_wrong_type_key_is_stored_once(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    settings = make_settings(
        redis_cluster.seed_url,
        redis={"mode": "cluster"},
        drainer={"logs_dir": str(tmp_path / "logs")},
    )
    bad, good = EventKey("bad", DAY), EventKey("good", DAY)
    other = EventKey("other", DAY)
    assert len({key_slot(bad.key), key_slot(good.key), key_slot(other.key)}) == 3
    client = SyncCluster.from_url(redis_cluster.seed_url)
    client.set(bad.key, "a string, not a list")

    async def go() -> tuple[BaseException | list[int], ...]:
        async with Buffer.connect(settings.redis) as buffer:
            committer = GroupCommitter(buffer, retry_s=5)
            # one flush: the bad request also writes to another slot
            return tuple(
                await asyncio.gather(
                    committer.append([(bad.key, line("bad", 1)), (other.key, line("other", 1))]),
                    committer.append([(good.key, line("good", 1))]),
                    return_exceptions=True,
                )
            )

    try:
        refused, stored = asyncio.run(go())
        assert isinstance(refused, WrongTypeError)
        assert stored == []
        assert client.lrange(good.key, 0, -1) == [line("good", 1)]  # once
    finally:
        client.close()


def test_keys_of_a_slot_being_moved_are_read_on_their_new_owner(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """Mid-resharding, a key already moved is answered ``ASK`` by the old owner. redis-py
    sends ``ASKING`` and the command on two pooled connections once it holds several to
    the new owner, and gives up ("TTL exhausted"): the counters and the drain's reads of
    such a key failed until the whole slot had moved."""
    settings = make_settings(
        redis_cluster.seed_url,
        redis={"mode": "cluster"},
        drainer={"logs_dir": str(tmp_path / "logs")},
    )
    ek = EventKey("moving", DAY)
    slot = key_slot(ek.key)
    source = redis_cluster.node_for_slot(slot)
    target = next(m for m in redis_cluster.masters() if m is not source)

    async def store() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append([(ek.key, line("moving", n)) for n in range(3)])

    asyncio.run(store())
    # the slot half-moved: IMPORTING/MIGRATING set, the list and the slot's counters
    # moved (the flush-id table stays behind)
    with redis_cluster.client(target.port) as t, redis_cluster.client(source.port) as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", redis_cluster.node_id(source))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", redis_cluster.node_id(target))
        stats = keys.slot_key(keys.STATS, slot)
        s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", ek.key, stats)

    async def read() -> tuple[list[object], dict[str, int]]:
        async with Buffer.connect(settings.redis) as buffer:
            sharded = buffer.sharded
            assert sharded is not None
            await sharded.client.initialize()
            node = sharded.client.get_node(host="127.0.0.1", port=target.port)
            assert node is not None
            # several connections to the new owner in the pool, as under load
            await asyncio.gather(*(sharded.client.ping(target_nodes=node) for _ in range(4)))
            got = await sharded.send("reading events", [("LRANGE", ek.key, 0, -1)], [slot])
            counters, _ = await buffer.counters()
            return got, counters

    try:
        got, counters = asyncio.run(read())
        assert got == [[line("moving", n) for n in range(3)]]
        assert counters["buffered"] == 3
    finally:
        redis_cluster.migrate_slots([slot], target)  # finish the move
