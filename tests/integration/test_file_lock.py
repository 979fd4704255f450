"""A file whose lock another process keeps is left for later, never waited on for good."""

from __future__ import annotations

from pathlib import Path

import pytest

from logpipe_cli.errors import FileBusyError
from logpipe_cli.keys import EventKey
from logpipe_cli.sink import LockedFile
from tests.integration.conftest import DAY, Rig

pytestmark = pytest.mark.anyio


def test_open_gives_up_on_a_lock_held_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "user_u" / "1.jsonl"
    holder = LockedFile.open(path)  # another open file description: flock conflicts
    try:
        with pytest.raises(FileBusyError, match="locked by another process"):
            LockedFile.open(path, lock_timeout_s=0.1)
    finally:
        holder.close()
    again = LockedFile.open(path, lock_timeout_s=0.1)
    again.close()


async def test_drain_leaves_a_locked_file_for_later_and_delivers_once_free(rig: Rig) -> None:
    events = await rig.add("u", range(3))
    holder = LockedFile.open(rig.path("u"))  # a stopped drainer that never lets go
    try:
        report = await rig.drainer(lease_seconds=0.1).drain_once(wait_for_busy=False)
    finally:
        holder.close()
    assert report.ok, report.errors
    assert report.busy == [EventKey("u", DAY).key]
    assert report.events == 0
    assert rig.file("u") == b""
    assert rig.stats()["buffered"] == 3  # still in Redis, in the claim

    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.events == 3
    assert rig.file_lines("u") == events
    assert rig.redis_keys() == []
