"""POST /log's ASGI fast path answers exactly as the Litestar handler it stands in front of.

A body with a Content-Length takes the fast path; the same body sent chunked (no
Content-Length) goes through Litestar's ``post_log`` handler. Both must give the same
status, headers, body, stored lines and metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis
from litestar import Request
from litestar.testing import TestClient

from logpipe_cli import ingest
from logpipe_cli.api import create_app, services_of
from tests.conftest import MakeSettings

NOW = int(time.time())


@pytest.fixture
def body_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of Litestar's ``Request.body``: only the handler path reads it."""
    calls: list[int] = []
    original = Request.body

    async def counting(self: Request[Any, Any, Any]) -> bytes:
        calls.append(1)
        return await original(self)

    monkeypatch.setattr(Request, "body", counting)
    return calls


def chunks(data: bytes) -> Iterator[bytes]:
    yield data


def both(client: TestClient[Any], body: bytes, headers: dict[str, str]) -> list[httpx.Response]:
    fast = client.post("/log", content=body, headers=headers)
    slow = client.post("/log", content=chunks(body), headers=headers)
    return [fast, slow]


def same(answers: list[httpx.Response]) -> httpx.Response:
    fast, slow = answers
    assert "content-length" in fast.request.headers
    assert "content-length" not in slow.request.headers
    assert fast.status_code == slow.status_code
    assert fast.headers.multi_items() == slow.headers.multi_items()
    assert fast.content == slow.content
    return fast


CASES = [
    pytest.param(json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}), {}, 200, id="ok"),
    pytest.param(
        json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW, "x": [1, {"y": None}]}),
        {"content-type": "application/json; charset=utf-8"},
        200,
        id="ok-charset",
    ),
    pytest.param(
        json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}),
        {"content-type": "application/vnd.api+json"},
        200,
        id="ok-plus-json",
    ),
    pytest.param(
        json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}),
        {"content-type": ""},
        200,
        id="ok-no-type",
    ),
    pytest.param(
        json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}),
        {"content-type": "text/plain"},
        415,
        id="media-type",
    ),
    pytest.param("{not json", {}, 400, id="malformed"),
    pytest.param(b'{"user_id":"\xff"}', {}, 400, id="bad-utf8"),
    pytest.param("[1, 2]", {}, 400, id="not-an-object"),
    pytest.param(json.dumps({"event": "e", "timestamp": NOW}), {}, 400, id="no-user"),
    pytest.param(
        json.dumps({"user_id": "../x", "event": "e", "timestamp": NOW}), {}, 400, id="bad-user"
    ),
    pytest.param(
        json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW * 1000}),
        {},
        400,
        id="milliseconds",
    ),
    pytest.param("", {}, 400, id="empty"),
]


@pytest.mark.parametrize(("body", "headers", "status"), CASES)
def test_fast_path_answers_as_the_handler(
    settings_for: MakeSettings,
    store: redis.Redis,
    body_reads: list[int],
    body: str | bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    data = body.encode() if isinstance(body, str) else body
    headers = {"content-type": "application/json", **headers}
    if not headers["content-type"]:
        del headers["content-type"]
    app = create_app(settings_for())
    with TestClient(app) as client:
        answer = same(both(client, data, headers))
        metrics = client.get("/metrics").text
    assert answer.status_code == status
    # the handler read one body (the chunked one); the fast path read its own
    assert body_reads == ([] if status == 415 else [1])
    assert f'route="/log",status="{status}"}} 2.0' in metrics
    if status == 200:
        key = answer.json()["key"]
        assert store.lrange(key, 0, -1) == [data.replace(b" ", b"")] * 2
    else:
        assert not list(store.scan_iter(match="logs:*"))


def test_redis_down_is_the_same_503(make_settings: MakeSettings, body_reads: list[int]) -> None:
    app = create_app(make_settings("redis://127.0.0.1:1", redis={"timeout_seconds": 0.5}))
    body = json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}).encode()
    with TestClient(app) as client:
        answer = same(both(client, body, {"content-type": "application/json"}))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert body_reads == [1]


def test_buffer_full_is_the_same_503(settings_for: MakeSettings, store: redis.Redis) -> None:
    app = create_app(settings_for(redis={"max_buffered_events": 1}))
    body = json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}).encode()
    headers = {"content-type": "application/json"}
    with TestClient(app) as client:
        assert client.post("/log", content=body, headers=headers).status_code == 200
        answer = same(both(client, body, headers))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert store.llen(f"logs:user_u1:{NOW // 86400}") == 1


def test_too_large_and_other_routes_go_to_litestar(
    settings_for: MakeSettings, body_reads: list[int]
) -> None:
    app = create_app(settings_for(server={"max_body_bytes": 100}))
    big = json.dumps({"user_id": "u1", "event": "e" * 200, "timestamp": NOW}).encode()
    with TestClient(app) as client:
        fast, slow = both(client, big, {"content-type": "application/json"})
        assert client.post("/log/", content=b"{}").status_code == 400
        assert client.get("/log").status_code == 405
    assert fast.status_code == slow.status_code == 413
    assert fast.json() == slow.json() == {"detail": "request body too large"}


def test_an_unexpected_error_is_litestars_500(settings_for: MakeSettings) -> None:
    class Broken:
        async def append(self, items: Any) -> None:
            raise RuntimeError("boom")

    app = create_app(settings_for())
    body = json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}).encode()
    with TestClient(app, raise_server_exceptions=False) as client:
        services_of(app).ingest.committer = Broken()  # type: ignore[assignment]
        answer = same(both(client, body, {"content-type": "application/json"}))
    assert answer.status_code == 500


EVENT = {"user_id": "u1", "event": "e", "timestamp": NOW}
ID_CASES = [
    pytest.param({**EVENT, "event_id": "id-1"}, {}, 200, id="event-id"),
    pytest.param(EVENT, {"idempotency-key": "key.1"}, 200, id="idempotency-key"),
    pytest.param({**EVENT, "event_id": "k"}, {"idempotency-key": "k"}, 200, id="both-same"),
    pytest.param({**EVENT, "event_id": "k"}, {"idempotency-key": "j"}, 400, id="both-differ"),
    pytest.param(EVENT, {"idempotency-key": "a b"}, 400, id="bad-key"),
    pytest.param(EVENT, {"idempotency-key": ""}, 400, id="empty-key"),
    pytest.param({**EVENT, "event_id": "a/b"}, {}, 400, id="bad-event-id"),
    pytest.param({**EVENT, "event_id": 7}, {}, 400, id="event-id-number"),
]


@pytest.mark.parametrize(("event", "headers", "status"), ID_CASES)
def test_ids_and_duplicates_answer_as_the_handler(
    settings_for: MakeSettings,
    store: redis.Redis,
    event: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    data = json.dumps(event).encode()
    headers = {"content-type": "application/json", **headers}
    app = create_app(settings_for())
    stored: list[list[Any]] = []
    with TestClient(app) as client:
        answers: list[list[httpx.Response]] = [[], []]  # [first, again] per path
        for send in (lambda: data, lambda: chunks(data)):
            for i in range(2):
                answers[i].append(client.post("/log", content=send(), headers=headers))
            stored.append([v for k in store.scan_iter("logs:*") for v in store.lrange(k, 0, -1)])
            store.flushall()
        metrics = client.get("/metrics").text
    first, again = same(answers[0]), same(answers[1])
    assert first.status_code == again.status_code == status
    assert stored[0] == stored[1]
    if status == 200:
        key = first.json()["key"]
        assert first.content == b'{"stored":true,"key":' + json.dumps(key).encode() + b"}"
        assert again.json() == {"stored": True, "key": key, "duplicate": True}
        [line] = stored[0]
        assert json.loads(line)["event_id"] == event.get("event_id", headers.get("idempotency-key"))
        assert "logpipe_events_duplicate_total 2.0" in metrics
    else:
        assert first.json()["field"] in ("event_id", "Idempotency-Key")
        assert stored[0] == []


def test_a_repeated_idempotency_key_is_refused_by_both(settings_for: MakeSettings) -> None:
    app = create_app(settings_for())
    data = json.dumps(EVENT).encode()
    headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "a"),
        ("idempotency-key", "b"),
    ]
    with TestClient(app) as client:
        answer = same(
            [
                client.post("/log", content=data, headers=headers),
                client.post("/log", content=chunks(data), headers=headers),
            ]
        )
    assert answer.status_code == 400
    assert answer.json()["field"] == "Idempotency-Key"


# ---- limits (issue 9): the fast path refuses as the handler does -------------------------


def test_rate_limited_is_the_same_429(settings_for: MakeSettings, store: redis.Redis) -> None:
    # so slow that no token comes back during the test: both answers say 1000 s
    app = create_app(settings_for(limits={"events_per_second": 0.001, "burst": 1}))
    body = json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}).encode()
    headers = {"content-type": "application/json"}
    with TestClient(app) as client:
        assert client.post("/log", content=body, headers=headers).status_code == 200
        answer = same(both(client, body, headers))
        metrics = client.get("/metrics").text
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1000"
    assert store.llen(f"logs:user_u1:{NOW // 86400}") == 1
    assert 'logpipe_events_refused_total{reason="rate_limited"} 2.0' in metrics


def test_too_old_is_the_same_400(
    settings_for: MakeSettings, store: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the answer says how far behind the clock the event is: one clock for both paths (a
    # second ticking between the two requests made their answers differ by one)
    monkeypatch.setattr(ingest, "time", SimpleNamespace(time=lambda: float(NOW)))
    app = create_app(settings_for(server={"max_past_seconds": 60}))
    body = json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW - 3600}).encode()
    with TestClient(app) as client:
        answer = same(both(client, body, {"content-type": "application/json"}))
    assert answer.status_code == 400
    assert answer.json()["field"] == "timestamp"
    assert not list(store.scan_iter(match="logs:*"))


def test_bytes_full_is_the_same_503(settings_for: MakeSettings, store: redis.Redis) -> None:
    body = json.dumps({"user_id": "u1", "event": "e", "timestamp": NOW}).encode()
    app = create_app(settings_for(redis={"max_buffered_bytes": len(body)}))
    headers = {"content-type": "application/json"}
    with TestClient(app) as client:
        assert client.post("/log", content=body, headers=headers).status_code == 200
        answer = same(both(client, body, headers))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert "redis.max_buffered_bytes" in answer.json()["detail"]
    assert store.llen(f"logs:user_u1:{NOW // 86400}") == 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "handler"])
def test_a_client_gone_mid_body_is_counted_499_and_sent_nothing(
    settings_for: MakeSettings, store: redis.Redis, fast: bool
) -> None:
    app = create_app(settings_for())
    headers = [(b"content-type", b"application/json")]
    if fast:
        headers.append((b"content-length", b"50"))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/log",
        "raw_path": b"/log",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
        "extensions": {},
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    with TestClient(app) as client:
        client.blocking_portal.call(app, scope, receive, send)  # type: ignore[call-arg,arg-type]
        metrics = client.get("/metrics").text
    assert sent == []
    assert 'route="/log",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    assert not list(store.scan_iter(match="logs:*"))


def _line(user: str, n: int = 0, **extra: Any) -> bytes:
    return json.dumps({"user_id": user, "event": f"e{n}", "timestamp": NOW, **extra}).encode()


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


NDJSON = {"content-type": "application/x-ndjson"}
BATCH_CASES = [
    pytest.param(_line("u1") + b"\n" + _line("u2", 1), NDJSON, 200, id="ndjson"),
    pytest.param(
        b"[" + _line("u1") + b"," + _line("u1", 1) + b"]",
        {"content-type": "application/json; charset=utf-8"},
        200,
        id="json-array",
    ),
    pytest.param(
        _gzip(_line("u1") + b"\n"),
        {**NDJSON, "content-encoding": "gzip"},
        200,
        id="gzip",
    ),
    pytest.param(_line("u1"), {**NDJSON, "content-encoding": "br"}, 400, id="encoding"),
    pytest.param(b"not gzip", {**NDJSON, "content-encoding": "gzip"}, 400, id="bad-gzip"),
    pytest.param(_line("u1"), {"content-type": "text/plain"}, 415, id="media-type"),
    pytest.param(_line("u1"), {}, 415, id="no-type"),
    pytest.param(_line("u1") + b"\n{oops", NDJSON, 400, id="one-bad-line"),
    pytest.param(b'{"a": 1}', {"content-type": "application/json"}, 400, id="not-an-array"),
    pytest.param(
        b"\n".join(_line("u1", 0, event_id="same") for _ in range(2)), NDJSON, 200, id="dupes"
    ),
    pytest.param(b"\n".join(_line("u1", n) for n in range(6)), NDJSON, 413, id="too-many"),
]


@pytest.mark.parametrize(("body", "headers", "status"), BATCH_CASES)
def test_the_batch_fast_path_answers_as_the_handler(
    settings_for: MakeSettings,
    store: redis.Redis,
    body_reads: list[int],
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    app = create_app(settings_for(server={"max_batch_events": 5}))

    def stored() -> list[bytes]:
        values = [v for k in store.scan_iter(match="logs:*") for v in store.lrange(k, 0, -1)]
        return sorted(v for v in values if isinstance(v, bytes))

    with TestClient(app) as client:
        fast = client.post("/logs", content=body, headers=headers)
        stored_fast = stored()
        store.flushall()  # the same batch again, to the same empty Redis
        slow = client.post("/logs", content=chunks(body), headers=headers)
        stored_slow = stored()
        metrics = client.get("/metrics").text
    assert "content-length" in fast.request.headers
    assert "content-length" not in slow.request.headers
    assert (fast.status_code, fast.headers.multi_items(), fast.content) == (
        slow.status_code,
        slow.headers.multi_items(),
        slow.content,
    )
    assert fast.status_code == status, fast.text
    assert body_reads == ([] if status == 415 else [1])  # only the chunked one, by Litestar
    assert f'route="/logs",status="{status}"}} 2.0' in metrics
    assert stored_fast == stored_slow
    if status == 200:  # accepted counts the duplicates too (they were sent)
        answer = fast.json()
        assert len(stored_fast) == answer["accepted"] - answer.get("duplicates", 0)
    else:
        assert stored_fast == []


def test_a_repeated_content_encoding_goes_to_litestar(
    settings_for: MakeSettings, body_reads: list[int]
) -> None:
    """(Litestar's test client would merge the two headers into one: sent as ASGI.)"""
    app = create_app(settings_for())
    body = _line("u1")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/logs",
        "raw_path": b"/logs",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/x-ndjson"),
            (b"content-length", str(len(body)).encode()),
            (b"content-encoding", b"identity"),
            (b"content-encoding", b"identity"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
        "extensions": {},
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    with TestClient(app) as client:
        client.blocking_portal.call(app, scope, receive, send)  # type: ignore[call-arg,arg-type]
    assert body_reads == [1]  # Litestar's handler read it: the fast path let it go
    assert sent[0]["status"] == 200
