"""Redis key names: built in one place, parsed back only in canonical form."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import pytest

from logpipe_cli import keys
from logpipe_cli.keys import EventKey, event_key, parse_claim_key, parse_event_key


@pytest.mark.parametrize(
    ("user_id", "day"),
    [("1", 0), ("123", 19675), ("me@example.com", 1), ("a.b_c-d+e", 999_999_999), ("Z" * 128, 7)],
)
def test_round_trip(user_id: str, day: int) -> None:
    key = event_key(user_id, day)
    assert key == f"logs:user_{user_id}:{day}"
    parsed = parse_event_key(key)
    assert parsed == EventKey(user_id, day)
    assert parsed is not None
    assert parsed.key == key
    assert parse_event_key(key.encode()) == parsed


def test_derived_keys_live_in_the_namespace() -> None:
    ek = EventKey("u1", 5)
    assert ek.claim == "logpipe:claim:{logs:user_u1:5}"
    assert ek.lease == "logpipe:lease:{logs:user_u1:5}"
    assert ek.offset == "logpipe:offset:{logs:user_u1:5}"
    assert ek.holder == "logpipe:holder:{logs:user_u1:5}"
    assert ek.quarantine == "logpipe:quarantine:{logs:user_u1:5}"
    assert parse_claim_key(ek.claim) == ek
    assert parse_claim_key(ek.claim.encode()) == ek
    assert keys.STATS == "logpipe:stats"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("logs:user_1:01", id="leading-zero-day"),
        pytest.param("logs:user_1:-1", id="negative-day"),
        pytest.param("logs:user_1:+1", id="plus-day"),
        pytest.param("logs:user_1: 1", id="space-day"),
        pytest.param("logs:user_1:1.0", id="float-day"),
        pytest.param("logs:user_1:", id="no-day"),
        pytest.param("logs:user_1", id="no-separator"),
        pytest.param("logs:user_1:1234567890", id="day-too-long"),
        pytest.param("logs:user_:1", id="empty-user"),
        pytest.param("logs:user_..:1", id="dotdot"),
        pytest.param("logs:user_../../etc:1", id="traversal"),
        pytest.param("logs:user_.hidden:1", id="leading-dot"),
        pytest.param("logs:user_a/b:1", id="slash"),
        pytest.param("logs:user_a\\b:1", id="backslash"),
        pytest.param("logs:user_a:b:1", id="colon-in-user"),
        pytest.param("logs:user_a b:1", id="space-in-user"),
        pytest.param("logs:user_a\x00:1", id="nul"),
        pytest.param("logs:user_é:1", id="non-ascii"),
        pytest.param("logs:user_" + "Z" * 129 + ":1", id="user-too-long"),
        pytest.param("logs:usr_1:1", id="wrong-prefix"),
        pytest.param("LOGS:user_1:1", id="wrong-case-prefix"),
        pytest.param("xlogs:user_1:1", id="prefix-not-at-start"),
        pytest.param("logpipe:claim:logs:user_1:1", id="claim-is-not-an-event-key"),
    ],
)
def test_non_canonical_keys_are_refused(key: str) -> None:
    assert parse_event_key(key) is None
    assert parse_event_key(key.encode("utf-8")) is None
    assert parse_claim_key(keys.CLAIM_PREFIX + "{" + key + "}") is None


def test_undecodable_bytes_are_refused() -> None:
    assert parse_event_key(b"logs:user_\xff:1") is None
    assert parse_claim_key(b"logpipe:claim:{logs:user_\xff:1}") is None


def test_claim_key_needs_its_prefix() -> None:
    assert parse_claim_key("logs:user_1:1") is None
    assert parse_claim_key("logpipe:lease:{logs:user_1:1}") is None
    assert parse_claim_key("logpipe:claim:{logs:user_1:1") is None
    # the old spelling (no hash tag) is not a claim any more: migrate-keys renames it
    assert parse_claim_key("logpipe:claim:logs:user_1:1") is None


def test_event_keys_sort_by_user_then_day() -> None:
    assert sorted([EventKey("b", 1), EventKey("a", 2), EventKey("a", 1)]) == [
        EventKey("a", 1),
        EventKey("a", 2),
        EventKey("b", 1),
    ]


def test_an_event_key_keeps_its_name_and_hash_but_compares_by_user_and_day() -> None:
    ek = EventKey("u", 1)
    assert ek.key == "logs:user_u:1"
    assert ek == EventKey("u", 1)
    assert hash(ek) == hash(EventKey("u", 1))
    assert {ek: 1}[EventKey("u", 1)] == 1
    assert ek != EventKey("u", 2)
    assert sorted([EventKey("b", 1), EventKey("a", 2), EventKey("a", 1)]) == [
        EventKey("a", 1),
        EventKey("a", 2),
        EventKey("b", 1),
    ]
    assert repr(ek) == "EventKey(user_id='u', day=1)"
    moved = dataclasses.replace(ek, day=2)
    assert moved.key == "logs:user_u:2"
    assert hash(moved) == hash(EventKey("u", 2))


def test_an_unpickled_event_key_hashes_as_one_made_there() -> None:
    """Unpickled in a process with another hash seed, a kept hash would be wrong."""
    code = (
        "import pickle, sys; from logpipe_cli.keys import EventKey; "
        "ek = pickle.loads(sys.stdin.buffer.read()); "
        "print(ek.key, hash(ek) == hash(EventKey('u', 7)), ek in {EventKey('u', 7)})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(EventKey("u", 7)),
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.decode().split() == ["logs:user_u:7", "True", "True"]
