"""The drain loop's lifecycle (drain_loop.DrainLoop), as the CLI, tests and bench use it."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import redis.asyncio as aioredis

from logpipe_cli.buffer import Buffer
from logpipe_cli.drain_loop import DrainLoop
from logpipe_cli.drainer import Drainer, DrainReport, gc_paused
from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, DEADLINE_S, Rig, line

pytestmark = pytest.mark.anyio


async def test_first_exit_finishes_the_pass_in_hand(rig: Rig) -> None:
    events = await rig.add("u", range(3))
    reports: list[DrainReport] = []
    loop: DrainLoop

    def on_report(report: DrainReport) -> None:
        reports.append(report)
        loop.handle_exit()  # as a first SIGTERM during the pass

    loop = DrainLoop(rig.drainer(), 0.01, on_report)
    await asyncio.wait_for(loop.serve(install_signals=False), DEADLINE_S)
    assert len(reports) == 1
    assert reports[0].events == 3
    assert rig.file_lines("u") == events


async def test_second_exit_stops_a_pass_that_hangs(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.add("u", range(3))
    reading = asyncio.Event()

    async def hang(self: Buffer, *args: Any, **kwargs: Any) -> Any:
        reading.set()
        await asyncio.Event().wait()  # a Redis that never answers

    monkeypatch.setattr(Buffer, "ack", hang)  # mid-pass: the batch is written
    loop = DrainLoop(rig.drainer(), 0.01)
    serving = asyncio.create_task(loop.serve(install_signals=False))
    await asyncio.wait_for(reading.wait(), DEADLINE_S)
    loop.handle_exit()
    await asyncio.sleep(0)
    assert not serving.done()  # the first one waits for the pass
    loop.handle_exit()
    await asyncio.wait_for(serving, DEADLINE_S)
    ek = EventKey("u", DAY)
    assert rig.raw.llen(ek.claim) == 3  # nothing lost: the next drainer finishes it


async def test_buffer_connect_owns_its_client(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[object] = []
    real_aclose = aioredis.Redis.aclose

    async def aclose(self: aioredis.Redis, *args: Any) -> None:
        closed.append(self)
        await real_aclose(self, *args)

    monkeypatch.setattr(aioredis.Redis, "aclose", aclose)
    async with Buffer.connect(rig.settings.redis) as buffer:
        await buffer.ping()
        assert closed == []
    assert closed == [buffer.client]


async def test_a_pass_of_a_drain_process_pauses_the_collector(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logpipe drain`` (its own process) drains with the cyclic collector off, and
    turns it back on after the pass; a drainer that does not ask leaves it alone."""
    events = await rig.add("u", range(3))
    seen: list[bool] = []
    real = Buffer.ack

    async def ack(self: Buffer, *args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Buffer, "ack", ack)
    assert gc.isenabled()
    paused = Drainer(rig.buffer, rig.settings.drainer, pause_gc=True)
    report = await paused.drain_once()
    assert report.ok
    assert report.events == 3
    assert seen == [False]
    assert gc.isenabled()
    await rig.add("u", range(3, 5))
    report = await rig.drainer().drain_once()
    assert report.events == 2
    assert seen == [False, True]
    assert rig.file_lines("u") == [*events, *(line("u", n) for n in range(3, 5))]


async def test_the_collector_stays_on_after_a_failed_pass(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.add("u", range(3))

    async def broken(self: Buffer, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Buffer, "find_drainable", broken)
    with pytest.raises(RuntimeError):
        await Drainer(rig.buffer, rig.settings.drainer, pause_gc=True).drain_once()
    assert gc.isenabled()


def test_gc_paused_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with gc_paused(False):
        assert gc.isenabled()
