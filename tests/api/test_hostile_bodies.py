"""Bodies built to crash a decoder: refused with 400 naming the field, never a 500."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.events import MAX_DEPTH, MAX_EVENT_BYTES, MAX_EXTRA_FIELDS
from tests.conftest import MakeSettings

NOW = int(time.time())
HEAD = b'{"user_id":"u1","event":"e","timestamp":' + str(NOW).encode()


def nested(depth: int) -> bytes:
    """An event whose extra field ``deep`` nests ``depth`` arrays."""
    return HEAD + b',"deep":' + b"[" * depth + b"]" * depth + b"}"


def stored(store: redis.Redis) -> list[bytes]:
    return list(store.scan_iter(match="logs:*"))


@pytest.mark.parametrize("depth", [970, 100_000])
def test_a_deep_event_on_post_log_is_a_400_naming_the_field(
    settings_for: MakeSettings, store: redis.Redis, depth: int
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post(
            "/log", content=nested(depth), headers={"content-type": "application/json"}
        )
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"detail": f"deep: nests deeper than {MAX_DEPTH} levels", "field": "deep"}
    assert stored(store) == []


def test_a_deep_body_without_a_field_is_a_400(settings_for: MakeSettings) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/log", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json() == {"detail": f"body: nests deeper than {MAX_DEPTH} levels"}


def test_the_deepest_allowed_event_is_stored(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    # the event object is level 1, so its field may nest MAX_DEPTH - 1 arrays
    with TestClient(create_app(settings_for())) as client:
        ok = client.post("/log", content=nested(MAX_DEPTH - 1))
        too_deep = client.post("/log", content=nested(MAX_DEPTH))
    assert ok.status_code == 200, ok.text
    assert too_deep.status_code == 400
    assert too_deep.json()["field"] == "deep"
    assert len(stored(store)) == 1


@pytest.mark.parametrize("depth", [970, 100_000])
@pytest.mark.parametrize("gzipped", [False, True])
def test_a_deep_event_in_an_ndjson_batch_refuses_the_batch(
    settings_for: MakeSettings, store: redis.Redis, depth: int, gzipped: bool
) -> None:
    body = HEAD + b"}\n" + nested(depth) + b"\n"
    headers = {"content-type": "application/x-ndjson"}
    if gzipped:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errors"] == [
        {"index": 1, "detail": f"deep: nests deeper than {MAX_DEPTH} levels"}
    ]
    assert stored(store) == []


def test_a_moderately_deep_event_in_a_json_batch_is_listed(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    body = b"[" + HEAD + b"}," + nested(500) + b"]"
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["errors"] == [
        {"index": 1, "detail": f"deep: nests deeper than {MAX_DEPTH} levels"}
    ]
    assert stored(store) == []


def test_a_json_batch_too_deep_to_decode_is_a_400(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    body = b"[" + nested(100_000) + b"]"
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert "nests deeper than" in resp.json()["detail"]
    assert stored(store) == []


def test_too_many_extra_fields_and_a_long_name_and_a_big_event_are_refused(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    base = {"user_id": "u1", "event": "e", "timestamp": NOW}
    many = {**base, **{f"f{i}": i for i in range(MAX_EXTRA_FIELDS + 1)}}
    long_name = {**base, "n" * 129: 1}
    big = {**base, "blob": "x" * MAX_EVENT_BYTES}
    with TestClient(create_app(settings_for())) as client:
        answers = [client.post("/log", content=json.dumps(doc)) for doc in (many, long_name, big)]
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert [a.json()["field"] for a in answers] == [f"f{MAX_EXTRA_FIELDS}", "n" * 128, "blob"]
    assert stored(store) == []
