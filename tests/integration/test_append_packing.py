"""Buffer.append sends each list's values as one newline-joined argument (scripts.APPEND).

On the real redis-server: whatever the values hold (newlines, nothing, many), each
list gets exactly the values it was given, in order, and the counters add up.
"""

from __future__ import annotations

import pytest

from logpipe_cli.errors import RedisUnavailableError, WrongTypeError
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


@pytest.mark.parametrize("bad_values", [1, 3])
@pytest.mark.parametrize("with_ids", [False, True])
async def test_a_list_of_another_type_met_half_way_undoes_every_write_before_it(
    rig: Rig, with_ids: bool, bad_values: int
) -> None:
    """APPEND pushes without checking each list's type first: a list of another type met
    after others were pushed (in every packing: one value, many joined, more than one
    RPUSH's worth, one per argument) cuts them back and removes the ids it added, so the
    refusal stores nothing and the same call stored again once the key is fixed is not
    taken for a duplicate."""
    before = [b'{"old":1}']
    rig.raw.rpush(key("one"), *before)
    bad = key("bad")
    rig.raw.hset(bad, "x", "1")
    lists = {
        key("one"): [b'{"a":1}'],
        key("joined"): [b'{"b":%d}' % i for i in range(3)],
        key("big"): [b'{"c":%d}' % i for i in range(2500)],
        key("newline"): [b'{"d":1}', b"two\nlines"],
        bad: [b'{"e":%d}' % i for i in range(bad_values)],
        key("after"): [b'{"f":1}'],
    }
    items = [(k, v) for k, vs in lists.items() for v in vs]
    ids = [f"id-{i}" for i in range(len(items))] if with_ids else None
    stats = rig.stats()
    with pytest.raises(WrongTypeError) as refused:
        await rig.buffer.store(items, ids=ids)
    assert refused.value.keys == [bad]
    assert rig.raw.lrange(key("one"), 0, -1) == before
    for k in lists:
        if k not in (key("one"), bad):
            assert rig.raw.exists(k) == 0, k
    assert rig.raw.keys("logpipe:ids:*") == []
    assert rig.stats() == stats
    rig.raw.delete(bad)
    stored = await rig.buffer.store(items, ids=ids)
    assert stored.duplicates == []
    assert bool(rig.raw.keys("logpipe:ids:*")) == with_ids
    assert rig.raw.lrange(key("one"), 0, -1) == before + lists[key("one")]
    for k, vs in lists.items():
        if k != key("one"):
            assert rig.raw.lrange(k, 0, -1) == vs, k


async def test_a_write_refused_by_maxmemory_stores_nothing(rig: Rig) -> None:
    """Any refusal of a push, not only another type's (whether Redis refuses the script
    at its start or its second push): nothing is left stored, and the error comes back
    as Redis gave it."""
    rig.raw.rpush(key("one"), b'{"old":1}')
    items = [(key("one"), b'{"a":1}'), (key("two"), b'{"b":1}')]
    used = int(rig.raw.info("memory")["used_memory"])
    # room for the first push only: the script and its first write fit, the second not
    rig.raw.config_set("maxmemory", used + 200)
    try:
        payload = b'{"x":"' + b"y" * 4000 + b'"}'
        with pytest.raises(RedisUnavailableError, match="maxmemory"):
            await rig.buffer.store([items[0], (key("two"), payload)])
    finally:
        rig.raw.config_set("maxmemory", 0)
    assert rig.raw.lrange(key("one"), 0, -1) == [b'{"old":1}']
    assert rig.raw.exists(key("two")) == 0
