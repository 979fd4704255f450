"""The Redis Cluster fixture itself (tests/redis_cluster.py): what the cluster fault tests
and the cluster bench stand on, checked with a plain cluster client and no logpipe."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient

from tests.redis_cluster import MASTERS, RedisCluster

pytestmark = [pytest.mark.redis]


def test_three_masters_with_a_replica_each_survive_a_killed_master_and_a_reshard(
    redis_cluster: RedisCluster,
) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == MASTERS
    assert all(redis_cluster.online_replicas(m) == 1 for m in masters)

    client = ClusterClient.from_url(redis_cluster.seed_url)
    try:
        keys = [f"k{i}" for i in range(60)]
        for k in keys:
            client.rpush(k, "v")
            assert client.wait(1, 2000) == 1  # on the master's replica before we go on

        # SIGKILL a master: its replica takes over and holds every key that was on it
        old, replica = redis_cluster.kill_master(masters[0])
        redis_cluster.wait_promoted(replica)
        assert replica in redis_cluster.masters()
        assert old not in redis_cluster.alive()
        # a fresh client, seeded at a live node, finds every key
        client.close()
        client = ClusterClient.from_url(replica.url)
        assert [client.llen(k) for k in keys] == [1] * len(keys)

        # move a slot that holds keys to another master, key by key
        slot = redis_cluster.keyslot("k0")
        source = redis_cluster.node_for_slot(slot)
        target = next(m for m in redis_cluster.masters() if m is not source)
        in_slot = [k for k in keys if redis_cluster.keyslot(k) == slot]
        steps: list[int] = []
        moved = redis_cluster.migrate_slots([slot], target, between=lambda: steps.append(1))
        assert moved == len(in_slot) == len(steps)
        assert redis_cluster.node_for_slot(slot) is target
        with redis.Redis(port=target.port) as t:
            assert all(t.llen(k) == 1 for k in in_slot)
        assert [client.llen(k) for k in keys] == [1] * len(keys)
    finally:
        client.close()

    # the per-test fixture brings the killed node back as a replica and empties it all
    redis_cluster.restore()
    assert len(redis_cluster.alive()) == 2 * MASTERS
    assert old not in redis_cluster.masters()
    redis_cluster.flush()
    assert redis_cluster.drained()
