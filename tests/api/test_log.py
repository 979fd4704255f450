"""POST /log: what is stored where, and every way a request is refused without a 500."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.events import day_of
from tests.conftest import MakeSettings
from tests.redis_server import RedisServer, free_port


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": "u1", "event": "login", "timestamp": int(time.time())}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def stored_keys(store: redis.Redis) -> list[bytes]:
    return sorted(store.scan_iter(match="logs:*"))


def test_stores_one_compact_line_in_the_day_list(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    ts = 1_700_000_000
    sent = event(timestamp=ts, plan={"tier": "gold"}, amount=12.5, tags=["a", "b"])
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/log", json=sent)
    assert resp.status_code == 200
    key = f"logs:user_u1:{day_of(ts)}"
    assert resp.json() == {"stored": True, "key": key}
    assert resp.headers["content-type"].startswith("application/json")
    (line,) = store.lrange(key, 0, -1)
    assert json.loads(line) == sent
    assert b", " not in line
    assert b": " not in line
    assert stored_keys(store) == [key.encode()]


def test_events_keep_their_order(settings_for: MakeSettings, store: redis.Redis) -> None:
    with TestClient(create_app(settings_for())) as client:
        for i in range(20):
            assert client.post("/log", json=event(event=f"e{i}", timestamp=86400 * 3)).is_success
    lines = store.lrange("logs:user_u1:3", 0, -1)
    assert [json.loads(x)["event"] for x in lines] == [f"e{i}" for i in range(20)]


def test_days_and_users_go_to_their_own_lists(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    with TestClient(create_app(settings_for())) as client:
        for uid, ts in (("a", 0), ("a", 86400), ("b", 86399), ("b", 86400 * 10 + 5)):
            assert client.post("/log", json=event(user_id=uid, timestamp=ts)).status_code == 200
    assert stored_keys(store) == [
        b"logs:user_a:0",
        b"logs:user_a:1",
        b"logs:user_b:0",
        b"logs:user_b:10",
    ]


def test_partition_by_ingest_uses_the_servers_day(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    settings = settings_for(server={"partition_by": "ingest"})
    with TestClient(create_app(settings)) as client:
        before = day_of(time.time())
        resp = client.post("/log", json=event(timestamp=0))
        after = day_of(time.time())
    assert resp.status_code == 200
    day = int(resp.json()["key"].rsplit(":", 1)[1])
    assert day in {before, after}
    assert day != 0
    (line,) = store.lrange(resp.json()["key"], 0, -1)
    assert json.loads(line)["timestamp"] == 0  # the event itself is unchanged


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.logpipe+json",
    ],
)
def test_json_content_types_accepted(
    settings_for: MakeSettings, store: redis.Redis, content_type: str
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post(
            "/log", content=json.dumps(event()), headers={"content-type": content_type}
        )
    assert resp.status_code == 200, resp.text
    assert len(stored_keys(store)) == 1


# ---- 400 ------------------------------------------------------------------------------


def post_raw(settings: Any, body: bytes) -> Any:
    with TestClient(create_app(settings)) as client:
        return client.post("/log", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b'{"user_id": "u1", ', "not valid JSON", id="truncated"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"user_id=u1", "not valid JSON", id="form"),
        pytest.param(
            b'{"user_id":"u1","event":"\xff","timestamp":1}', "not valid JSON", id="bad-utf8"
        ),
        pytest.param(b"[1, 2]", "must be a JSON object, got array", id="array"),
        pytest.param(b'"hello"', "must be a JSON object, got string", id="string"),
        pytest.param(b"null", "must be a JSON object, got null", id="null"),
    ],
)
def test_malformed_body_is_400(
    settings_for: MakeSettings, store: redis.Redis, body: bytes, fragment: str
) -> None:
    resp = post_raw(settings_for(), body)
    assert resp.status_code == 400
    assert fragment in resp.json()["detail"]
    assert "field" not in resp.json()
    assert stored_keys(store) == []


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"user_id": ...}, "user_id", "field is required"),
        ({"event": ...}, "event", "field is required"),
        ({"timestamp": ...}, "timestamp", "field is required"),
        ({"user_id": 42}, "user_id", "must be a string, got integer"),
        ({"user_id": "../etc"}, "user_id", "1-128 characters"),
        ({"user_id": "x" * 129}, "user_id", "1-128 characters"),
        ({"event": ["login"]}, "event", "must be a string, got array"),
        ({"event": ""}, "event", "1-256 characters, got 0"),
        ({"event": "x" * 257}, "event", "1-256 characters, got 257"),
        ({"timestamp": "1700000000"}, "timestamp", "got string"),
        ({"timestamp": True}, "timestamp", "got boolean"),
        ({"timestamp": 1.5}, "timestamp", "got number"),
        ({"timestamp": -1}, "timestamp", "must not be negative"),
        ({"timestamp": 1_700_000_000_000}, "timestamp", "milliseconds"),
        ({"timestamp": int(time.time()) + 3 * 86400}, "timestamp", "ahead of the server's clock"),
    ],
)
def test_bad_field_is_400_naming_it(
    settings_for: MakeSettings,
    store: redis.Redis,
    changes: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/log", json=event(**changes))
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["field"] == field
    assert fragment in body["detail"]
    assert stored_keys(store) == []


def test_max_future_seconds_is_configurable(settings_for: MakeSettings) -> None:
    settings = settings_for(server={"max_future_seconds": 0})
    with TestClient(create_app(settings)) as client:
        assert client.post("/log", json=event(timestamp=int(time.time()) + 3600)).status_code == 400
        assert client.post("/log", json=event(timestamp=int(time.time()) - 1)).status_code == 200


# ---- 413, 415 -------------------------------------------------------------------------


def test_body_over_the_limit_is_413(settings_for: MakeSettings, store: redis.Redis) -> None:
    settings = settings_for(server={"max_body_bytes": 200})
    with TestClient(create_app(settings)) as client:
        small = client.post("/log", json=event(pad="x" * 50))
        big = client.post("/log", json=event(pad="x" * 300))
    assert small.status_code == 200
    assert big.status_code == 413
    assert big.json() == {"detail": "request body too large"}
    assert store.llen(small.json()["key"]) == 1


def test_streamed_body_over_the_limit_is_413(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    settings = settings_for(server={"max_body_bytes": 200})
    payload = json.dumps(event(pad="x" * 300)).encode()

    def chunks() -> Any:  # no Content-Length: the limit must hold while reading
        for i in range(0, len(payload), 50):
            yield payload[i : i + 50]

    with TestClient(create_app(settings)) as client:
        resp = client.post("/log", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert stored_keys(store) == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_non_json_content_type_is_415(
    settings_for: MakeSettings, store: redis.Redis, content_type: str
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post(
            "/log", content=json.dumps(event()), headers={"content-type": content_type}
        )
    assert resp.status_code == 415
    assert "application/json" in resp.json()["detail"]
    assert stored_keys(store) == []


def test_wrong_method_is_not_a_500(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        assert client.get("/log").status_code == 405
        assert client.post("/nope", json={}).status_code == 404


# ---- 503 ------------------------------------------------------------------------------


def test_redis_unreachable_is_503_with_retry_after(make_settings: MakeSettings) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}", redis={"timeout_seconds": 1.0})
    with TestClient(create_app(settings)) as client:
        resp = client.post("/log", json=event())
        again = client.post("/log", json=event())  # still serving
    assert resp.status_code == 503
    assert int(resp.headers["retry-after"]) >= 1
    assert "redis unavailable" in resp.json()["detail"]
    assert again.status_code == 503


def test_recovers_when_redis_comes_back(
    make_settings: MakeSettings, own_redis: RedisServer
) -> None:
    settings = make_settings(own_redis.url, redis={"timeout_seconds": 2.0})
    with TestClient(create_app(settings)) as client:
        assert client.post("/log", json=event(event="before")).status_code == 200
        own_redis.stop()
        down = client.post("/log", json=event(event="during"))
        assert down.status_code == 503
        assert "retry-after" in down.headers
        assert client.get("/readyz").status_code == 503
        own_redis.start()
        up = client.post("/log", json=event(event="after"))
        assert up.status_code == 200, up.text
        assert client.get("/readyz").status_code == 200
    check = own_redis.client()
    try:
        lines = check.lrange(up.json()["key"], 0, -1)
    finally:
        check.close()
    # AOF kept the first event across the restart; the refused one was never stored
    assert [json.loads(x)["event"] for x in lines] == ["before", "after"]


def test_buffer_full_is_503_and_stores_nothing(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    settings = settings_for(redis={"max_buffered_events": 2})
    with TestClient(create_app(settings)) as client:
        codes = [client.post("/log", json=event(event=f"e{i}")).status_code for i in range(2)]
        full = client.post("/log", json=event(event="e2"))
    assert codes == [200, 200]
    assert full.status_code == 503
    assert full.headers["retry-after"]
    assert "buffer full" in full.json()["detail"]
    (key,) = stored_keys(store)
    assert [json.loads(x)["event"] for x in store.lrange(key, 0, -1)] == ["e0", "e1"]
