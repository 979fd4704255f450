"""A pipeline of scripts that meets NOSCRIPT (Redis restarted after the load) runs again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from logpipe_cli.buffer import Buffer
from logpipe_cli.errors import RedisUnavailableError
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import RedisSettings

pytestmark = pytest.mark.anyio
EK = EventKey("u", 1)


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    client = fakeredis.aioredis.FakeRedis()
    yield client
    await client.aclose()


def failing_execute(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    calls: list[int] = []
    real = Pipeline.execute

    async def execute(self: Pipeline, raise_on_error: bool = True) -> Any:
        calls.append(len(self.command_stack))
        if len(calls) <= times:
            await self.reset()  # as redis-py leaves a pipeline after a failed execute
            raise NoScriptError("NOSCRIPT No matching script.")
        return await real(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", execute)
    return calls


async def test_claims_are_sent_again_after_noscript(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fake.rpush(EK.key, b'{"a":1}')
    calls = failing_execute(monkeypatch, times=1)
    (claim,) = await Buffer(fake, RedisSettings()).claim([EK], "me", 5000)
    assert claim.status == "claimed"
    assert calls == [1, 1]  # the second pipeline was built anew, not sent empty
    assert await fake.lrange(EK.claim, 0, -1) == [b'{"a":1}']


async def test_noscript_twice_is_an_outage(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    failing_execute(monkeypatch, times=2)
    with pytest.raises(RedisUnavailableError, match="claiming keys"):
        await Buffer(fake, RedisSettings()).claim([EK], "me", 5000)
