"""Limits on what one request may do: rate (429), buffered bytes (503), keys per batch,
event age, every gzip member decoded; disconnects and unexpected errors accounted for."""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli import keys
from logpipe_cli.api import create_app, services_of
from logpipe_cli.ingest import bucket_of
from tests.conftest import MakeSettings

NDJSON = {"content-type": "application/x-ndjson"}
NOW = int(time.time())
DAY = NOW // 86400
#: a rate so slow that no token comes back during a test: Retry-After is 1000 s
SLOW = {"events_per_second": 0.001}


def ev(user: str = "u1", name: str = "e", ts: int = NOW) -> dict[str, Any]:
    return {"user_id": user, "event": name, "timestamp": ts}


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def refused(metrics: str, reason: str) -> float:
    prefix = f'logpipe_events_refused_total{{reason="{reason}"}} '
    (line,) = [x for x in metrics.splitlines() if x.startswith(prefix)]
    return float(line[len(prefix) :])


def logs_keys(store: redis.Redis) -> list[bytes]:
    return sorted(store.scan_iter(match="logs:*"))


# ---- rate limits ------------------------------------------------------------------------


def test_over_the_rate_limit_is_429_with_retry_after(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    app = create_app(settings_for(limits={**SLOW, "burst": 3}))
    with TestClient(app) as client:
        ok = client.post("/logs", content=ndjson([ev(name="a"), ev(name="b")]), headers=NDJSON)
        assert ok.status_code == 200
        assert client.post("/log", json=ev(name="c")).status_code == 200
        over = client.post("/log", json=ev(name="d"))
        batch = client.post("/logs", content=ndjson([ev(name="e")]), headers=NDJSON)
        metrics = client.get("/metrics").text
    for answer in (over, batch):
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "1000"
        assert "rate limit" in answer.json()["detail"]
        assert "retry after 1000 s" in answer.json()["detail"]
    assert store.llen(f"logs:user_u1:{DAY}") == 3  # nothing of the refused ones
    assert refused(metrics, "rate_limited") == 2
    # the bucket is kept in Redis, and goes once it would be full again anyway
    ttl = store.pttl(keys.rate_bucket(bucket_of(None, "testclient")))
    assert 0 < ttl <= (3 / 0.001 + 1) * 1000


def test_a_batch_counts_its_events(settings_for: MakeSettings, store: redis.Redis) -> None:
    app = create_app(settings_for(limits={**SLOW, "burst": 5}))
    with TestClient(app) as client:
        first = client.post("/logs", content=ndjson([ev()] * 3), headers=NDJSON)
        second = client.post("/logs", content=ndjson([ev()] * 3), headers=NDJSON)
        third = client.post("/logs", content=ndjson([ev()] * 2), headers=NDJSON)
    assert first.status_code == 200
    assert second.status_code == 429  # 3 events, 2 tokens left
    assert third.status_code == 200  # the refused batch took nothing
    assert store.llen(f"logs:user_u1:{DAY}") == 5


def test_a_batch_larger_than_the_burst_is_413(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    app = create_app(settings_for(limits={**SLOW, "burst": 5}))
    with TestClient(app) as client:
        answer = client.post("/logs", content=ndjson([ev()] * 6), headers=NDJSON)
        metrics = client.get("/metrics").text
    assert answer.status_code == 413
    assert answer.json() == {
        "detail": "batch has 6 events; at most limits.burst = 5 per request while the rate "
        "limit is on"
    }
    assert "retry-after" not in answer.headers
    assert logs_keys(store) == []
    assert refused(metrics, "too_large") == 6


def test_off_by_default_and_no_bucket_is_made(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    app = create_app(settings_for(limits={"burst": 1}))
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post("/log", json=ev()).status_code == 200
        batch = client.post("/logs", content=ndjson([ev()] * 5), headers=NDJSON)
    assert batch.status_code == 200
    assert list(store.scan_iter(match="logpipe:rate:*")) == []


# ---- buffered bytes -----------------------------------------------------------------------


def test_buffered_bytes_limit_is_503(settings_for: MakeSettings, store: redis.Redis) -> None:
    line = json.dumps(ev(), separators=(",", ":")).encode()
    app = create_app(settings_for(redis={"max_buffered_bytes": 2 * len(line) + 1}))
    with TestClient(app) as client:
        assert client.post("/logs", content=ndjson([ev()] * 2), headers=NDJSON).status_code == 200
        full = client.post("/log", json=ev())
        metrics = client.get("/metrics").text
    assert full.status_code == 503
    assert full.headers["retry-after"] == "5"
    assert "redis.max_buffered_bytes" in full.json()["detail"]
    assert store.llen(f"logs:user_u1:{DAY}") == 2
    assert int(store.hget("logpipe:stats", "buffered_bytes") or 0) == 2 * len(line)
    assert refused(metrics, "buffer_full") == 1
    assert f"logpipe_buffered_bytes {2 * len(line)}.0" in metrics


# ---- keys per request, event age ----------------------------------------------------------


def test_too_many_keys_in_one_batch_is_413(settings_for: MakeSettings, store: redis.Redis) -> None:
    app = create_app(settings_for(server={"max_keys_per_request": 2}))
    two = [ev("a"), ev("b"), ev("a")]
    three = [ev("a"), ev("b"), ev("a", ts=NOW - 86400)]  # a second day is a second key
    with TestClient(app) as client:
        assert client.post("/logs", content=ndjson(two), headers=NDJSON).status_code == 200
        answer = client.post("/logs", content=ndjson(three), headers=NDJSON)
    assert answer.status_code == 413
    assert answer.json()["detail"] == (
        "batch writes to 3 distinct keys (user and day); at most 2 allowed "
        "(server.max_keys_per_request); nothing stored"
    )
    assert store.llen(f"logs:user_a:{DAY}") == 2
    assert store.exists(f"logs:user_a:{DAY - 1}") == 0


def test_events_older_than_max_past_are_400(settings_for: MakeSettings, store: redis.Redis) -> None:
    app = create_app(settings_for(server={"max_past_seconds": 3600}))
    old = ev(ts=NOW - 7200)
    with TestClient(app) as client:
        assert client.post("/log", json=ev(ts=NOW - 60)).status_code == 200
        one = client.post("/log", json=old)
        batch = client.post("/logs", content=ndjson([ev(), old]), headers=NDJSON)
    assert one.status_code == 400
    assert one.json()["field"] == "timestamp"
    assert "behind the server's clock (at most 3600 s allowed)" in one.json()["detail"]
    assert batch.status_code == 400
    (error,) = batch.json()["errors"]
    assert error["index"] == 1
    assert error["detail"].startswith("timestamp: ")
    assert store.llen(f"logs:user_u1:{DAY}") == 1


def test_max_past_off_accepts_backfill(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        assert client.post("/log", json=ev(ts=86400 * 7)).status_code == 200


# ---- gzip members -------------------------------------------------------------------------


def test_every_gzip_member_is_decoded(settings_for: MakeSettings, store: redis.Redis) -> None:
    body = gzip.compress(ndjson([ev(name="one")])) + gzip.compress(ndjson([ev(name="two")]))
    with TestClient(create_app(settings_for())) as client:
        answer = client.post("/logs", content=body, headers={**NDJSON, "content-encoding": "gzip"})
    assert answer.status_code == 200
    assert answer.json() == {"accepted": 2}
    stored = [json.loads(x)["event"] for x in store.lrange(f"logs:user_u1:{DAY}", 0, -1)]
    assert stored == ["one", "two"]


def test_gzip_members_share_one_size_limit(settings_for: MakeSettings, store: redis.Redis) -> None:
    member = ndjson([ev(name="x" * 40)])
    app = create_app(settings_for(server={"max_body_bytes": len(member) + 10}))
    body = gzip.compress(member) + gzip.compress(member)  # each fits, both do not
    with TestClient(app) as client:
        answer = client.post("/logs", content=body, headers={**NDJSON, "content-encoding": "gzip"})
    assert answer.status_code == 413
    assert logs_keys(store) == []


def test_bytes_after_a_gzip_member_are_400(settings_for: MakeSettings, store: redis.Redis) -> None:
    body = gzip.compress(ndjson([ev()])) + b"trailing garbage"
    with TestClient(create_app(settings_for())) as client:
        answer = client.post("/logs", content=body, headers={**NDJSON, "content-encoding": "gzip"})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("body is not valid gzip (member 2): ")
    assert logs_keys(store) == []


# ---- unexpected errors --------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def api_log() -> Iterator[list[logging.LogRecord]]:
    """What the ``logpipe.api`` logger emits (caplog's root handler can be replaced by the
    logging setup Litestar makes at startup)."""
    handler = _Records()
    logger = logging.getLogger("logpipe.api")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def test_an_unexpected_500_is_logged_once_with_its_route(
    settings_for: MakeSettings, api_log: list[logging.LogRecord]
) -> None:
    class Broken:
        async def append(self, items: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

    app = create_app(settings_for())
    with TestClient(app, raise_server_exceptions=False) as client:
        services_of(app).ingest.committer = Broken()  # type: ignore[assignment]
        fast = client.post("/log", json=ev())  # the ASGI fast path
        batch = client.post("/logs", content=ndjson([ev()]), headers=NDJSON)  # Litestar
    assert fast.status_code == batch.status_code == 500
    assert [r.getMessage() for r in api_log] == [
        "unexpected error on POST '/log'",
        "unexpected error on POST '/logs'",
    ]
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in api_log)
