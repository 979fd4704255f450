"""POST /logs: NDJSON or a JSON array, maybe gzipped; all events stored or none."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from tests.conftest import MakeSettings

NDJSON = {"content-type": "application/x-ndjson"}
TS = 86400 * 7 + 5  # day 7


def ev(user: str = "u1", name: str = "e", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "event": name, "timestamp": TS, **extra}


def ndjson(events: list[Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def gzip_cut_after_whole_lines() -> bytes:
    """A gzip stream flushed after three whole lines and cut there (no trailer)."""
    co = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return co.compress(ndjson([ev()] * 3)) + co.flush(zlib.Z_SYNC_FLUSH)


def names(store: redis.Redis, key: str) -> list[str]:
    return [json.loads(x)["event"] for x in store.lrange(key, 0, -1)]


def logs_keys(store: redis.Redis) -> list[bytes]:
    return sorted(store.scan_iter(match="logs:*"))


def test_ndjson_batch_is_stored_in_order(settings_for: MakeSettings, store: redis.Redis) -> None:
    batch = [ev("a", "a1"), ev("b", "b1"), ev("a", "a2", extra=True), ev("a", "a3")]
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=ndjson(batch), headers=NDJSON)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 4}
    assert names(store, "logs:user_a:7") == ["a1", "a2", "a3"]
    assert names(store, "logs:user_b:7") == ["b1"]
    assert json.loads(store.lindex("logs:user_a:7", 1) or b"")["extra"] is True


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/ndjson", "application/jsonl"]
)
def test_ndjson_media_types_and_blank_and_crlf_lines(
    settings_for: MakeSettings, store: redis.Redis, content_type: str
) -> None:
    x, y = (json.dumps(ev(name=n)).encode() for n in "xy")
    body = b"\n" + x + b"\r\n\n  \n" + y
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers={"content-type": content_type})
    assert resp.json() == {"accepted": 2}
    assert names(store, "logs:user_u1:7") == ["x", "y"]


def test_json_array_batch(settings_for: MakeSettings, store: redis.Redis) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", json=[ev(name="x"), ev(name="y")])
    assert resp.json() == {"accepted": 2}
    assert names(store, "logs:user_u1:7") == ["x", "y"]


def test_gzip_batch(settings_for: MakeSettings, store: redis.Redis) -> None:
    body = gzip.compress(ndjson([ev(name=f"z{i}") for i in range(100)]))
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers={**NDJSON, "content-encoding": "gzip"})
    assert resp.json() == {"accepted": 100}
    assert names(store, "logs:user_u1:7") == [f"z{i}" for i in range(100)]


def test_empty_batch_stores_nothing(settings_for: MakeSettings, store: redis.Redis) -> None:
    with TestClient(create_app(settings_for())) as client:
        assert client.post("/logs", content=b"", headers=NDJSON).json() == {"accepted": 0}
        assert client.post("/logs", json=[]).json() == {"accepted": 0}
    assert logs_keys(store) == []


def test_one_bad_event_refuses_the_whole_batch(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    batch: list[Any] = [ev(name="ok"), ev(user=".bad"), ev(name="ok2"), ["not", "an", "object"]]
    with TestClient(create_app(settings_for())) as client:
        nd = client.post("/logs", content=ndjson(batch) + b"{broken\n", headers=NDJSON)
        arr = client.post("/logs", json=batch)
    for resp, count in ((nd, 5), (arr, 4)):
        assert resp.status_code == 400
        body = resp.json()
        assert body["detail"].endswith(f"of {count} events invalid; nothing stored")
        errors = {e["index"]: e["detail"] for e in body["errors"]}
        assert "user_id" in errors[1]
        assert "must be a JSON object" in errors[3]
        assert 0 not in errors
        assert 2 not in errors
    assert "not valid JSON" in {e["index"]: e["detail"] for e in nd.json()["errors"]}[4]
    assert logs_keys(store) == []
    assert store.hget("logpipe:stats", "accepted") is None


def test_errors_listed_are_capped(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", json=[{"nope": i} for i in range(150)])
    assert resp.status_code == 400
    assert resp.json()["detail"].startswith("150 of 150 events invalid")
    assert len(resp.json()["errors"]) == 100


def test_too_many_events_is_413(settings_for: MakeSettings, store: redis.Redis) -> None:
    settings = settings_for(server={"max_batch_events": 3})
    with TestClient(create_app(settings)) as client:
        ok = client.post("/logs", content=ndjson([ev()] * 3), headers=NDJSON)
        too_many = client.post("/logs", content=ndjson([ev()] * 4), headers=NDJSON)
    assert ok.status_code == 200
    assert too_many.status_code == 413
    assert "at most 3" in too_many.json()["detail"]
    assert store.llen("logs:user_u1:7") == 3


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        pytest.param(
            b'{"user_id":"u"}',
            {"content-type": "application/json"},
            400,
            "must be an array",
            id="json-not-array",
        ),
        pytest.param(
            b"[1,", {"content-type": "application/json"}, 400, "not valid JSON", id="json-malformed"
        ),
        pytest.param(
            b"not gzip",
            {**NDJSON, "content-encoding": "gzip"},
            400,
            "not valid gzip",
            id="bad-gzip",
        ),
        pytest.param(
            gzip.compress(ndjson([ev()] * 50))[:-30],
            {**NDJSON, "content-encoding": "gzip"},
            400,
            "gzip",
            id="truncated-gzip",
        ),
        pytest.param(
            gzip_cut_after_whole_lines(),
            {**NDJSON, "content-encoding": "gzip"},
            400,
            "truncated",
            id="gzip-cut-at-a-line-end",
        ),
        pytest.param(
            b"x", {**NDJSON, "content-encoding": "br"}, 400, "not supported", id="unknown-encoding"
        ),
        pytest.param(
            ndjson([ev()]),
            {"content-type": "text/plain"},
            415,
            "application/x-ndjson",
            id="text-plain",
        ),
    ],
)
def test_refused_batches(
    settings_for: MakeSettings,
    store: redis.Redis,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["detail"]
    assert logs_keys(store) == []


def test_gzip_that_inflates_past_the_limit_is_413(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    settings = settings_for(server={"max_body_bytes": 10_000})
    body = gzip.compress(ndjson([ev(pad="x" * 200)] * 200))
    assert len(body) < 10_000
    with TestClient(create_app(settings)) as client:
        resp = client.post("/logs", content=body, headers={**NDJSON, "content-encoding": "gzip"})
    assert resp.status_code == 413
    assert logs_keys(store) == []


def test_batch_over_the_body_limit_is_413(settings_for: MakeSettings) -> None:
    settings = settings_for(server={"max_body_bytes": 500})
    with TestClient(create_app(settings)) as client:
        resp = client.post("/logs", content=ndjson([ev()] * 20), headers=NDJSON)
    assert resp.status_code == 413


def test_batch_refused_when_buffer_full(settings_for: MakeSettings, store: redis.Redis) -> None:
    settings = settings_for(redis={"max_buffered_events": 5})
    with TestClient(create_app(settings)) as client:
        first = client.post("/logs", content=ndjson([ev()] * 4), headers=NDJSON)
        second = client.post("/logs", content=ndjson([ev()] * 2), headers=NDJSON)
    assert first.status_code == 200
    assert second.status_code == 503
    assert "retry-after" in second.headers
    assert store.llen("logs:user_u1:7") == 4  # all or nothing


def test_batch_timestamps_checked_against_now(settings_for: MakeSettings) -> None:
    future = ev(name="later")
    future["timestamp"] = int(time.time()) + 10 * 86400
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", json=[ev(), future])
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["index"] == 1
