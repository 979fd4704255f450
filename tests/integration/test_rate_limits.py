"""Rate limits and the bytes counter against a real redis-server: token buckets shared by
every API process, Retry-After that is honest, refusals that store nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.ingest import Ingest, address_label
from logpipe_cli.keys import EventKey
from tests.conftest import MakeSettings
from tests.integration.conftest import DAY, Rig

NDJSON = {"content-type": "application/x-ndjson"}
NOW = int(time.time())
#: so slow that no token comes back during a test
SLOW = 0.001


def event(user: str = "u1", n: int = 0) -> bytes:
    return json.dumps({"user_id": user, "event": f"e{n}", "timestamp": NOW}).encode()


def batch(n: int, user: str = "u1") -> bytes:
    return b"\n".join(event(user, i) for i in range(n))


def stored(raw: redis.Redis, user: str = "u1") -> int:
    return int(raw.llen(f"logs:user_{user}:{NOW // 86400}"))


def post_batch(client: TestClient[Any], n: int) -> httpx.Response:
    return client.post("/logs", content=batch(n), headers=NDJSON)


def test_waiting_retry_after_is_enough(make_settings: MakeSettings, redis_url: str) -> None:
    """2/s with a burst of 2: a refused request sent again after exactly Retry-After
    seconds (1 s, rounded up from the refill time) succeeds. (Slow enough that the
    single event right after the second batch finds no token back: one comes back
    every 500 ms; at 20/s a loaded machine took the 50 ms between the two requests.)"""
    raw = redis.Redis.from_url(redis_url)
    app = create_app(make_settings(redis_url, limits={"events_per_second": 2, "burst": 2}))
    with TestClient(app) as client:
        assert post_batch(client, 2).status_code == 200  # the whole burst
        refused = post_batch(client, 2)  # needs a full refill
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        time.sleep(int(refused.headers["retry-after"]))
        assert post_batch(client, 2).status_code == 200

        one = client.post("/log", content=event(), headers={"content-type": "application/json"})
        assert one.status_code == 429
        assert one.headers["retry-after"] == "1"
        time.sleep(int(one.headers["retry-after"]))
        again = client.post("/log", content=event(), headers={"content-type": "application/json"})
        assert again.status_code == 200
    assert stored(raw) == 5
    raw.close()


def test_two_api_processes_share_the_buckets(make_settings: MakeSettings, redis_url: str) -> None:
    """Two apps on one Redis stand for two workers (or hosts): one budget for both."""
    raw = redis.Redis.from_url(redis_url)
    settings = make_settings(redis_url, limits={"events_per_second": SLOW, "burst": 5})
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        assert post_batch(one, 3).status_code == 200
        assert post_batch(two, 2).status_code == 200
        assert post_batch(two, 1).status_code == 429
        assert post_batch(one, 1).status_code == 429
    assert stored(raw) == 5
    raw.close()


@pytest.fixture
async def limited(make_settings: MakeSettings, redis_url: str) -> AsyncIterator[Ingest]:
    settings = make_settings(redis_url, limits={"events_per_second": SLOW, "burst": 3})
    client = connect(settings.redis)
    try:
        yield Ingest(settings, Buffer(client, settings.redis))
    finally:
        await client.aclose()


JSON = "application/json"


@pytest.mark.anyio
async def test_each_principal_has_its_own_bucket(limited: Ingest, redis_url: str) -> None:
    async def send(n: int, **who: str) -> list[int]:
        return [(await limited.store_one(JSON, event(), **who))[0] for _ in range(n)]

    assert await send(4, principal="token-a") == [200, 200, 200, 429]
    assert await send(3, principal="token-b") == [200, 200, 200]
    # without a token, the address pays; an address named like a token is another bucket
    assert await send(4, client="token-a") == [200, 200, 200, 429]
    assert await send(1, client="10.0.0.2") == [200]
    # a token is charged, not the address it comes from
    assert await send(1, principal="token-c", client="10.0.0.2") == [200]
    raw = redis.Redis.from_url(redis_url)
    assert stored(raw) == 3 + 3 + 3 + 1 + 1
    named = address_label("token-a").encode()
    assert sorted(raw.scan_iter(match="logpipe:rate:*")) == [
        b"logpipe:rate:addr:10.0.0.2",
        b"logpipe:rate:addr:" + named,
        b"logpipe:rate:token:token-a",
        b"logpipe:rate:token:token-b",
        b"logpipe:rate:token:token-c",
    ]
    raw.close()


@pytest.mark.anyio
async def test_one_flush_fails_only_the_requests_over_their_limit(
    limited: Ingest, redis_url: str
) -> None:
    """Concurrent requests share a script call (group commit); the refused ones fail
    alone and the others are stored."""
    answers = await asyncio.gather(
        limited.store_batch("application/x-ndjson", "identity", batch(2, "a"), principal="a"),
        limited.store_one(JSON, event("b"), principal="b"),
        limited.store_batch("application/x-ndjson", "identity", batch(2, "a"), principal="a"),
        limited.store_one(JSON, event("a"), principal="a"),
        limited.store_one(JSON, event("b"), principal="b"),
    )
    assert [status for status, _, _ in answers] == [200, 200, 429, 200, 200]
    _, body, headers = answers[2]
    assert headers == {"Retry-After": str(int(1 / SLOW))}
    assert b"rate limit" in body
    raw = redis.Redis.from_url(redis_url)
    assert stored(raw, "a") == 3
    assert stored(raw, "b") == 2
    assert limited.metrics.refused["rate_limited"] == 2
    raw.close()


@pytest.mark.anyio
async def test_buffered_bytes_follow_appends_drains_and_quarantines(rig: Rig) -> None:
    good = await rig.add("a", range(5))
    bad = [b"not json", b'{"half":']
    await rig.buffer.append([(EventKey("a", DAY).key, v) for v in bad])
    assert rig.stats()["buffered_bytes"] == sum(map(len, good + bad))
    report = await rig.drainer(batch_events=3).drain_once()  # several rounds
    assert report.quarantined == 2
    assert rig.file_lines("a") == good
    assert rig.stats()["buffered"] == 0
    assert rig.stats()["buffered_bytes"] == 0


@pytest.mark.anyio
async def test_a_bucket_of_another_type_is_replaced_not_an_error(
    limited: Ingest, redis_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    raw.set("logpipe:rate:token:a", "written by hand")
    assert (await limited.store_one(JSON, event(), principal="a"))[0] == 200
    assert raw.type("logpipe:rate:token:a") == b"hash"
    assert float(raw.hget("logpipe:rate:token:a", "tokens") or -1) == pytest.approx(2, abs=0.01)
    raw.close()
