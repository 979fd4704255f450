"""The write path without HTTP: Ingest on fakeredis answers, stores and counts."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from logpipe_cli.buffer import Buffer
from logpipe_cli.ingest import Ingest
from logpipe_cli.metrics import ApiMetrics
from logpipe_cli.settings import Settings
from tests.conftest import MakeSettings

pytestmark = pytest.mark.anyio

NOW = int(time.time())
DAY = NOW // 86400


def event(user: str = "u1", ts: int = NOW, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "event": "e", "timestamp": ts, **extra}


def ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    client = fakeredis.aioredis.FakeRedis()
    yield client
    await client.aclose()


def ingest_on(fake: Any, settings: Settings) -> Ingest:
    return Ingest(settings, Buffer(fake, settings.redis), ApiMetrics())


async def test_store_one_stores_the_compact_line_under_its_key(
    fake: Any, make_settings: MakeSettings
) -> None:
    ingest = ingest_on(fake, make_settings())
    status, body, headers = await ingest.store_one("application/json", json.dumps(event()).encode())
    key = f"logs:user_u1:{DAY}"
    assert (status, json.loads(body), headers) == (200, {"stored": True, "key": key}, {})
    assert await fake.lrange(key, 0, -1) == [json.dumps(event(), separators=(",", ":")).encode()]
    assert ingest.metrics.accepted == 1


@pytest.mark.parametrize(
    ("media", "body", "status", "reason"),
    [
        ("text/plain", b"{}", 415, "media_type"),
        ("application/json", b"{not json", 400, "invalid"),
        ("application/json", json.dumps(event(user="../x")).encode(), 400, "invalid"),
    ],
    # not the bodies: one holds the time of collection, and every pytest-xdist worker
    # must collect the same test ids
    ids=["text-plain", "not-json", "unsafe-user-id"],
)
async def test_store_one_refuses_and_counts_why(
    fake: Any, make_settings: MakeSettings, media: str, body: bytes, status: int, reason: str
) -> None:
    ingest = ingest_on(fake, make_settings())
    answer = await ingest.store_one(media, body)
    assert answer[0] == status
    assert "detail" in json.loads(answer[1])
    assert ingest.metrics.refused[reason] == 1
    assert ingest.metrics.accepted == 0
    assert await fake.keys("logs:*") == []


async def test_partition_by_ingest_routes_by_the_servers_day(
    fake: Any, make_settings: MakeSettings
) -> None:
    ingest = ingest_on(fake, make_settings(server={"partition_by": "ingest"}))
    old = NOW - 3 * 86400
    status, body, _ = await ingest.store_one("", json.dumps(event(ts=old)).encode())
    assert status == 200
    assert json.loads(body)["key"] == f"logs:user_u1:{DAY}"


async def test_store_batch_gzip_ndjson_stores_every_event_in_order(
    fake: Any, make_settings: MakeSettings
) -> None:
    ingest = ingest_on(fake, make_settings())
    events = [event("a", extra=i) for i in range(3)] + [event("b", ts=NOW - 86400)]
    answer = await ingest.store_batch(
        "application/x-ndjson", " GZIP ", gzip.compress(ndjson(*events))
    )
    assert answer == (200, b'{"accepted":4}', {})
    assert await fake.llen(f"logs:user_a:{DAY}") == 3
    assert [json.loads(x)["extra"] for x in await fake.lrange(f"logs:user_a:{DAY}", 0, -1)] == [
        0,
        1,
        2,
    ]
    assert await fake.llen(f"logs:user_b:{DAY - 1}") == 1
    assert ingest.metrics.accepted == 4


async def test_store_batch_one_bad_event_refuses_all(
    fake: Any, make_settings: MakeSettings
) -> None:
    ingest = ingest_on(fake, make_settings())
    body = json.dumps([event(), event(user=""), event()]).encode()
    status, content, _ = await ingest.store_batch("application/json", "identity", body)
    assert status == 400
    refusal = json.loads(content)
    assert refusal["detail"] == "1 of 3 events invalid; nothing stored"
    assert [e["index"] for e in refusal["errors"]] == [1]
    assert await fake.keys("logs:*") == []
    assert ingest.metrics.refused["invalid"] == 3


@pytest.mark.parametrize(
    ("media", "encoding", "body", "status", "reason"),
    [
        ("text/csv", "identity", b"", 415, "media_type"),
        ("application/json", "br", b"[]", 400, "invalid"),
        ("application/json", "gzip", b"not gzip", 400, "invalid"),
        ("application/json", "identity", b'{"not": "an array"}', 400, "invalid"),
        ("application/json", "gzip", gzip.compress(b" " * 2000), 413, "too_large"),
        ("application/x-ndjson", "identity", ndjson(*[event()] * 4), 413, "too_large"),
    ],
    # not the bodies: the gzip header holds the time of collection, and every pytest-xdist
    # worker must collect the same test ids
    ids=["csv", "brotli", "not-gzip", "not-an-array", "gzip-too-large", "ndjson-too-large"],
)
async def test_store_batch_refusals(
    fake: Any,
    make_settings: MakeSettings,
    media: str,
    encoding: str,
    body: bytes,
    status: int,
    reason: str,
) -> None:
    settings = make_settings(server={"max_body_bytes": 1000, "max_batch_events": 3})
    ingest = ingest_on(fake, settings)
    answer = await ingest.store_batch(media, encoding, body)
    assert answer[0] == status, answer
    assert ingest.metrics.refused[reason] >= 1
    assert await fake.keys("logs:*") == []


async def test_a_full_buffer_is_a_503_with_retry_after(
    fake: Any, make_settings: MakeSettings
) -> None:
    ingest = ingest_on(fake, make_settings(redis={"max_buffered_events": 2}))
    status, _, headers = await ingest.store_batch(
        "application/x-ndjson", "identity", ndjson(*[event()] * 3)
    )
    assert (status, headers) == (503, {"Retry-After": "5"})
    assert ingest.metrics.refused["buffer_full"] == 3


async def test_a_user_s_key_kept_from_an_earlier_batch_follows_the_day(
    fake: Any, make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """route_batch keeps each user's last key between requests: another day (or, past
    the bound, a cleared memory) still routes each event to its own day's list."""
    ingest = ingest_on(fake, make_settings())
    monkeypatch.setattr("logpipe_cli.ingest._KEYS_KEPT", 2)
    batches = [
        [event("a"), event("b")],
        [
            event("a", ts=NOW - 86400),
            event("a"),
            event("c"),
        ],  # 3 users kept: the next batch starts afresh
        [event("b", ts=NOW - 86400), event("a", ts=NOW - 86400)],
    ]
    for batch in batches:
        status, _, _ = await ingest.store_batch("application/x-ndjson", "", ndjson(*batch))
        assert status == 200
    want = {
        f"logs:user_a:{DAY}": 2,
        f"logs:user_a:{DAY - 1}": 2,
        f"logs:user_b:{DAY}": 1,
        f"logs:user_b:{DAY - 1}": 1,
        f"logs:user_c:{DAY}": 1,
    }
    got = {k.decode(): await fake.llen(k) for k in await fake.keys("logs:*")}
    assert got == want
