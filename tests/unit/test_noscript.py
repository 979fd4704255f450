"""A drain call that meets NOSCRIPT (Redis restarted, or its script cache flushed) loads
the scripts and sends again exactly the commands that did not run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from logpipe_cli.buffer import AckItem, BeginItem, Buffer
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


def count_loads(monkeypatch: pytest.MonkeyPatch, *, load: bool = True) -> list[str]:
    """Record SCRIPT LOAD calls; with ``load`` false they do nothing (NOSCRIPT stays)."""
    loads: list[str] = []
    real = aioredis.Redis.script_load

    async def script_load(self: aioredis.Redis, script: str) -> Any:
        loads.append(script)
        return await real(self, script) if load else None

    monkeypatch.setattr(aioredis.Redis, "script_load", script_load)
    return loads


async def test_claims_are_sent_again_after_noscript(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fake.rpush(EK.key, b'{"a":1}')
    loads = count_loads(monkeypatch)
    await fake.script_flush()  # as after a restart: no script is known
    (claim,) = await Buffer(fake, RedisSettings()).claim([EK], "me", 5000)
    assert claim.status == "claimed"
    assert loads  # the scripts were loaded, then the claim sent again
    assert await fake.lrange(EK.claim, 0, -1) == [b'{"a":1}']


async def test_a_begin_after_noscript_reads_its_batch_again(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BEGIN that met NOSCRIPT goes again, with the LRANGE after it (a read after a
    script that did not run is sent again with it)."""
    await fake.rpush(EK.key, b'{"a":1}', b'{"b":2}')
    buf = Buffer(fake, RedisSettings())
    (claim,) = await buf.claim([EK], "me", 5000)
    assert claim.status == "claimed"
    loads = count_loads(monkeypatch)
    await fake.script_flush()
    (began,) = await buf.begin([BeginItem(EK, 0)], "me", 5000, 10)
    assert loads  # the BEGIN met NOSCRIPT and went again
    assert began.values == [b'{"a":1}', b'{"b":2}']
    assert await fake.get(EK.offset) == b"0"
    assert await fake.get(EK.holder) == b"0 me"


async def test_only_the_commands_that_did_not_run_are_sent_again(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ACK that ran must not run twice (it would trim twice): the scripts vanish
    after the first key's ACK ran, the second key's ACK meets NOSCRIPT and alone goes
    again."""
    buf = Buffer(fake, RedisSettings())
    a, b = EventKey("a", 1), EventKey("b", 1)
    for ek in (a, b):
        await fake.rpush(ek.key, *[b'{"n":%d}' % i for i in range(4)])
    await buf.claim([a, b], "me", 5000)
    await buf.begin([BeginItem(a, 0), BeginItem(b, 0)], "me", 5000, 2)
    real = Buffer._pipeline
    sent: list[int] = []

    async def pipeline(self: Buffer, action: str, cmds: Any) -> list[Any]:
        sent.append(len(cmds))
        if len(sent) > 1:
            return await real(self, action, cmds)
        first = await real(self, action, cmds[:1])
        await fake.script_flush()  # between the two commands of one pipeline
        return first + await real(self, action, cmds[1:])

    monkeypatch.setattr(Buffer, "_pipeline", pipeline)
    acked = await buf.ack([AckItem(a, 2, 2, 0, [], 0), AckItem(b, 2, 2, 0, [], 0)], "me", 5000)
    assert [x.left for x in acked] == [2, 2]
    assert sent == [2, 1]  # only b's ACK went again
    assert await fake.llen(a.claim) == 2  # trimmed once, not twice
    assert await fake.llen(b.claim) == 2


async def test_noscript_that_persists_is_an_outage(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    count_loads(monkeypatch, load=False)
    await fake.script_flush()
    with pytest.raises(RedisUnavailableError, match="claiming keys"):
        await Buffer(fake, RedisSettings()).claim([EK], "me", 5000)
