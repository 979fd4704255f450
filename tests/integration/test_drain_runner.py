"""Concurrent drain requests in one process share one pass, on the real redis-server.

Before DrainRunner, ``POST /drain`` called ``drain_once`` on one long-lived Drainer:
two concurrent calls shared its owner token and wedged each other (issue 8: 1,512 of
9,000 events drained in 36 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from logpipe_cli import drain_runner
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.drain_runner import DrainRunner
from logpipe_cli.drainer import Drainer, DrainReport
from tests.integration.conftest import Rig

pytestmark = pytest.mark.anyio

USERS = 150
EVENTS_PER_USER = 40


@pytest.fixture
async def runner(rig: Rig) -> AsyncIterator[DrainRunner]:
    """A runner on a Redis client of its own, as the API's lifespan makes it."""
    client = connect(rig.settings.redis)
    runner = DrainRunner(Buffer(client, rig.settings.redis), rig.settings.drainer)
    try:
        yield runner
    finally:
        await runner.aclose()
        await client.aclose()


async def fill(rig: Rig, first: int = 0) -> dict[str, list[bytes]]:
    """EVENTS_PER_USER events for each of USERS users; the lines each file should get."""
    ns = range(first, first + EVENTS_PER_USER)
    return {f"u{i}": await rig.add(f"u{i}", ns) for i in range(USERS)}


@pytest.mark.parametrize("callers", [2, 10])
async def test_concurrent_drains_share_one_pass(
    rig: Rig, runner: DrainRunner, callers: int
) -> None:
    expected = await fill(rig)
    reports = await asyncio.gather(*(runner.drain() for _ in range(callers)))
    assert runner.passes == 1
    assert all(report is reports[0] for report in reports)
    report = reports[0]
    assert report.ok, report.errors
    assert (report.keys, report.events, report.busy) == (USERS, USERS * EVENTS_PER_USER, [])
    for user, lines in expected.items():
        assert rig.file_lines(user) == lines  # every event once, in order
    assert rig.redis_keys() == []
    assert rig.stats()["drained_events"] == USERS * EVENTS_PER_USER


async def test_each_pass_has_a_drainer_of_its_own(
    rig: Rig, runner: DrainRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners: list[str] = []

    class Recording(Drainer):
        async def drain_once(self, **kwargs: Any) -> DrainReport:
            owners.append(self.owner)
            return await super().drain_once(**kwargs)

    monkeypatch.setattr(drain_runner, "Drainer", Recording)
    first = await fill(rig)
    one = await runner.drain()
    second = await fill(rig, first=EVENTS_PER_USER)
    two, three = await asyncio.gather(runner.drain(), runner.drain())
    assert runner.passes == 2
    assert len(set(owners)) == 2
    assert one is not two
    assert two is three
    assert (one.events, two.events) == (USERS * EVENTS_PER_USER,) * 2
    for user in first:
        assert rig.file_lines(user) == first[user] + second[user]
    assert rig.redis_keys() == []
