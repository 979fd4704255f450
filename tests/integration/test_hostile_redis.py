"""Values and offsets written into Redis by hand: never a crash, never a lost line.

A pending offset is what a crash repair cuts a file back to, so a wrong one would
destroy acknowledged lines or tear one (issue 9, defect 5); a value nested deeper than
any parser goes would stop every pass (defect 1). Both are refused, reported, and the
rest of the pass goes on.
"""

from __future__ import annotations

import pytest

from logpipe_cli.buffer import AckItem, BeginItem
from logpipe_cli.keys import EventKey
from logpipe_cli.sink import encode_lines
from tests.integration.conftest import DAY, Rig

pytestmark = pytest.mark.anyio

DEAD = "dead-drainer"
SHORT_LEASE_MS = 100
EK = EventKey("u", DAY)
OLD = b'{"user_id":"u","event":"drained-earlier","timestamp":1}\n'


async def die_mid_second_batch(rig: Rig) -> tuple[bytes, int]:
    """A drainer acknowledges 4 events, begins 4 more, tears its append and dies.

    Returns the file's acknowledged bytes and its size then.
    """
    events = await rig.add("u", range(10))
    rig.path("u").parent.mkdir(parents=True, exist_ok=True)
    rig.path("u").write_bytes(OLD)
    (claim,) = await rig.buffer.claim([EK], DEAD, SHORT_LEASE_MS)
    assert claim.status == "claimed"
    (first,) = await rig.buffer.begin([BeginItem(EK, len(OLD))], DEAD, SHORT_LEASE_MS, 4)
    data = encode_lines(first.values)
    with rig.path("u").open("ab") as fh:
        fh.write(data)
    acked = OLD + data
    await rig.buffer.ack([AckItem(EK, 4, 4, len(data), [], len(acked))], DEAD, SHORT_LEASE_MS)
    (second,) = await rig.buffer.begin([BeginItem(EK, len(acked))], DEAD, SHORT_LEASE_MS, 4)
    assert second.values == events[4:8]
    with rig.path("u").open("ab") as fh:
        fh.write(encode_lines(second.values)[:-5])  # torn
    await rig.wait_lease_gone(EK)
    return acked, len(acked)


NOT_RECORDED = "was not recorded by the holder being recovered"


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        pytest.param(lambda size: {"offset": "0"}, NOT_RECORDED, id="zero"),
        pytest.param(lambda size: {"offset": "10"}, NOT_RECORDED, id="mid-line"),
        pytest.param(lambda size: {"offset": "abc"}, "is not a byte count", id="abc"),
        pytest.param(lambda size: {"offset": "-1"}, "is not a byte count", id="negative"),
        pytest.param(lambda size: {"offset": str(10**12)}, NOT_RECORDED, id="beyond-eof"),
        # a true line boundary, but another claim's (the first batch's) offset
        pytest.param(lambda size: {"offset": str(len(OLD))}, NOT_RECORDED, id="another-claims"),
        pytest.param(
            lambda size: {"offset": str(size), "holder": None},
            "has no holder record",
            id="no-holder",
        ),
        # offset and holder record forged together: the file itself still decides
        pytest.param(
            lambda size: {"offset": str(10**12), "holder": f"{10**12} another"},
            "beyond the end of the file",
            id="forged-beyond-eof",
        ),
        pytest.param(
            lambda size: {"offset": str(size + 10), "holder": f"{size + 10} another"},
            "not at the start of a line",
            id="forged-mid-line",
        ),
    ],
)
async def test_a_hand_written_offset_is_refused(rig: Rig, forge: object, reason: str) -> None:
    other = await rig.add("v", range(3))
    acked, size = await die_mid_second_batch(rig)
    for name, value in forge(size).items():  # type: ignore[operator]
        key = EK.offset if name == "offset" else EK.holder
        if value is None:
            rig.raw.delete(key)
        else:
            rig.raw.set(key, value)
    torn = rig.file("u")

    report = await rig.drainer().drain_once()

    assert report.ok, report.errors
    (refused,) = report.unsafe
    assert refused.startswith(f"{EK.key} (claim refused: ")
    assert reason in refused
    assert rig.file("u") == torn  # nothing cut: the acknowledged lines are all there
    assert rig.file("u").startswith(acked)
    assert rig.raw.llen(EK.claim) == 6  # the claim stays in Redis for an operator
    assert rig.file_lines("v") == other  # the rest of the pass went on

    again = await rig.drainer().drain_once()  # and it stays refused, pass after pass
    assert len(again.unsafe) == 1
    assert rig.file("u") == torn


async def test_the_recorded_offset_is_still_trusted(rig: Rig) -> None:
    """The control for the test above: left alone, the offset repairs the torn append."""
    acked, _ = await die_mid_second_batch(rig)
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.unsafe == []
    assert report.events == 6
    lines = rig.file_lines("u")
    assert rig.file("u").startswith(acked)
    assert len(lines) == 11  # OLD + 10 events, each once


async def test_a_value_nested_100000_deep_is_quarantined(rig: Rig) -> None:
    good = await rig.add("u", range(2))
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    rig.raw.rpush(EK.key, deep)
    later = await rig.add("u", range(2, 4))
    other = await rig.add("v", range(3))

    report = await rig.drainer().drain_once()

    assert report.ok, report.errors
    assert report.quarantined == 1
    assert rig.raw.lrange(EK.quarantine, 0, -1) == [deep]
    assert rig.file_lines("u") == good + later
    assert rig.file_lines("v") == other
