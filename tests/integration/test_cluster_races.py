"""Cluster mode meeting a resharding at the wrong time: every interleaving replayed here
keeps the drain protocol's promise that a claim's offset is on a replica before its
batch is written to the file (``redis.min_replicas``).

Each test replays one interleaving deterministically on the real cluster of
tests/redis_cluster.py: a slot is moved (``MIGRATE`` key by key, as ``redis-cli
--cluster reshard`` does) behind the client's back, and a master's replica is stopped
(``SIGSTOP``) so that nothing written after reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import ClusterNode

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import Settings
from logpipe_cli.sharded import Sharded
from logpipe_cli.slots import key_slot
from tests.conftest import MakeSettings
from tests.redis_cluster import DEADLINE_S, RedisCluster
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

DAY = 19675
EK = EventKey("s", DAY)
#: how long a WAIT may wait for the stopped replica: it never answers
WAIT_MS = 300


def cluster_settings(
    make_settings: MakeSettings, cluster: RedisCluster, tmp_path: Path
) -> Settings:
    return make_settings(
        cluster.seed_url,
        redis={"mode": "cluster", "min_replicas": 1, "replica_timeout_seconds": WAIT_MS / 1000},
        drainer={"logs_dir": str(tmp_path / "logs")},
    )


@contextlib.contextmanager
def stopped(replica: RedisServer, master: RedisServer) -> Iterator[None]:
    """``replica`` stopped (``SIGSTOP``) while inside, once it has every write ``master``
    took so far: it takes no more of them, yet its master still counts it connected."""
    with RedisCluster.client(master.port) as c:
        c.set("caught-up{" + EK.key + "}", 1)
        assert c.execute_command("WAIT", 1, int(DEADLINE_S * 1000)) == 1
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)


def node_of(sharded: Sharded, server: RedisServer) -> ClusterNode:
    node = sharded.client.get_node(host="127.0.0.1", port=server.port)
    assert node is not None
    return node


def write_elsewhere(server: RedisServer) -> None:
    """A write on ``server`` through a connection of its own (as a drain's BEGIN comes on
    a connection of the master's pool, not the one WAIT is sent on)."""
    with RedisCluster.client(server.port) as c:
        c.set("probe{" + EK.key + "}", 1)


@pytest.mark.parametrize("moved", ["map-read-again", "map-stale", "mid-move"])
def test_wait_counts_no_replica_that_missed_the_write_after_the_masters_slot_moved(
    make_settings: MakeSettings, redis_cluster: RedisCluster, tmp_path: Path, moved: str
) -> None:
    """``wait_on`` says how many replicas have every write the master took before,
    whichever connection sent it: a WAIT counts what its own connection wrote, so an
    INCR goes first on that connection, to a key in a slot the master serves, picked
    once and kept. ``redis-cli --cluster reshard`` moves a master's lowest slots first:
    that very slot. Then the INCR went to the slot's new owner (sent there straight once
    the slot map was read again, as each drain pass does; or following ``MOVED`` from a
    stale map; or ``ASK`` while the slot was being moved) and the WAIT, alone on its
    connection, counted a replica that never got the write. A BEGIN "replicated" so
    has its batch written to the file; the master dies, its replica takes over without
    the claim's offset, and the next drainer writes the batch a second time."""
    settings = cluster_settings(make_settings, redis_cluster, tmp_path)
    master = redis_cluster.node_for_slot(key_slot(EK.key))
    replica = redis_cluster.replica_of(master)
    other = next(m for m in redis_cluster.masters() if m is not master)
    moved_slots: list[int] = []

    async def go() -> int:
        async with Buffer.connect(settings.redis) as buffer:
            sharded = buffer.sharded
            assert sharded is not None
            await buffer.append([(EK.key, b'{"e":1}')])  # replicated: WAIT 1 passed
            node = node_of(sharded, master)
            slot = sharded._a_slot_of(node)  # the slot its WAIT's INCR writes to
            assert slot != key_slot(EK.key)
            moved_slots.append(slot)
            if moved == "mid-move":
                return await wait_during_the_move(redis_cluster, sharded, node, slot, other)
            await asyncio.to_thread(redis_cluster.migrate_slots, [slot], other)
            if moved == "map-read-again":
                await buffer.find_drainable("logs:*")  # as each drain pass begins
            with stopped(replica, master):
                write_elsewhere(master)
                return await sharded.wait_on({node.name}, 1, WAIT_MS)

    try:
        assert asyncio.run(go()) == 0
    finally:
        redis_cluster.wait_healthy()
        redis_cluster.migrate_slots(moved_slots, master)  # as other tests expect it


async def wait_during_the_move(
    cluster: RedisCluster, sharded: Sharded, node: ClusterNode, slot: int, to: RedisServer
) -> int:
    """``wait_on`` for ``node`` (a write on it first, its replica stopped) while ``slot``
    is half moved to ``to``: the key its INCR names moved already, the slot still the
    master's (``ASK``)."""
    master = cluster.node_for_slot(slot)
    replica = cluster.replica_of(master)
    incr_key = keys.slot_key(keys.REPLICATED, slot)
    moving, go_on = threading.Event(), threading.Event()

    def between() -> None:
        moving.set()
        go_on.wait(DEADLINE_S)

    record: list[str] = []
    mover = asyncio.create_task(
        asyncio.to_thread(cluster.migrate_slots, [slot], to, between=between, record=record)
    )
    try:
        assert await asyncio.to_thread(moving.wait, DEADLINE_S)
        assert incr_key in record  # the slot's only key: moved, the slot not yet
        with stopped(replica, master):
            write_elsewhere(master)
            return await sharded.wait_on({node.name}, 1, WAIT_MS)
    finally:
        go_on.set()
        await mover
