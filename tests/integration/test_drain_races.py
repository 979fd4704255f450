"""Drainers racing each other, pausing past their lease, or meeting a Redis that answers
late: every interleaving replayed here keeps each acknowledged event once, whole.

Each test replays one interleaving deterministically: a hook (monkeypatched) runs
another drainer, or lets a request reach Redis late, at the exact point of the race.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from logpipe_cli import drainer
from logpipe_cli.buffer import Buffer
from logpipe_cli.errors import RedisUnavailableError
from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, DEADLINE_S, Rig

pytestmark = pytest.mark.anyio

EK = EventKey("s", DAY)


def hold_back(monkeypatch: pytest.MonkeyPatch, action: str) -> list[Sequence[Any]]:
    """Make the next pipeline for ``action`` time out without reaching Redis yet (a
    request stuck on its way: a proxy, a lossy link). Returns where its commands are
    kept, for :func:`arrive` to deliver later."""
    held: list[Sequence[Any]] = []
    original = Buffer._pipeline

    async def stuck(self: Buffer, act: str, cmds: Sequence[Any]) -> list[Any]:
        if act == action and not held:
            held.append(cmds)
            raise RedisUnavailableError(f"redis unavailable while {act}: Timeout reading")
        return await original(self, act, cmds)

    monkeypatch.setattr(Buffer, "_pipeline", stuck)
    return held


async def arrive(rig: Rig, action: str, cmds: Sequence[Any]) -> None:
    """The held-back request reaches Redis at last (its drainer gave up on it long ago)."""
    await Buffer._pipeline(rig.buffer, action, cmds)


async def first_pass_held_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, action: str, events: int
) -> tuple[list[bytes], drainer.Drainer, list[Sequence[Any]]]:
    """``events`` events of user s, and one long-lived drainer (as ``logpipe drain``
    runs one per process) whose first pass gave up on its ``action`` request, held back
    on its way (see :func:`hold_back`): the events, the drainer, the held request."""
    lines = await rig.add("s", range(events))
    d = rig.drainer(batch_events=2, lease_seconds=0.3)
    held = hold_back(monkeypatch, action)
    first = await d.drain_once()
    assert not first.ok
    assert held
    return lines, d, held


async def test_a_claim_that_reaches_redis_after_its_drainer_gave_up_cuts_no_acknowledged_line(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drainer A looks at the key's file (locked, S bytes) and sends the claim begun at S;
    the request is held up on its way, A times out and lets the file go. B drains the
    key (its lines acknowledged after byte S), new events arrive, and only then does A's
    claim reach Redis: it renames the new events and records offset S, in A's name.
    A never comes back, its lease runs out and C resumes the claim: C must not cut B's
    acknowledged lines back to S."""
    first = await rig.add("s", range(3))
    assert (await rig.drainer().drain_once()).events == 3  # the file: S bytes
    second = await rig.add("s", range(3, 5))
    held = hold_back(monkeypatch, "claiming keys")
    a = await rig.drainer(lease_seconds=0.2).drain_once()
    assert not a.ok  # A gave up on its claim
    assert held
    b = await rig.drainer().drain_once()
    assert b.ok, b.errors
    assert b.events == 2
    assert rig.file_lines("s") == first + second
    third = await rig.add("s", range(5, 7))
    await arrive(rig, "claiming keys", held[0])
    await rig.wait_lease_gone(EK)
    c = await rig.drainer().drain_once()
    assert rig.file_lines("s") == first + second + third
    assert c.ok, c.errors
    assert rig.redis_keys() == []


async def test_an_ack_that_reaches_redis_after_its_pass_gave_up_trims_nothing_twice(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One long-lived drainer (as ``logpipe drain`` runs one per process): a pass writes
    e0, e1 and its ack is held up on its way, so the pass gives up. The next pass takes
    the key back, cuts the unacknowledged e0, e1 and reads them again; the first pass's
    ack reaches Redis only now. It must not count: else e0, e1 are trimmed twice over,
    and e2, e3 go with them without ever being written."""
    events, d, held = await first_pass_held_back(rig, monkeypatch, "acknowledging events", 4)
    assert rig.file_lines("s") == events[:2]  # written, not acknowledged
    original = Buffer.ack

    async def late_ack_first(self: Buffer, *args: Any) -> Any:
        monkeypatch.setattr(Buffer, "ack", original)  # once
        await arrive(rig, "acknowledging events", held[0])
        return await original(self, *args)

    monkeypatch.setattr(Buffer, "ack", late_ack_first)
    second = await d.drain_once()
    assert rig.file_lines("s") == events
    assert second.ok, second.errors
    assert rig.redis_keys() == []


@pytest.mark.parametrize("had_file", [True, False], ids=["file-there", "file-made"])
async def test_a_drainer_paused_past_its_lease_after_its_append_is_cut_back_by_its_successor(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, had_file: bool
) -> None:
    """A appends its batch (to the file it locked at its look, or made with the batch)
    and pauses before the ack, past its lease. B resumes the claim and waits for the
    file's lock, which A holds from its look to its ack. A wakes: its ack is refused
    (the lease is B's) and it lets the file go; B cuts A's bytes back and writes the
    batch once."""
    old = await rig.add("s", range(2)) if had_file else []
    if had_file:
        assert (await rig.drainer().drain_once()).events == 2
    events = await rig.add("s", range(2, 5))
    b = rig.drainer()
    b_done: list[Any] = []
    original = Buffer.ack

    async def pause_past_the_lease(self: Buffer, items: Any, owner: str, lease_ms: int) -> Any:
        monkeypatch.setattr(Buffer, "ack", original)  # once: A's ack
        assert rig.file_lines("s") == old + events  # A's append, not acknowledged
        rig.raw.delete(EK.lease)  # A's lease runs out while it is paused
        task = asyncio.create_task(b.drain_once())
        b_done.append(task)
        while rig.raw.get(EK.lease) != b.owner.encode():  # B resumed: at A's lock now
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
        return await original(self, items, owner, lease_ms)

    monkeypatch.setattr(Buffer, "ack", pause_past_the_lease)
    a = await rig.drainer().drain_once()
    assert a.events == 0  # its ack was refused
    report = await b_done[0]
    assert report.ok, report.errors
    assert report.events == 3
    assert rig.file_lines("s") == old + events
    assert rig.redis_keys() == []


async def test_a_begin_that_reaches_redis_after_its_pass_gave_up_records_no_offset(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One long-lived drainer: a pass's BEGIN (offset 0) is held up on its way and the
    pass gives up. The next pass writes and acknowledges e0, e1, then begins e2, e3,
    and the first pass's BEGIN arrives: it must not record offset 0 under the new
    pass's lease. The new pass then loses its ack (it stops there); whoever takes the
    claim over cuts back to the offset the new pass recorded, not to 0 (which would
    take the acknowledged e0, e1 with it)."""
    events, d, held = await first_pass_held_back(rig, monkeypatch, "reading events", 6)
    assert rig.file("s") == b""
    original = Buffer.ack
    acks = 0

    async def late_begin_then_stop(self: Buffer, *args: Any) -> Any:
        nonlocal acks
        acks += 1
        if acks == 1:
            return await original(self, *args)
        monkeypatch.setattr(Buffer, "ack", original)
        await arrive(rig, "reading events", held[0])
        raise RedisUnavailableError("redis unavailable while acknowledging events: Timeout")

    monkeypatch.setattr(Buffer, "ack", late_begin_then_stop)
    second = await d.drain_once()
    assert not second.ok
    assert rig.file_lines("s") == events[:4]  # e2, e3 not acknowledged
    await rig.wait_lease_gone(EK)
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert rig.file_lines("s") == events
    assert rig.redis_keys() == []


async def test_a_drain_stopped_mid_append_writes_nothing_into_a_file_opened_after(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass is stopped (a second signal, DrainRunner.aclose) while a file thread is
    appending a's batch: the thread cannot be stopped, and the file must not be closed
    under it. Closed, its descriptor's number goes to the next file the process opens,
    and the append still on its way lands in that file: another user's, say."""
    await rig.add("a", range(1))
    b_lines = await rig.add("b", range(1))
    assert (await rig.drainer().drain_once()).events == 2  # both files there
    await rig.add("a", range(1, 3))
    writing, go, written = threading.Event(), threading.Event(), threading.Event()
    fds: list[int] = []
    real_write = os.write

    def held_write(fd: int, data: Any) -> int:
        # a file thread between reading the descriptor and the write system call
        if threading.current_thread().name.startswith("logpipe-files") and not fds:
            fds.append(fd)
            writing.set()
            go.wait(DEADLINE_S)
            try:
                return real_write(fd, data)
            finally:
                written.set()
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", held_write)
    task = asyncio.create_task(rig.drainer(log_pattern="logs:user_a:*").drain_once())
    assert await asyncio.to_thread(writing.wait, DEADLINE_S)
    await drainer.cancel_and_wait(task)
    opened: list[int] = []
    try:
        # files the process opens meanwhile (another pass's, a reader's)
        while len(opened) < 8 and fds[0] not in opened:
            opened.append(os.open(rig.path("b"), os.O_WRONLY | os.O_APPEND))
        go.set()
        assert await asyncio.to_thread(written.wait, DEADLINE_S)
    finally:
        go.set()
        for fd in opened:
            os.close(fd)
    assert rig.file_lines("b") == b_lines
