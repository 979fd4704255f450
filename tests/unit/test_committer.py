"""Group commit on fakeredis: concurrent requests share a flush and learn its own outcome."""

from __future__ import annotations

import asyncio
import random
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


class GatedBuffer(Buffer):
    """Each flush waits for its own release; records how many are in Redis at once."""

    def __init__(self, client: Any, cfg: RedisSettings, *, gated: bool = True) -> None:
        super().__init__(client, cfg)
        self.gated = gated
        self.gates: list[asyncio.Event] = []
        self.flushes: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def append(
        self, items: Sequence[tuple[str, bytes]], flush_id: str | None = None, **limits: Any
    ) -> int:
        self.flushes.append(len(items))
        gate = asyncio.Event()
        self.gates.append(gate)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gated:
                await gate.wait()
            else:
                await asyncio.sleep(0)
            return await super().append(items, flush_id, **limits)
        finally:
            self.in_flight -= 1


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _batch(tag: int, n: int = 100) -> list[tuple[str, bytes]]:
    return [(f"logs:user_{tag}:1", b'{"b":%d,"i":%d}' % (tag, i)) for i in range(n)]


async def test_a_batch_waiting_goes_out_while_a_flush_is_in_redis(fake: Any) -> None:
    """A second flush overlaps the first once a batch's worth waits (Redis works on one
    while the API packs the next); never more than two."""
    buf = GatedBuffer(fake, RedisSettings())
    committer = GroupCommitter(buf)
    first = asyncio.ensure_future(committer.append(_batch(1)))
    await _settle()
    assert buf.flushes == [100]
    second = asyncio.ensure_future(committer.append(_batch(2)))
    await _settle()
    assert buf.flushes == [100, 100]  # out before the first came back
    third = asyncio.ensure_future(committer.append(_batch(3)))
    await _settle()
    assert buf.flushes == [100, 100]  # two in Redis: the third waits
    buf.gates[1].set()
    assert await second == []
    await _settle()
    assert buf.flushes == [100, 100, 100]
    assert not first.done()
    buf.gates[0].set()
    buf.gates[2].set()
    assert await first == []
    assert await third == []
    assert buf.most_in_flight == 2
    for tag in (1, 2, 3):
        assert await fake.lrange(f"logs:user_{tag}:1", 0, -1) == [v for _, v in _batch(tag)]


async def test_single_events_wait_for_the_flush_in_redis_and_share_the_next(fake: Any) -> None:
    buf = GatedBuffer(fake, RedisSettings())
    committer = GroupCommitter(buf)
    first = asyncio.ensure_future(committer.append([("logs:user_a:1", b'{"n":0}')]))
    await _settle()
    rest = [
        asyncio.ensure_future(committer.append([("logs:user_a:1", b'{"n":%d}' % i)]))
        for i in range(1, 31)
    ]
    await _settle()
    assert buf.flushes == [1]  # 30 waiting, under a batch's worth: no second flush
    buf.gates[0].set()
    await first
    await _settle()
    assert buf.flushes == [1, 30]
    buf.gates[1].set()
    await asyncio.gather(*rest)
    assert await fake.lrange("logs:user_a:1", 0, -1) == [b'{"n":%d}' % i for i in range(31)]
    assert buf.most_in_flight == 1


async def test_overlapping_flushes_answer_every_request_once_and_strand_none(
    fake: Any,
) -> None:
    """Requests of every size arriving while flushes come back in any order: each is
    answered, its events stored once, at most two flushes in Redis at a time, and no
    flushing loop left behind once all is done."""
    rng = random.Random(12)
    buf = GatedBuffer(fake, RedisSettings(), gated=False)
    committer = GroupCommitter(buf)
    sent: dict[int, int] = {}
    tasks = []
    for r in range(400):
        n = rng.choice((1, 1, 1, 3, 40, 100, 250))
        sent[r] = n
        items = [(f"logs:user_{r % 7}:1", b'{"r":%d,"i":%d}' % (r, i)) for i in range(n)]
        tasks.append(asyncio.ensure_future(committer.append(items)))
        for _ in range(rng.choice((0, 0, 1, 2))):
            await asyncio.sleep(0)
    assert all(d == [] for d in await asyncio.gather(*tasks))
    stored = [v for u in range(7) for v in await fake.lrange(f"logs:user_{u}:1", 0, -1)]
    assert len(stored) == len(set(stored)) == sum(sent.values())
    assert buf.most_in_flight == 2  # it did overlap, and never more than two
    await _settle()
    assert not committer._flushers
    assert committer._pending == 0


async def test_flushes_back_in_the_same_tick_leave_no_request_stranded(fake: Any) -> None:
    """Both flushes come back at once with a few events waiting: the loop that ends
    first must not leave the other believing it has company, or those events would wait
    for a request that never comes."""
    buf = GatedBuffer(fake, RedisSettings())
    committer = GroupCommitter(buf)
    first = asyncio.ensure_future(committer.append(_batch(1)))
    await _settle()
    second = asyncio.ensure_future(committer.append(_batch(2)))
    await _settle()
    assert buf.flushes == [100, 100]
    waiting = asyncio.ensure_future(committer.append([("logs:user_w:1", b'{"w":1}')]))
    await _settle()
    buf.gates[0].set()
    buf.gates[1].set()  # both replies in the same tick
    assert await first == []
    assert await second == []
    for _ in range(50):
        if len(buf.gates) > 2:
            break
        await asyncio.sleep(0)
    assert buf.flushes == [100, 100, 1]
    buf.gates[2].set()
    assert await asyncio.wait_for(waiting, 5) == []
    await _settle()
    assert not committer._flushers
