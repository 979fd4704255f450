"""A value nested too deep to decode, written to Redis by hand: quarantined, and every
other key of the pass still drained (issue 9, defect 1: it used to stop every drain)."""

from __future__ import annotations

import pytest

from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, Rig, line

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("depth", [970, 100_000])
async def test_a_deep_value_never_stops_a_drain(rig: Rig, depth: int) -> None:
    ek = EventKey("u", DAY)
    deep = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    good = [line("u", n) for n in range(2)]
    rig.raw.rpush(ek.key, good[0], deep, good[1])
    others = [await rig.add(f"o{i}", range(2)) for i in range(70)]  # more than one group

    report = await rig.drainer().drain_once()

    assert report.ok, report.errors
    for i, lines in enumerate(others):
        assert rig.file_lines(f"o{i}") == lines
    written = rig.file_lines("u")
    assert [x for x in written if x != deep] == good
    quarantined = rig.raw.lrange(ek.quarantine, 0, -1)
    # too deep for the decoder in the drainer's thread: quarantined; shallower
    # (the decoder's reach depends on the stack it runs on): a JSON object, written
    assert len(written) + len(quarantined) == 3
    if depth == 100_000:
        assert quarantined == [deep]
    assert rig.raw.exists(ek.key, ek.claim) == 0
