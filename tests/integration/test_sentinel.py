"""Sentinel mode against a real Sentinel setup: discovery, failover following, WAIT
shortfalls (503, and a drainer that stops before writing), and redis-check's report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.drainer import Drainer
from logpipe_cli.health import check
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import Settings
from tests.cli.conftest import Invoke
from tests.conftest import MakeSettings
from tests.redis_sentinel import MASTER_NAME, SentinelSetup, wait_for

pytestmark = pytest.mark.redis

DAY = 19675


def line(user: str, n: int) -> bytes:
    body = {"user_id": user, "event": f"e{n}", "timestamp": DAY * 86400 + n}
    return json.dumps(body, separators=(",", ":")).encode()


def sentinel_settings(
    make_settings: MakeSettings, setup: SentinelSetup, **redis_cfg: Any
) -> Settings:
    return make_settings(
        "redis://127.0.0.1:1",  # only its credentials and db count in sentinel mode
        redis={
            "mode": "sentinel",
            "sentinels": setup.sentinel_addresses,
            "sentinel_master": MASTER_NAME,
            **redis_cfg,
        },
    )


@pytest.fixture(scope="module")
def steady_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """One setup for the tests that neither kill nor demote a server: a start costs 2-3 s
    (the Sentinels find each other through hello messages sent every 2 s)."""
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def steady_sentinel(steady_setup: SentinelSetup) -> SentinelSetup:
    """The shared setup, emptied on every server, and as the last test found it: the
    first server the master, both replicas online, every Sentinel agreeing."""
    master, *replicas = steady_setup.servers
    with master.client() as c:
        c.flushall()
        assert c.wait(len(replicas), 5000) == len(replicas), "a replica fell behind"
    steady_setup.wait_ready(master.port, len(replicas))
    for r in replicas:
        with r.client() as c:
            assert c.dbsize() == 0
    return steady_setup


def values(port: int, key: str) -> list[bytes]:
    with redis.Redis(port=port) as c:
        return list(c.lrange(key, 0, -1))


def test_writes_reach_the_master_the_sentinels_name_and_min_replicas_copies(
    make_settings: MakeSettings, steady_sentinel: SentinelSetup
) -> None:
    settings = sentinel_settings(make_settings, steady_sentinel, min_replicas=2)
    key = EventKey("a", DAY).key

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            await buffer.append([(key, line("a", 1))])

    asyncio.run(go())
    master, *replicas = steady_sentinel.servers
    assert values(master.port, key) == [line("a", 1)]
    # WAIT 2 answered only once both replicas had it: no need to wait here
    for r in replicas:
        assert values(r.port, key) == [line("a", 1)]


def test_the_client_follows_a_failover_without_a_restart(
    make_settings: MakeSettings, sentinel_setup: SentinelSetup
) -> None:
    settings = sentinel_settings(make_settings, sentinel_setup, min_replicas=1)
    key = EventKey("a", DAY).key

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            committer = GroupCommitter(buffer, retry_s=30)
            await committer.append([(key, line("a", 1))])
            old = sentinel_setup.kill_master()
            # sent while the master is dead: resent (same flush id) until the new one answers
            await committer.append([(key, line("a", 2))])
            new = sentinel_setup.master()
            assert new.port != old.port
            assert values(new.port, key) == [line("a", 1), line("a", 2)]

    asyncio.run(go())


def test_a_demoted_master_still_answering_is_left_for_the_new_one(
    make_settings: MakeSettings, sentinel_setup: SentinelSetup
) -> None:
    # SENTINEL FAILOVER: the old master lives on, and takes writes until Sentinel turns it
    # into a replica; with min_replicas 1 its WAIT falls short (its replicas left), so no
    # write is acknowledged there, and the committer sends it again to the new master
    settings = sentinel_settings(make_settings, sentinel_setup, min_replicas=1)
    key = EventKey("a", DAY).key

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            committer = GroupCommitter(buffer, retry_s=30)
            await committer.append([(key, line("a", 1))])
            old = sentinel_setup.master()
            with sentinel_setup.sentinels[0].client() as s:
                s.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
            new = sentinel_setup.wait_failover(old.port)
            await committer.append([(key, line("a", 2))])
            assert values(new.port, key) == [line("a", 1), line("a", 2)]
            # once demoted, the old master holds what the new one does: nothing was
            # acknowledged on it alone
            wait_for(lambda: values(old.port, key) == values(new.port, key), "the resync")

    asyncio.run(go())


def test_too_few_replicas_is_a_503_that_says_why(
    make_settings: MakeSettings, steady_sentinel: SentinelSetup
) -> None:
    settings = sentinel_settings(
        make_settings, steady_sentinel, min_replicas=3, replica_timeout_seconds=0.1
    )
    event = {"user_id": "a", "event": "e", "timestamp": DAY * 86400}
    with TestClient(create_app(settings)) as client:
        resp = client.post("/log", json=event)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.json() == {
        "detail": "stored on the Redis master but written on only 2 of 3 replicas "
        "within 0.1 s (redis.min_replicas)"
    }


def test_a_drainer_without_enough_replicas_stops_before_writing_a_file(
    make_settings: MakeSettings, steady_sentinel: SentinelSetup, tmp_path: Path
) -> None:
    ok = sentinel_settings(make_settings, steady_sentinel)
    short = sentinel_settings(
        make_settings, steady_sentinel, min_replicas=3, replica_timeout_seconds=0.1
    )
    ek = EventKey("a", DAY)

    async def go() -> None:
        async with Buffer.connect(ok.redis) as buffer:
            await buffer.append([(ek.key, line("a", 1))])
        async with Buffer.connect(short.redis) as buffer:
            report = await Drainer(buffer, short.drainer).drain_once(wait_for_busy=False)
        assert report.errors == [
            "claims recorded on the Redis master but written on only 2 of 3 replicas "
            "within 0.1 s (redis.min_replicas)"
        ]
        assert report.events == 0
        # its file may have been opened (and locked) before the claim failed to copy
        assert all(p.stat().st_size == 0 for p in (tmp_path / "logs").rglob("*.jsonl"))
        # the events wait in Redis (claimed) for a drainer that can replicate; it takes
        # the claim over once the first one's lease runs out
        async with Buffer.connect(ok.redis) as buffer:
            report = await Drainer(buffer, ok.drainer).drain_once()
        assert report.errors == []
        assert report.events == 1

    asyncio.run(go())


def test_redis_check_reports_master_replicas_and_warns_without_min_replicas(
    make_settings: MakeSettings, steady_sentinel: SentinelSetup, invoke: Invoke
) -> None:
    settings = sentinel_settings(make_settings, steady_sentinel)

    async def go() -> None:
        async with Buffer.connect(settings.redis) as buffer:
            report = await check(buffer, settings)
        rep = report.replication
        assert rep is not None
        assert rep.mode == "sentinel"
        assert rep.master == f"127.0.0.1:{steady_sentinel.servers[0].port}"
        assert sorted(r.address for r in rep.replicas) == sorted(
            f"127.0.0.1:{s.port}" for s in steady_sentinel.servers[1:]
        )
        assert rep.online == 2
        assert any("redis.min_replicas is 0" in w for w in report.warnings)

    asyncio.run(go())
    env = {
        "LOGPIPE_REDIS_MODE": "sentinel",
        "LOGPIPE_REDIS_SENTINELS": ",".join(steady_sentinel.sentinel_addresses),
        "LOGPIPE_REDIS_SENTINEL_MASTER": MASTER_NAME,
        "LOGPIPE_REDIS_MIN_REPLICAS": "1",
    }
    result = invoke("redis-check", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["replication"]["master"] == f"127.0.0.1:{steady_sentinel.servers[0].port}"
    assert len(data["replication"]["replicas"]) == 2
    assert not any("min_replicas" in w for w in data["warnings"])
    table = invoke("redis-check", env=env)
    assert table.exit_code == 0, table.stderr
    assert "sentinel" in table.stdout
    assert f"127.0.0.1:{steady_sentinel.servers[0].port}" in table.stdout
