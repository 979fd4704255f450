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
