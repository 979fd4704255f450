"""Hash slots and the cluster key layout, without Redis: every key of one list in its
slot, one tag per slot, a flush split by slot (slot_plan.plan_flush), and the drain
commands' global counters replaced by the slot's own (slot_plan.localize)."""

from __future__ import annotations

import pytest

from logpipe_cli import keys, scripts
from logpipe_cli.keys import EventKey, classify, parse_legacy
from logpipe_cli.settings import RedisSettings
from logpipe_cli.slot_plan import localize, plan_flush
from logpipe_cli.slots import SLOTS, group_by_slot, key_slot, slot_tag


def test_key_slot_matches_redis_for_known_keys() -> None:
    # values from CLUSTER KEYSLOT on Redis 7
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == 3443
    assert key_slot(b"") == 0
    assert key_slot("{}x") != key_slot("{}y")  # an empty tag is no tag
    assert key_slot("a{b}c{d}") == key_slot("b")  # the first tag counts


def test_key_slot_agrees_with_redis_py() -> None:
    from redis.crc import key_slot as redis_py

    names = [f"logs:user_u{i}:{i % 40}" for i in range(2000)] + ["{a}b", "x{}", "{{a}}"]
    assert all(key_slot(n) == redis_py(n.encode()) for n in names)


def test_every_slot_has_a_short_tag_that_hashes_to_it() -> None:
    tags = [slot_tag(s) for s in range(SLOTS)]
    assert all(key_slot(t) == s for s, t in enumerate(tags))
    assert max(map(len, tags)) <= 3
    assert len(set(tags)) == SLOTS


@pytest.mark.parametrize("user", ["a", "u_1", "x@y.z", "Z" * 128])
def test_a_lists_companions_and_dedupe_sets_share_its_slot(user: str) -> None:
    ek = EventKey(user, 19675)
    slot = key_slot(ek.key)
    for name in (*ek.companions, keys.list_id_set(ek.key, 7)):
        assert key_slot(name) == slot, name


@pytest.mark.parametrize("slot", [0, 1, 8191, 16383])
def test_per_slot_copies_of_the_global_keys(slot: int) -> None:
    for name in (keys.STATS, keys.FLUSHES, keys.REPLICATED):
        copy = keys.slot_key(name, slot)
        assert copy.startswith(name + ":{")
        assert key_slot(copy) == slot


def test_old_companion_names_are_recognised_but_not_used() -> None:
    ek = EventKey("bob", 7)
    for old, new in zip(ek.legacy_companions, ek.companions, strict=True):
        assert parse_legacy(old) == ek
        assert parse_legacy(new) is None
        assert old.replace(ek.key, "{" + ek.key + "}") == new
    # an old claim or quarantine found by a scan maps to no file: left alone, reported
    assert classify(ek.legacy_companions[0]).event_key is None
    assert classify(ek.claim).event_key == ek
    assert classify(ek.quarantine).event_key == ek


def test_group_by_slot_keeps_the_order_within_a_slot() -> None:
    names = [EventKey(f"u{i}", 1).key for i in range(50)]
    groups = group_by_slot(names)
    assert sorted(n for g in groups.values() for n in g) == sorted(names)
    for slot, group in groups.items():
        assert all(key_slot(n) == slot for n in group)
        assert group == [n for n in names if n in group]


def test_a_flush_is_planned_as_one_single_slot_append_per_slot() -> None:
    items = [(EventKey(f"u{i % 7}", 1).key, b'{"n":%d}' % i) for i in range(30)]
    ids = [f"id{i}" if i % 2 else None for i in range(30)]
    calls = plan_flush(items, "f1", RedisSettings(dedupe_seconds=100), ids, now=1000.0)
    assert sorted(i for c in calls for i in c.order) == list(range(30))
    for call in calls:
        assert {key_slot(k) for k in call.script_keys} == {call.slot}
        assert call.script_keys[0] == keys.slot_key(keys.STATS, call.slot)
        assert call.script_keys[-1] == keys.slot_key(keys.FLUSHES, call.slot)
        # the fixed tail: no rate buckets, and limits left to the caller (0)
        assert call.argv[0] == 0  # max buffered events
        assert call.argv[-6] == 0  # max buffered bytes
        assert call.argv[-4:-1] == [0, 0, 0]  # events per second, burst, rate buckets
        assert call.script_keys[1:-1] == call.lists
        # the ids' scope: per list (2); the script names each list's dedupe set from the
        # list, a key it does not declare, so the set must be in the list's slot
        assert call.argv[-1] == 2
        assert {key_slot(keys.list_id_set(k, 10)) for k in call.lists} == {call.slot}
        assert call.argv[2] == "f1"
        # each list's values in the flush's order
        for key in call.lists:
            mine = [i for i in call.order if items[i][0] == key]
            assert mine == sorted(mine)


def test_localize_moves_the_counters_into_the_commands_slot() -> None:
    ek = EventKey("u", 3)
    ack = ("EVALSHA", "sha", 3, ek.claim, keys.STATS, ek.holder, "owner", 5)
    out = localize(ack)
    assert out == (
        "EVALSHA", "sha", 3, ek.claim, keys.slot_key(keys.STATS, key_slot(ek.key)), ek.holder,
        "owner", 5,
    )  # fmt: skip
    assert localize(("LRANGE", ek.claim, 0, 9)) == ("LRANGE", ek.claim, 0, 9)
    # an argument that happens to equal the name is not a key: left alone
    other = ("EVALSHA", "sha", 1, ek.lease, keys.STATS)
    assert localize(other) == other


def test_append_header_still_names_the_arguments_plan_flush_fills() -> None:
    # plan_flush builds APPEND's arguments itself: fail here if their layout changes
    tail = "ARGV[T+8] = b, the number of rate buckets,\n-- ARGV[T+9] = the ids' scope"
    assert tail in scripts.APPEND
    assert "2 = per list" in scripts.APPEND
    assert "KEYS[#KEYS] = flush ids" in scripts.APPEND
