"""Buffer.append sends each list's values as one newline-joined argument (scripts.APPEND).

On the real redis-server: whatever the values hold (newlines, nothing, many), each
list gets exactly the values it was given, in order, and the counters add up.
"""

from __future__ import annotations

import pytest

from logpipe_cli.keys import EventKey
from tests.integration.conftest import Rig

pytestmark = pytest.mark.anyio


def key(user: str) -> str:
    return EventKey(user, 19675).key


async def test_values_arrive_exactly_whatever_they_hold(rig: Rig) -> None:
    plain = [b'{"n":%d}' % i for i in range(2500)]  # more than one RPUSH's worth (1000)
    odd = [b"", b'{"a":"x"}', b"", b"two\nlines", b"\n", b'{"b":1}']
    empty_only = [b"", b""]
    items: list[tuple[str, bytes]] = []
    for i in range(max(len(plain), len(odd))):
        if i < len(plain):
            items.append((key("plain"), plain[i]))
        if i < len(odd):
            items.append((key("odd"), odd[i]))
        if i < len(empty_only):
            items.append((key("empty"), empty_only[i]))
    total = len(plain) + len(odd) + len(empty_only)
    assert await rig.buffer.append(items) == total
    assert rig.raw.lrange(key("plain"), 0, -1) == plain
    assert rig.raw.lrange(key("odd"), 0, -1) == odd
    assert rig.raw.lrange(key("empty"), 0, -1) == empty_only
    assert rig.stats()["buffered"] == total
    assert rig.stats()["accepted"] == total


async def test_a_single_value_per_list(rig: Rig) -> None:
    items = [(key(f"u{i}"), b'{"i":%d}' % i) for i in range(50)]
    assert await rig.buffer.append(items) == 50
    for i in range(50):
        assert rig.raw.lrange(key(f"u{i}"), 0, -1) == [b'{"i":%d}' % i]
