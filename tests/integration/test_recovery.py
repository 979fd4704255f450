"""A drainer that dies at any step: the next one finishes its work, once, with no torn line.

Each test plays the dead drainer with the Buffer's own calls and an owner token of its
own, writes into the file what it would have written, lets its short lease run out, and
then lets a real Drainer take over.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from logpipe_cli.buffer import AckItem, BeginItem, Buffer
from logpipe_cli.keys import EventKey
from logpipe_cli.scripts import Acked
from logpipe_cli.sink import LockedFile, encode_lines
from tests.integration.conftest import DAY, DEADLINE_S, Rig

pytestmark = pytest.mark.anyio

DEAD = "dead-drainer"
SHORT_LEASE_MS = 100
EK = EventKey("u", DAY)
OLD = b'{"user_id":"u","event":"drained-earlier","timestamp":1}\n'


async def start_dead_drainer(rig: Rig, batch: int = 100) -> list[bytes]:
    """Claim the key and BEGIN a batch the way a drainer does; return the batch."""
    rig.path("u").parent.mkdir(parents=True, exist_ok=True)
    rig.path("u").write_bytes(OLD)
    (claim,) = await rig.buffer.claim([EK], DEAD, SHORT_LEASE_MS)
    assert claim.status == "claimed"
    (began,) = await rig.buffer.begin([BeginItem(EK, len(OLD))], DEAD, SHORT_LEASE_MS, batch)
    assert began.lease == "held"
    return began.values


def append_raw(rig: Rig, data: bytes) -> None:
    with rig.path("u").open("ab") as fh:
        fh.write(data)


@pytest.mark.parametrize(
    "written",
    [
        pytest.param(lambda data: b"", id="nothing-written"),
        pytest.param(lambda data: data[:1], id="one-byte"),
        pytest.param(lambda data: data[: len(data) // 2], id="torn-mid-line"),
        pytest.param(lambda data: data[: data.index(b"\n") + 1], id="whole-lines-only"),
        pytest.param(lambda data: data, id="complete-not-acked"),
    ],
)
async def test_died_after_begin(rig: Rig, written: object) -> None:
    events = await rig.add("u", range(6))
    values = await start_dead_drainer(rig)
    assert values == events
    append_raw(rig, written(encode_lines(values)))  # type: ignore[operator]
    await rig.wait_lease_gone(EK)

    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.events == 6
    assert rig.file("u") == OLD + encode_lines(events)  # the old line kept, the batch once
    assert rig.redis_keys() == []
    assert rig.stats()["buffered"] == 0


async def test_died_after_claim_before_begin(rig: Rig) -> None:
    events = await rig.add("u", range(4))
    (claim,) = await rig.buffer.claim([EK], DEAD, SHORT_LEASE_MS)
    assert claim.status == "claimed"
    await rig.wait_lease_gone(EK)
    report = await rig.drainer().drain_once()
    assert report.events == 4
    assert rig.file_lines("u") == events
    assert rig.redis_keys() == []


async def test_died_after_acking_part_of_the_claim(rig: Rig) -> None:
    events = await rig.add("u", range(10))
    first = await start_dead_drainer(rig, batch=4)
    data = encode_lines(first)
    append_raw(rig, data)
    size = len(OLD) + len(data)
    acked = await rig.buffer.ack([AckItem(EK, 4, 4, len(data), [], size)], DEAD, SHORT_LEASE_MS)
    assert acked == [Acked("held", 6)]
    (began,) = await rig.buffer.begin([BeginItem(EK, size)], DEAD, SHORT_LEASE_MS, 4)
    second = began.values
    assert second == events[4:8]
    append_raw(rig, encode_lines(second)[:-5])  # torn
    await rig.wait_lease_gone(EK)

    report = await rig.drainer().drain_once()
    assert report.events == 6
    assert rig.file("u") == OLD + encode_lines(events)
    assert rig.stats()["buffered"] == 0
    assert rig.stats()["drained_events"] == 10


async def test_resumed_claim_and_events_that_came_after_it_in_one_pass(rig: Rig) -> None:
    """After a crash the API kept writing: one `drain --once` must deliver both."""
    claimed = await rig.add("u", range(3))
    values = await start_dead_drainer(rig)
    append_raw(rig, encode_lines(values)[:7])
    later = await rig.add("u", range(3, 6))  # new events, in a fresh list beside the claim
    await rig.wait_lease_gone(EK)

    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.events == 6
    assert (report.keys, report.files) == (1, 1)  # one key, one file, drained in two claims
    assert rig.file("u") == OLD + encode_lines(claimed + later)
    assert rig.redis_keys() == []


async def test_live_lease_is_left_to_its_holder(rig: Rig) -> None:
    await rig.add("u", range(2))
    (claim,) = await rig.buffer.claim([EK], "alive", 60_000)
    assert claim.status == "claimed"
    report = await rig.drainer().drain_once(wait_for_busy=False)
    assert report.busy == [EK.key]
    assert report.events == 0
    assert not rig.path("u").exists()
    assert rig.raw.llen(EK.claim) == 2


async def test_a_drainer_that_lost_its_lease_cannot_ack(rig: Rig) -> None:
    """A paused drainer wakes after its claim was taken over: its ACK does nothing."""
    events = await rig.add("u", range(3))
    values = await start_dead_drainer(rig)
    append_raw(rig, encode_lines(values))
    await rig.wait_lease_gone(EK)
    report = await rig.drainer().drain_once()
    assert report.events == 3
    data = encode_lines(values)
    item = AckItem(EK, 3, 3, len(data), [], len(OLD) + len(data))
    assert await rig.buffer.ack([item], DEAD, SHORT_LEASE_MS) == [Acked("lost")]
    assert rig.file("u") == OLD + encode_lines(events)
    stats = rig.stats()
    assert (stats["drained_events"], stats["buffered"]) == (3, 0)


async def test_waits_for_a_busy_key_whose_holder_died(rig: Rig) -> None:
    """drain --once (wait_for_busy) takes a key over once its holder's lease runs out."""
    events = await rig.add("u", range(3))
    values = await start_dead_drainer(rig)
    append_raw(rig, encode_lines(values)[:3])
    report = await rig.drainer().drain_once()  # the lease is still live when it starts
    assert report.ok, report.errors
    assert report.busy == []
    assert report.events == 3
    assert rig.file("u") == OLD + encode_lines(events)


async def test_a_slow_batch_keeps_its_lease(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat renews a lease while a batch takes longer than the lease to write."""
    events = await rig.add("u", range(3))
    writing, finish = threading.Event(), threading.Event()
    real_append = LockedFile.append

    def slow_append(self: LockedFile, data: bytes, *, fsync: bool = True) -> None:
        writing.set()
        finish.wait(timeout=30)
        real_append(self, data, fsync=fsync)

    monkeypatch.setattr(LockedFile, "append", slow_append)
    renewed: list[bool] = []  # one entry per heartbeat: were all our leases still ours
    real_renew = Buffer.renew

    async def counted_renew(self: Buffer, *args: Any, **kwargs: Any) -> Any:
        result = await real_renew(self, *args, **kwargs)
        renewed.append(all(result))
        return result

    monkeypatch.setattr(Buffer, "renew", counted_renew)
    # renewed every 0.5 s: a heartbeat may come up to a second late on a starved box
    drainer = rig.drainer(owner="slow", lease_seconds=1.5)
    task = asyncio.create_task(drainer.drain_once())
    try:
        assert await asyncio.to_thread(writing.wait, 30)
        # four heartbeats a third of a lease apart outlast the lease taken at the claim:
        # only renewals can have kept it alive
        deadline = time.monotonic() + DEADLINE_S
        while len(renewed) < 4:
            assert time.monotonic() < deadline, f"only {len(renewed)} renewals"
            await asyncio.sleep(0.02)
        assert all(renewed), renewed
        assert rig.raw.get(EK.lease) == b"slow"
        (claim,) = await rig.buffer.claim([EK], "other", 300)
        assert (claim.status, claim.detail) == ("busy", "slow")
    finally:
        finish.set()
        report = await task
    assert report.ok, report.errors
    assert report.events == 3
    assert rig.file_lines("u") == events
