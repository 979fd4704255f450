"""Several drainers at once, against one Redis and one logs_dir: every event exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.drainer import Drainer, DrainReport
from logpipe_cli.settings import Settings
from tests.integration.conftest import DAY, Rig, logpipe_env, run_python

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two keys per claim round trip, so drainers in one process interleave key by key."""
    monkeypatch.setattr("logpipe_cli.drainer.GROUP_SIZE", 2)


USERS = [f"u{i}" for i in range(12)]
PER_KEY = 40


async def fill(rig: Rig) -> dict[tuple[str, int], list[bytes]]:
    expected: dict[tuple[str, int], list[bytes]] = {}
    for user in USERS:
        for day in (DAY, DAY + 1):
            expected[(user, day)] = await rig.add(user, range(PER_KEY), day)
    return expected


def assert_exactly_once(rig: Rig, expected: dict[tuple[str, int], list[bytes]]) -> None:
    for (user, day), lines in expected.items():
        assert rig.file_lines(user, day) == lines, (user, day)
    assert rig.redis_keys() == []
    stats = rig.stats()
    total = sum(len(v) for v in expected.values())
    assert (stats["drained_events"], stats["buffered"]) == (total, 0)


async def drain_with_own_client(settings: Settings, batch_events: int) -> DrainReport:
    client = connect(settings.redis)
    try:
        cfg = replace(settings.drainer, batch_events=batch_events)
        return await Drainer(Buffer(client, settings.redis), cfg).drain_once()
    finally:
        await client.aclose()


@pytest.mark.parametrize("drainers", [2, 3])
async def test_drainers_in_one_event_loop(rig: Rig, drainers: int) -> None:
    expected = await fill(rig)
    reports = await asyncio.gather(
        *(drain_with_own_client(rig.settings, batch_events=7) for _ in range(drainers))
    )
    assert all(r.ok for r in reports), [r.errors for r in reports]
    assert sum(r.events for r in reports) == len(USERS) * 2 * PER_KEY
    assert_exactly_once(rig, expected)


async def test_drainers_in_threads(rig: Rig) -> None:
    expected = await fill(rig)
    reports: list[DrainReport] = []
    lock = threading.Lock()

    def work() -> None:
        report = asyncio.run(drain_with_own_client(rig.settings, batch_events=5))
        with lock:
            reports.append(report)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(reports) == 3
    assert all(r.ok for r in reports), [r.errors for r in reports]
    assert sum(r.events for r in reports) == len(USERS) * 2 * PER_KEY
    assert_exactly_once(rig, expected)


async def test_drainers_in_processes(rig: Rig, tmp_path: Path) -> None:
    expected = await fill(rig)
    env = logpipe_env(rig, LOGPIPE_DRAINER_BATCH_EVENTS="9", LOGPIPE_DRAINER_LEASE_SECONDS="2")
    runs = await asyncio.gather(
        *(
            run_python(["-m", "logpipe_cli", "drain", "--once", "--json"], tmp_path, env)
            for _ in range(3)
        )
    )
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    drained = sum(json.loads(run.stdout)["events"] for run in runs)
    assert drained == len(USERS) * 2 * PER_KEY
    assert_exactly_once(rig, expected)


async def test_drainers_while_events_keep_coming(rig: Rig) -> None:
    """Appends race with three drainers looping; a final pass leaves nothing behind."""
    expected: dict[tuple[str, int], list[bytes]] = {(u, DAY): [] for u in USERS[:4]}
    producing = True

    async def produce() -> None:
        nonlocal producing
        for n in range(60):
            for user in USERS[:4]:
                expected[(user, DAY)] += await rig.add(user, [n])
            await asyncio.sleep(0)
        producing = False

    async def drain_loop() -> None:
        while producing:
            report = await drain_with_own_client(rig.settings, batch_events=3)
            assert report.ok, report.errors

    await asyncio.gather(produce(), drain_loop(), drain_loop(), drain_loop())
    final = await drain_with_own_client(rig.settings, batch_events=100)
    assert final.ok
    assert_exactly_once(rig, expected)
