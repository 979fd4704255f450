"""The Redis Cluster fixture itself (tests/redis_cluster.py): what the cluster fault tests
and the cluster bench stand on, checked with a plain cluster client and no logpipe. (Its
kill/promote/restore path runs in tests/faults/test_cluster_faults.py and
tests/integration/test_cluster_mode.py.)"""

from __future__ import annotations

import functools

import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient

from tests.redis_cluster import MASTERS, RedisCluster, wait_for

pytestmark = [pytest.mark.redis]


def dbsize(port: int) -> int:
    with redis.Redis(port=port) as c:
        return int(c.dbsize())


def has_keys(port: int, n: int) -> bool:
    return dbsize(port) == n


def test_three_masters_with_a_replica_each_and_a_slot_moved_key_by_key(
    redis_cluster: RedisCluster,
) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == MASTERS
    assert all(redis_cluster.online_replicas(m) == 1 for m in masters)
    assert redis_cluster.drained()

    keys = [f"k{i}" for i in range(60)]
    client = ClusterClient.from_url(redis_cluster.seed_url)
    try:
        for k in keys:
            client.rpush(k, "v")
        # the keys are spread over the masters, and each master's reach its replica
        sizes = {m.port: dbsize(m.port) for m in masters}
        assert sum(sizes.values()) == len(keys)
        assert all(sizes.values())
        for m in masters:
            replica = redis_cluster.replica_of(m).port
            wait_for(
                functools.partial(has_keys, replica, sizes[m.port]),
                f"the replica of {m.port} to have its keys",
            )

        # move a slot that holds keys to another master, key by key, while a client
        # asks for one of them: the source answers ASK mid-way
        slot = redis_cluster.keyslot("k0")
        source = redis_cluster.node_for_slot(slot)
        target = next(m for m in masters if m is not source)
        in_slot = [k for k in keys if redis_cluster.keyslot(k) == slot]
        asks = redis_cluster.errors_replied("ASK")
        moved = redis_cluster.migrate_slots([slot], target, between=lambda: client.llen("k0"))
        assert moved == len(in_slot)
        assert redis_cluster.errors_replied("ASK") > asks
        assert redis_cluster.node_for_slot(slot) is target
        with redis.Redis(port=target.port) as t:
            assert all(t.llen(k) == 1 for k in in_slot)
        assert [client.llen(k) for k in keys] == [1] * len(keys)
    finally:
        client.close()
    redis_cluster.flush()
    assert [dbsize(m.port) for m in redis_cluster.masters()] == [0] * MASTERS


def test_a_slot_a_failed_test_left_half_moved_is_made_stable_again(
    redis_cluster: RedisCluster,
) -> None:
    slot = redis_cluster.keyslot("k0")
    source = redis_cluster.node_for_slot(slot)
    target = next(m for m in redis_cluster.masters() if m is not source)
    with redis.Redis(port=target.port) as t, redis.Redis(port=source.port) as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", redis_cluster.node_id(source))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", redis_cluster.node_id(target))
        assert f"[{slot}->-" in s.execute_command("CLUSTER", "NODES").decode()
    redis_cluster.restore()
    for m in redis_cluster.masters():
        with redis.Redis(port=m.port) as c:
            assert "[" not in c.execute_command("CLUSTER", "NODES").decode()
    assert redis_cluster.node_for_slot(slot) is source
