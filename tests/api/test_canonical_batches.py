"""POST /logs answers and stores the same whether a batch is the compact spelling the
whole-body check takes (events.canonical_batch) or any other, judged event by event;
NDJSON and JSON arrays both."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from tests.conftest import MakeSettings

NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}
NOW = int(time.time())
DAY = NOW // 86400


def ev(user: str = "u1", ts: int = NOW, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "event": "e", "timestamp": ts, **extra}


Spelling = Callable[[list[dict[str, Any]]], tuple[bytes, dict[str, str]]]


def compact(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    lines = (json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
    return b"".join(lines), NDJSON


def spaced(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events), NDJSON


def compact_array(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(events, separators=(",", ":")).encode(), JSON


def spaced_array(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(events).encode(), JSON


SPELLINGS = pytest.mark.parametrize(
    "spell",
    [compact, spaced, compact_array, spaced_array],
    ids=["compact", "spaced", "compact-array", "spaced-array"],
)


def post(client: TestClient[Any], spell: Spelling, events: list[dict[str, Any]]) -> Any:
    body, headers = spell(events)
    return client.post("/logs", content=body, headers=headers)


def test_both_spellings_store_the_same_lines(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    events = [ev(f"u{i % 3}", event_id=f"id-{i}") if i % 2 else ev(f"u{i % 3}") for i in range(9)]
    stored: list[list[Any]] = []
    with TestClient(create_app(settings_for())) as client:
        for spell in (compact, spaced, compact_array, spaced_array):
            answer = post(client, spell, events)
            assert answer.json() == {"accepted": 9}
            stored.append([store.lrange(f"logs:user_u{u}:{DAY}", 0, -1) for u in range(3)])
            store.flushdb()
    assert stored[0] == stored[1] == stored[2] == stored[3]
    assert stored[0][0][0] == compact([ev("u0")])[0].rstrip(b"\n")


@SPELLINGS
def test_too_many_events_is_413(
    settings_for: MakeSettings, store: redis.Redis, spell: Spelling
) -> None:
    with TestClient(create_app(settings_for(server={"max_batch_events": 3}))) as client:
        answer = post(client, spell, [ev()] * 4)
    assert (answer.status_code, answer.json()) == (
        413,
        {"detail": "batch has 4 events; at most 3 allowed"},
    )
    assert store.keys("logs:*") == []


@SPELLINGS
def test_over_the_burst_is_413(
    settings_for: MakeSettings, store: redis.Redis, spell: Spelling
) -> None:
    app = create_app(settings_for(limits={"events_per_second": 0.001, "burst": 2}))
    with TestClient(app) as client:
        answer = post(client, spell, [ev()] * 3)
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("batch has 3 events; at most limits.burst = 2")
    assert store.keys("logs:*") == []


@SPELLINGS
def test_too_many_keys_is_413(
    settings_for: MakeSettings, store: redis.Redis, spell: Spelling
) -> None:
    app = create_app(settings_for(server={"max_keys_per_request": 1}))
    with TestClient(app) as client:
        answer = post(client, spell, [ev("a"), ev("b")])
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith("batch writes to 2 distinct keys")
    assert store.keys("logs:*") == []


@SPELLINGS
def test_too_old_is_400_naming_the_event(
    settings_for: MakeSettings, store: redis.Redis, spell: Spelling
) -> None:
    app = create_app(settings_for(server={"max_past_seconds": 3600}))
    with TestClient(app) as client:
        answer = post(client, spell, [ev(), ev(ts=NOW - 7200)])
    assert answer.status_code == 400
    assert [e["index"] for e in answer.json()["errors"]] == [1]
    assert store.keys("logs:*") == []


@SPELLINGS
def test_a_retried_batch_is_stored_once(
    settings_for: MakeSettings, store: redis.Redis, spell: Spelling
) -> None:
    events = [ev(event_id="a"), ev(event_id="b"), ev()]
    with TestClient(create_app(settings_for())) as client:
        first = post(client, spell, events)
        again = post(client, spell, events)
    assert first.json() == {"accepted": 3}
    assert again.json() == {"accepted": 3, "duplicates": 2, "duplicate_indexes": [0, 1]}
    assert store.llen(f"logs:user_u1:{DAY}") == 4


@SPELLINGS
@pytest.mark.parametrize(
    "bad",
    [ev("a\nb"), ev(event_id="x\ny")],
    ids=["user-id", "event-id"],
)
def test_an_id_holding_a_newline_is_400_naming_the_event(
    settings_for: MakeSettings, store: redis.Redis, spell: Spelling, bad: dict[str, Any]
) -> None:
    # each piece of "a\nb" is a valid id: a check over the batch's ids joined by
    # newlines must not read it as two (CI's hostile property once found this key)
    with TestClient(create_app(settings_for())) as client:
        answer = post(client, spell, [ev(), bad])
    assert answer.status_code == 400
    assert [e["index"] for e in answer.json()["errors"]] == [1]
    assert store.keys("logs:*") == []
