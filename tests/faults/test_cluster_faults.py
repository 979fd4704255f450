"""Faults 9, 9b and 9c: Redis Cluster (3 masters, 3 replicas) under load.

9. A master SIGKILLed under load: its replica takes over. With ``redis.min_replicas = 1``
   every ``200`` waited until the master's replica had the events (``WAIT`` per master),
   and the drainer's claims and acks were copied the same way, so the promoted replica
   holds every acknowledged event and every pending offset. The promoted master has no
   replica of its own until the killed node is restarted and rejoins as one, so its
   slots cannot be written meanwhile (``WAIT`` cannot succeed); the test restarts it
   within ``redis.write_retry_seconds``. A real ``logpipe serve`` and a looping
   ``logpipe drain`` follow the new slot map by themselves (no restart). 9b kills the
   drainer too, while the failover is under way, and lets a second drainer finish.
9c. Slots resharded under load: the slots of some of the users' keys move to another
   master key by key (``MIGRATE``), with events written and drained while the keys of a
   slot are split between the two nodes (the ``ASK``/``TRYAGAIN`` window), and then back.

Each asserts 0 lost, 0 duplicated, 0 torn against what got ``200``, and nothing left in
any master once drained. The cluster is the session's (tests/redis_cluster.py), made whole
and empty again before each test.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.report import record
from tests.processes import (
    BASE_TS,
    DAY_S,
    Launcher,
    LoadGenerator,
    LogpipeProcess,
    check_files,
    wait_until,
)
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.redis]

USERS = [f"k{i}" for i in range(12)]
#: the replies a node gives for a slot whose keys are being moved away
SPLIT = ("ASK", "TRYAGAIN")
#: slots moved by the reshard test (each holds one user's day and its companions)
RESHARD_SLOTS = 4
#: the drainer's per-list keys (claim, lease, pending offset, holder record)
DRAIN_KEYS = ("logpipe:claim:", "logpipe:lease:", "logpipe:offset:", "logpipe:holder:")


def gained(load: LoadGenerator, n: int) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``n`` more events answered ``200`` than so far."""
    start = load.counts()[200]
    return lambda: load.counts()[200] >= start + n


def event_keys(users: list[str]) -> list[str]:
    """The Redis lists the load generator writes to (each user has two days, see
    ``make_event``)."""
    days = (BASE_TS // DAY_S, (BASE_TS - DAY_S) // DAY_S)
    return [f"logs:user_{u}:{d}" for u in users for d in days]


def busiest_master(cluster: RedisCluster, keys: list[str]) -> tuple[RedisServer, int]:
    """The master serving the most of ``keys``, and how many it serves."""
    owners = Counter(cluster.node_for_slot(cluster.keyslot(k)).port for k in keys)
    port, n = owners.most_common(1)[0]
    return next(m for m in cluster.masters() if m.port == port), n


def env_for(
    launcher: Launcher, cluster: RedisCluster, seed: RedisServer, logs: Path
) -> dict[str, str]:
    return launcher.env(
        seed.url,
        logs,
        **cluster.settings(
            redis_min_replicas=1,
            redis_replica_timeout_seconds=1,
            # a write is sent again under its flush id while the replica takes over (a
            # few seconds), so most requests ride through the failover with a 200
            redis_write_retry_seconds=10,
            redis_timeout_seconds=2,
        ),
        drainer_lease_seconds=1,
        drainer_batch_events=50,
        drainer_interval_seconds=0.1,
    )


@pytest.mark.parametrize("kill_drainer", [False, True], ids=["master", "master+drainer"])
def test_cluster_master_killed_under_load_loses_and_duplicates_nothing(
    launcher: Launcher,
    redis_cluster: RedisCluster,
    tmp_path: Path,
    fault_report: Path,
    kill_drainer: bool,
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    victim, keys_on_victim = busiest_master(redis_cluster, event_keys(USERS))
    assert keys_on_victim > 0
    seed = next(m for m in redis_cluster.masters() if m is not victim)
    env = env_for(launcher, redis_cluster, seed, logs)
    api = launcher.api(env)
    drain = launcher.start(["drain"], env, name="drain-a")
    drainers: list[LogpipeProcess] = [drain]
    with LoadGenerator(api.url, USERS, threads=3, tag="cluster-failover") as load:
        wait_until(gained(load, 200), "events accepted before the failover", procs=[api.proc])
        _, replica = redis_cluster.kill_master(victim)
        if kill_drainer:
            drain.kill()  # mid-pass or between passes: its claims wait for drain-b
            drain = launcher.start(["drain"], env, name="drain-b")
            drainers.append(drain)
        redis_cluster.wait_promoted(replica)
        # With min_replicas 1 the promoted master has no replica to WAIT on (Redis moves a
        # replica to an orphaned master only from a master with two): its slots answer
        # 503 until the killed node is back, as an operator would bring it, and rejoins
        # as the new master's replica.
        redis_cluster.restore()
        wait_until(
            gained(load, 200),
            "the API to accept events with the replica promoted and the old master back",
            procs=[api.proc, drain],
        )
    sent = load.stop()
    wait_until(redis_cluster.drained, "the drainer to empty every master", procs=[drain])
    assert drain.terminate() == 0, drain.output()
    api.stop()

    delivery = check_files(logs, sent)
    counts = sent.count()
    name = "9b. Cluster master and drainer killed" if kill_drainer else "9. Cluster master killed"
    row = record(
        fault_report,
        "cluster_master_and_drainer" if kill_drainer else "cluster_master",
        f"{name} (3 masters + 3 replicas, min_replicas 1)",
        trials=1,
        sent=len(sent.events),
        **delivery.figures(),
        answered_503=counts[503],
        keys_on_killed_master=keys_on_victim,
        failover_to=f"port {replica.port}",
        seconds=round(time.monotonic() - started, 1),
    )
    assert set(counts) <= {200, 503}, f"answers other than 200 and 503: {counts}"
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert redis_cluster.leftovers()["buffered"] == 0


def test_cluster_slots_resharded_under_load_lose_and_duplicate_nothing(
    launcher: Launcher, redis_cluster: RedisCluster, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    keys = event_keys(USERS)
    source, _ = busiest_master(redis_cluster, keys)
    target = next(m for m in redis_cluster.masters() if m is not source)
    slots = sorted(
        {
            s
            for s in (redis_cluster.keyslot(k) for k in keys)
            if redis_cluster.node_for_slot(s) is source
        }
    )[:RESHARD_SLOTS]
    env = env_for(launcher, redis_cluster, target, logs)
    api = launcher.api(env)
    drain = launcher.start(["drain"], env, name="drain")
    moved = 0
    names: list[str] = []
    split_before = redis_cluster.errors_replied(*SPLIT)
    with LoadGenerator(api.url, USERS, threads=3, tag="reshard") as load:
        wait_until(gained(load, 100), "events accepted before the reshard", procs=[api.proc])

        def under_load() -> None:
            # between two MIGRATEs (a slot's keys split between the nodes): go on once a
            # client met the split (an ASK or TRYAGAIN reply) or the load moved on. Not
            # "3 more 200s" alone: a write whose keys are split gets TRYAGAIN until the
            # slot is finished, so waiting for it would stall both.
            before = redis_cluster.errors_replied(*SPLIT)
            more = gained(load, 3)
            wait_until(
                lambda: more() or redis_cluster.errors_replied(*SPLIT) > before,
                "a client to meet the half-moved slot, or events accepted meanwhile",
                procs=[api.proc, drain],
            )

        # there and back: every slot is split twice; whatever claims, leases and offsets
        # the drain loop holds then move with the lists (counted in the report)
        moved += redis_cluster.migrate_slots(slots, target, between=under_load, record=names)
        assert all(redis_cluster.node_for_slot(s) is target for s in slots)
        wait_until(gained(load, 100), "events accepted after the reshard", procs=[api.proc, drain])
        moved += redis_cluster.migrate_slots(slots, source, between=under_load, record=names)
        assert all(redis_cluster.node_for_slot(s) is source for s in slots)
        wait_until(gained(load, 100), "events accepted after resharding back", procs=[api.proc])
    sent = load.stop()
    split_replies = redis_cluster.errors_replied(*SPLIT) - split_before
    wait_until(redis_cluster.drained, "the drainer to empty every master", procs=[drain])
    assert drain.terminate() == 0, drain.output()
    api.stop()

    delivery = check_files(logs, sent)
    counts = sent.count()
    row = record(
        fault_report,
        "cluster_reshard",
        "9c. Cluster slots resharded (min_replicas 1)",
        trials=2,
        sent=len(sent.events),
        **delivery.figures(),
        answered_503=counts[503],
        slots_moved=len(slots),
        keys_migrated=moved,
        drain_keys_migrated=sum(1 for n in names if n.startswith(DRAIN_KEYS)),
        ask_or_tryagain_replies=split_replies,
        seconds=round(time.monotonic() - started, 1),
    )
    assert moved > 0
    assert split_replies > 0, "no client met a half-moved slot: the test tested nothing"
    assert set(counts) <= {200, 503}, f"answers other than 200 and 503: {counts}"
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert redis_cluster.leftovers()["buffered"] == 0
