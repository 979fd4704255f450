"""Idempotent events through the API: an event_id stored once per user within the window;
``POST /logs`` counts and lists the duplicates, ``POST /log`` says ``"duplicate": true``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.schemas import BatchStored, Stored
from tests.conftest import MakeSettings

NDJSON = {"content-type": "application/x-ndjson"}
TS = 86400 * 7 + 5


def ev(n: int, user: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "event": f"e{n}", "timestamp": TS, **extra}


def ndjson(events: list[Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def lines(store: redis.Redis) -> list[dict[str, Any]]:
    return [
        json.loads(v) for k in sorted(store.scan_iter("logs:*")) for v in store.lrange(k, 0, -1)
    ]


def test_a_batch_lists_its_duplicates_including_within_itself(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    with TestClient(create_app(settings_for())) as client:
        first = client.post(
            "/logs",
            content=ndjson([ev(0, event_id="a"), ev(1), ev(2, event_id="b")]),
            headers=NDJSON,
        )
        again = client.post(
            "/logs",
            content=ndjson(
                [
                    ev(3, event_id="b"),  # stored by the first batch
                    ev(4, event_id="c"),
                    ev(5, event_id="c"),  # earlier in this batch
                    ev(6, user="u2", event_id="a"),  # another user's id space
                    ev(7),  # no id: always stored
                ]
            ),
            headers=NDJSON,
        )
        as_json = client.post("/logs", json=[ev(8, event_id="a")])
    assert first.content == b'{"accepted":3}'  # no duplicates: the answer as before
    assert again.json() == {"accepted": 5, "duplicates": 2, "duplicate_indexes": [0, 2]}
    assert as_json.json() == {"accepted": 1, "duplicates": 1, "duplicate_indexes": [0]}
    for resp in (first, again, as_json):
        msgspec.json.decode(resp.content, type=BatchStored, strict=True)
    assert sorted(e["event"] for e in lines(store)) == ["e0", "e1", "e2", "e4", "e6", "e7"]


def test_log_then_logs_share_the_ids(settings_for: MakeSettings, store: redis.Redis) -> None:
    with TestClient(create_app(settings_for())) as client:
        one = client.post("/log", json=ev(0), headers={"idempotency-key": "k"})
        dup = client.post("/logs", content=ndjson([ev(1, event_id="k")]), headers=NDJSON)
        stats = client.get("/stats").json()
    assert msgspec.json.decode(one.content, type=Stored, strict=True).duplicate is None
    assert dup.json()["duplicates"] == 1
    assert [e["event_id"] for e in lines(store)] == ["k"]
    # a duplicate is answered 200 but not counted as accepted (nothing was stored)
    assert stats["totals"]["accepted"] == 1
    assert stats["api"]["accepted"] == 1


def test_dedupe_off_stores_every_copy(settings_for: MakeSettings, store: redis.Redis) -> None:
    with TestClient(create_app(settings_for(redis={"dedupe_seconds": 0}))) as client:
        answers = [client.post("/log", json=ev(0, event_id="x")).content for _ in range(2)]
    assert answers[0] == answers[1]
    assert b"duplicate" not in answers[0]
    assert len(lines(store)) == 2


def test_openapi_documents_the_duplicate_fields(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        doc = client.get("/schema/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert set(schemas["BatchStored"]["properties"]) == {
        "accepted",
        "duplicates",
        "duplicate_indexes",
    }
    assert schemas["BatchStored"]["required"] == ["accepted"]
    assert "duplicate" in schemas["Stored"]["properties"]
    post = doc["paths"]["/log"]["post"]
    [header] = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert "event_id" in body["properties"]
