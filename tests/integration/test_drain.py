"""drain_once against a real Redis: everything moves, in order, once; appends race safely."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.drainer import Drainer, DrainReport
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import RedisSettings
from tests.conftest import MakeSettings
from tests.integration.conftest import DAY, Rig, line
from tests.redis_server import free_port

pytestmark = pytest.mark.anyio


async def test_drain_once_moves_everything_in_order(rig: Rig) -> None:
    a = await rig.add("alice", range(25))
    b = await rig.add("bob", range(3))
    a2 = await rig.add("alice", range(4), day=DAY + 1)
    report = await rig.drainer(batch_events=7).drain_once()  # several rounds per key
    assert report.ok, report.errors
    assert (report.keys, report.files, report.events) == (3, 3, 32)
    assert report.bytes == sum(len(x) + 1 for x in a + b + a2)
    assert rig.file_lines("alice") == a
    assert rig.file_lines("bob") == b
    assert rig.file_lines("alice", DAY + 1) == a2
    assert rig.redis_keys() == []  # no list, claim, lease or offset left behind
    stats = rig.stats()
    assert stats["buffered"] == 0
    assert stats["accepted"] == 32
    assert stats["drained_events"] == 32
    assert stats["drained_bytes"] == report.bytes


async def test_second_pass_appends_after_what_is_there(rig: Rig) -> None:
    first = await rig.add("u", range(3))
    await rig.drainer().drain_once()
    empty = await rig.drainer().drain_once()
    assert (empty.keys, empty.events) == (0, 0)
    assert rig.file_lines("u") == first
    second = await rig.add("u", range(3, 6))
    report = await rig.drainer().drain_once()
    assert report.events == 3
    assert rig.file_lines("u") == first + second


async def test_file_layout(rig: Rig) -> None:
    await rig.add("me@example.com", [1], day=0)
    await rig.drainer().drain_once()
    assert (rig.logs / "user_me@example.com" / "0.jsonl").read_bytes() == line(
        "me@example.com", 1, 0
    ) + b"\n"


async def test_last_drain_is_recorded(rig: Rig) -> None:
    await rig.add("u", range(2))
    await rig.drainer().drain_once()
    _, last = await rig.buffer.counters()
    assert last["ok"] == "1"
    assert last["events"] == "2"
    assert last["error"] == ""


async def test_claim_persists_a_key_that_had_a_ttl(rig: Rig) -> None:
    """A claimed key must not expire while it is being written."""
    buf = Buffer(rig.client, RedisSettings(url=rig.settings.redis.url, key_expiration_seconds=100))
    ek = EventKey("u", DAY)
    await buf.append([(ek.key, line("u", 1))])
    assert 0 < rig.raw.ttl(ek.key) <= 100
    (claim,) = await buf.claim([ek], "me", 5000)
    assert claim.status == "claimed"
    assert rig.raw.ttl(ek.claim) == -1


@pytest.mark.parametrize("step", ["claim", "ack"])
async def test_append_while_a_key_is_drained_is_neither_lost_nor_duplicated(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """More events for the key while it is drained: right after its claim (which also
    begins it and reads its batch), or just before its ack."""
    before = await rig.add("u", range(5))
    during: list[bytes] = []
    original = getattr(Buffer, step)

    async def racing(self: Buffer, *args: Any, **kwargs: Any) -> Any:
        if step == "claim":
            out = await original(self, *args, **kwargs)
        if not during:  # the API stores more events for the same key mid-drain
            during.extend(await rig.add("u", range(100, 103)))
        return out if step == "claim" else await original(self, *args, **kwargs)

    monkeypatch.setattr(Buffer, step, racing)
    first = await rig.drainer().drain_once()
    monkeypatch.undo()
    assert during, "the race was not staged"
    assert first.events == 5
    assert rig.file_lines("u") == before  # the claim held exactly what was there
    assert rig.raw.lrange(EventKey("u", DAY).key, 0, -1) == during
    second = await rig.drainer().drain_once()
    assert second.events == 3
    assert rig.file_lines("u") == before + during
    assert rig.redis_keys() == []
    assert rig.stats()["buffered"] == 0


async def test_redis_down_is_reported_not_raised(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}", redis={"timeout_seconds": 1.0})
    client = connect(settings.redis)
    try:
        report = await Drainer(Buffer(client, settings.redis), settings.drainer).drain_once()
    finally:
        await client.aclose()
    assert not report.ok
    assert "redis unavailable" in report.errors[0]
    assert not (tmp_path / "logs").exists()


async def test_run_loops_until_stopped(rig: Rig) -> None:
    events = await rig.add("u", range(3))
    stop = asyncio.Event()
    reports: list[DrainReport] = []

    def on_report(report: DrainReport) -> None:
        reports.append(report)
        stop.set()  # as the first SIGTERM does: the pass in hand is finished first

    await rig.drainer().run(stop, 0.01, on_report)
    assert len(reports) == 1
    assert reports[0].events == 3
    assert rig.file_lines("u") == events


async def test_run_keeps_going_while_redis_is_down(make_settings: MakeSettings) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}", redis={"timeout_seconds": 1.0})
    client = connect(settings.redis)
    stop = asyncio.Event()
    reports: list[DrainReport] = []

    def on_report(report: DrainReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    try:
        await Drainer(Buffer(client, settings.redis), settings.drainer).run(stop, 0.01, on_report)
    finally:
        await client.aclose()
    assert [r.ok for r in reports] == [False, False]  # reported, retried, never raised
