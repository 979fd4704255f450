"""Group commit on fakeredis: concurrent requests share a flush and learn its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import fakeredis
import pytest

from logpipe_cli.buffer import Buffer
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import (
    BufferFullError,
    ReplicasMissingError,
    ReplicationError,
    WrongTypeError,
)
from logpipe_cli.settings import RedisSettings

pytestmark = pytest.mark.anyio


class CountingBuffer(Buffer):
    def __init__(self, client: Any, cfg: RedisSettings) -> None:
        super().__init__(client, cfg)
        self.flushes: list[int] = []

    async def append(
        self, items: Sequence[tuple[str, bytes]], flush_id: str | None = None, **limits: Any
    ) -> int:
        self.flushes.append(len(items))
        return await super().append(items, flush_id, **limits)


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    client = fakeredis.aioredis.FakeRedis()
    yield client
    await client.aclose()


async def test_concurrent_requests_share_one_flush(fake: Any) -> None:
    buf = CountingBuffer(fake, RedisSettings())
    committer = GroupCommitter(buf)
    await asyncio.gather(
        *(committer.append([("logs:user_a:1", b'{"n":%d}' % i)]) for i in range(10))
    )
    assert buf.flushes == [10]
    assert await fake.lrange("logs:user_a:1", 0, -1) == [b'{"n":%d}' % i for i in range(10)]
    # the flusher is gone once idle; the next request starts a new one
    await committer.append([("logs:user_a:1", b'{"n":10}')])
    assert buf.flushes == [10, 1]


async def test_a_full_buffer_fails_the_requests_of_that_flush_only(fake: Any) -> None:
    buf = CountingBuffer(fake, RedisSettings(max_buffered_events=3))
    committer = GroupCommitter(buf)
    results = await asyncio.gather(
        *(committer.append([("logs:user_a:1", b"{}")] * 2) for _ in range(2)),
        return_exceptions=True,
    )
    assert all(isinstance(r, BufferFullError) for r in results)
    assert await fake.exists("logs:user_a:1") == 0  # the flush stored nothing
    await committer.append([("logs:user_a:1", b"{}")])  # a later flush fits
    assert await fake.llen("logs:user_a:1") == 1


async def test_large_requests_are_split_into_several_flushes(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("logpipe_cli.committer.MAX_FLUSH_EVENTS", 5)
    buf = CountingBuffer(fake, RedisSettings())
    committer = GroupCommitter(buf)
    await asyncio.gather(
        committer.append([("logs:user_a:1", b'{"r":1}')] * 3),
        committer.append([("logs:user_a:1", b'{"r":2}')] * 3),
        committer.append([("logs:user_a:1", b'{"r":3}')] * 7),  # alone over the cap: still sent
    )
    assert buf.flushes == [3, 3, 7]
    stored = await fake.lrange("logs:user_a:1", 0, -1)
    assert stored == [b'{"r":1}'] * 3 + [b'{"r":2}'] * 3 + [b'{"r":3}'] * 7


class ShortBuffer(CountingBuffer):
    """A buffer whose writes fall short of min_replicas, as ``error`` says."""

    error: Exception = ReplicationError("short", 0, 1)

    async def append(
        self, items: Sequence[tuple[str, bytes]], flush_id: str | None = None, **limits: Any
    ) -> int:
        self.flushes.append(len(items))
        raise self.error


async def test_a_master_without_replicas_is_refused_at_once_a_lagging_one_retried(
    fake: Any,
) -> None:
    lagging = ShortBuffer(fake, RedisSettings())
    with pytest.raises(ReplicationError):
        await GroupCommitter(lagging, retry_s=0.2).append([("logs:user_a:1", b"{}")])
    assert len(lagging.flushes) > 1  # sent again under its id until the deadline

    missing = ShortBuffer(fake, RedisSettings())
    missing.error = ReplicasMissingError("no replica", 0, 1)
    with pytest.raises(ReplicasMissingError):
        await GroupCommitter(missing, retry_s=60).append([("logs:user_a:1", b"{}")])
    assert missing.flushes == [1]  # once: a resend could not help


class WrongTypeOnce(Buffer):
    """Refuses its first flush for a wrong-type key, after ``arrived`` is set (a request
    came in meanwhile); records each flush's id and keys."""

    def __init__(self, client: Any, cfg: RedisSettings) -> None:
        super().__init__(client, cfg)
        self.sent: list[tuple[str | None, list[str]]] = []
        self.arrived = asyncio.Event()

    async def append(
        self, items: Sequence[tuple[str, bytes]], flush_id: str | None = None, **limits: Any
    ) -> int:
        self.sent.append((flush_id, [k for k, _ in items]))
        if len(self.sent) == 1:
            await self.arrived.wait()
            raise WrongTypeError("a list of another type", ["logs:bad:1"])
        return await super().append(items, flush_id, **limits)


async def test_after_a_wrong_type_the_rest_go_again_under_the_same_id_on_their_own(
    fake: Any,
) -> None:
    """In cluster mode the slots without the bad key stored their share already: the
    rest of the flush goes again under its id (those slots write nothing twice), and
    without a newcomer, whose events such a slot would take for the flush's own."""
    buf = WrongTypeOnce(fake, RedisSettings())
    committer = GroupCommitter(buf)
    first = asyncio.gather(
        committer.append([("logs:bad:1", b"{}")]),
        committer.append([("logs:good:1", b'{"n":1}')]),
        return_exceptions=True,
    )
    await asyncio.sleep(0)  # the flusher has taken both
    newcomer = asyncio.ensure_future(committer.append([("logs:late:1", b'{"n":2}')]))
    await asyncio.sleep(0)
    buf.arrived.set()
    bad, good = await first
    assert isinstance(bad, WrongTypeError)
    assert good == []
    assert await newcomer == []
    (id1, keys1), (id2, keys2), (id3, keys3) = buf.sent
    assert keys1 == ["logs:bad:1", "logs:good:1"]
    assert (id2, keys2) == (id1, ["logs:good:1"])
    assert keys3 == ["logs:late:1"]
    assert id3 != id1
