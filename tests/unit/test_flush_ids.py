"""A write whose answer was lost is sent again under its id, and stored exactly once."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Sequence
from typing import Any

import fakeredis
import pytest

from logpipe_cli import committer
from logpipe_cli.buffer import Buffer
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import RedisUnavailableError
from logpipe_cli.keys import FLUSHES, STATS
from logpipe_cli.settings import RedisSettings

pytestmark = pytest.mark.anyio
ITEMS = [("logs:user_a:1", b'{"n":1}'), ("logs:user_a:1", b'{"n":2}')]


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    client = fakeredis.aioredis.FakeRedis()
    yield client
    await client.aclose()


async def test_the_same_flush_id_writes_once(fake: Any) -> None:
    buf = Buffer(fake, RedisSettings())
    assert await buf.append(ITEMS, "f1") == 2
    assert await buf.append(ITEMS, "f1") == 2  # buffered now, nothing added
    assert await fake.lrange("logs:user_a:1", 0, -1) == [b'{"n":1}', b'{"n":2}']
    assert await fake.hget(STATS, "accepted") == b"2"
    assert await fake.zscore(FLUSHES, "f1") is not None


async def test_different_flush_ids_write_twice(fake: Any) -> None:
    buf = Buffer(fake, RedisSettings())
    await buf.append(ITEMS, "f1")
    assert await buf.append(ITEMS, "f2") == 4
    assert await buf.append(ITEMS) == 6  # no id: a fresh one each call


class LostAnswerBuffer(Buffer):
    """Runs the first write, then fails as if Redis died before answering."""

    def __init__(self, client: Any, fail_times: int) -> None:
        super().__init__(client, RedisSettings())
        self.fail_times = fail_times
        self.ids: list[str | None] = []

    async def append(
        self, items: Sequence[tuple[str, bytes]], flush_id: str | None = None, **limits: Any
    ) -> int:
        self.ids.append(flush_id)
        result = await super().append(items, flush_id, **limits)
        if len(self.ids) <= self.fail_times:
            raise RedisUnavailableError("redis unavailable while storing events: lost")
        return result


async def test_committer_sends_a_lost_flush_again_under_its_id(fake: Any) -> None:
    buf = LostAnswerBuffer(fake, fail_times=2)
    await GroupCommitter(buf, retry_s=5.0).append(ITEMS)
    assert len(buf.ids) == 3
    assert buf.ids[0] is not None
    assert len(set(buf.ids)) == 1
    assert await fake.lrange("logs:user_a:1", 0, -1) == [b'{"n":1}', b'{"n":2}']


async def test_committer_gives_up_after_its_retry_budget(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The committer's clock moves only when it sleeps, so a starved machine cannot eat
    # the budget between two attempts: the schedule is exact.
    now = 0.0
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        nonlocal now
        now += delay
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(committer, "time", types.SimpleNamespace(monotonic=lambda: now))
    monkeypatch.setattr(asyncio, "sleep", sleep)
    buf = LostAnswerBuffer(fake, fail_times=1000)
    with pytest.raises(RedisUnavailableError):
        await GroupCommitter(buf, retry_s=0.2).append(ITEMS)
    assert slept == [0.05, 0.1]  # backing off; the next 0.2 s wait would overrun 0.2 s
    assert len(buf.ids) == 3
    # however often it was sent, it was stored once
    assert await fake.llen("logs:user_a:1") == 2


async def test_committer_without_budget_fails_at_once(fake: Any) -> None:
    buf = LostAnswerBuffer(fake, fail_times=1000)
    with pytest.raises(RedisUnavailableError):
        await GroupCommitter(buf, retry_s=0.0).append(ITEMS)
    assert len(buf.ids) == 1
