"""A drain against a logs_dir with planted links: nothing outside is touched, and the
key waits in Redis, reported unsafe (issue 9, defects 4 and 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, Rig

pytestmark = pytest.mark.anyio


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / "f").write_bytes(b"precious\n")
    return out


def untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["f"]
    assert (outside / "f").read_bytes() == b"precious\n"


async def test_a_linked_user_directory_is_not_followed(rig: Rig, outside: Path) -> None:
    await rig.add("x", range(3))
    rig.logs.mkdir(parents=True)
    (rig.logs / "user_x").symlink_to(outside)
    report = await rig.drainer().drain_once()
    assert report.unsafe == [EventKey("x", DAY).key]
    untouched(outside)
    assert rig.stats()["buffered"] == 3
    # still in Redis, not even claimed (its file is looked at first), for a pass after
    # the link is gone
    assert rig.raw.llen(EventKey("x", DAY).key) == 3


@pytest.mark.parametrize("target", ["f", "missing"])
async def test_a_linked_day_file_is_not_appended_to_or_created(
    rig: Rig, outside: Path, target: str
) -> None:
    await rig.add("x", range(3))
    rig.path("x").parent.mkdir(parents=True)
    rig.path("x").symlink_to(outside / target)
    report = await rig.drainer().drain_once()
    assert report.unsafe == [EventKey("x", DAY).key]
    untouched(outside)
    assert rig.stats()["buffered"] == 3


async def test_a_link_planted_before_a_repair_is_not_truncated(rig: Rig, outside: Path) -> None:
    """A claim left by a dead drainer, whose repair would cut the file to its offset."""
    ek = EventKey("x", DAY)
    await rig.add("x", range(2))
    first = await rig.drainer().drain_once()
    assert first.ok
    await rig.add("x", range(2, 4))
    # a drainer that claimed the key and recorded offset 0, then died
    await rig.buffer.claim([ek], "dead", 1)
    rig.raw.set(ek.offset, 0)
    rig.path("x").unlink()
    rig.path("x").symlink_to(outside / "f")
    await rig.wait_lease_gone(ek)
    report = await rig.drainer().drain_once()
    assert ek.key in report.unsafe
    untouched(outside)


async def test_a_day_file_shared_by_two_keys_is_not_repaired_against_each_other(
    rig: Rig,
) -> None:
    """Two keys reaching one file (a hard link here; ``Bob`` and ``bob`` on a
    case-insensitive filesystem): both refused, acknowledged lines kept."""
    lines = await rig.add("a", range(2))
    assert (await rig.drainer().drain_once()).ok
    rig.path("b").parent.mkdir()
    os.link(rig.path("a"), rig.path("b"))
    await rig.add("a", range(2, 3))
    await rig.add("b", range(2))
    report = await rig.drainer().drain_once()
    assert sorted(report.unsafe) == sorted([EventKey("a", DAY).key, EventKey("b", DAY).key])
    assert rig.file_lines("a") == lines
    assert rig.stats()["buffered"] == 3
