"""The clients against a real ``logpipe serve`` and redis-server: the happy paths."""

from __future__ import annotations

import asyncio

import pytest

from logpipe_cli.client import AsyncClient, Client, RefusedError
from tests.client.conftest import stored

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TS = 1_700_000_000


def test_log_returns_once_the_event_is_stored(live: str, redis_url: str) -> None:
    with Client(live, token="t0k3n") as c:
        receipt = c.log("u1", "clicked", timestamp=TS, page="home")
        # the event is in Redis when log() returns: no wait needed
        assert stored(redis_url) == [
            {
                "user_id": "u1",
                "event": "clicked",
                "timestamp": TS,
                "event_id": receipt.event_id,
                "page": "home",
            }
        ]
    assert receipt.attempts == 1
    assert receipt.key == f"logs:user_u1:{TS // 86400}"
    assert receipt.duplicate is False


def test_log_many_small_and_gzipped(live: str, redis_url: str) -> None:
    small = [{"user_id": "u1", "event": "a", "timestamp": TS, "event_id": "mine-1"}]
    big = [{"user_id": "u2", "event": "b", "timestamp": TS, "pad": "p" * 200}] * 100
    with Client(live) as c:
        first = c.log_many(small)
        second = c.log_many(big)  # 100 x ~280 bytes: above 8 KiB, so gzip-encoded
    assert (first.accepted, second.accepted) == (1, 100)
    ids = {e["event_id"] for e in stored(redis_url)}
    assert ids == {"mine-1", *second.event_ids}
    assert len(ids) == 101


def test_the_real_servers_refusal_is_typed(live: str, redis_url: str) -> None:
    with Client(live) as c:
        with pytest.raises(RefusedError) as err:
            c.log("u1", "clicked", timestamp=4_000_000_000_000)
        assert err.value.status == 400
        assert err.value.field == "timestamp"
        assert "milliseconds" in err.value.detail
        with pytest.raises(RefusedError) as batch_err:
            c.log_many([{"user_id": "u1", "event": "ok"}, {"user_id": "u1", "event": ""}])
        assert [i for i, _ in batch_err.value.errors] == [1]
    assert stored(redis_url) == []


def test_async_client(live: str, redis_url: str) -> None:
    async def go() -> tuple[str, list[str]]:
        async with AsyncClient(live) as c:
            one = await c.log("u1", "clicked", timestamp=TS)
            many = await c.log_many([{"user_id": "u2", "event": "x", "timestamp": TS}] * 3)
            return one.event_id, many.event_ids

    one, many = asyncio.run(go())
    assert sorted(e["event_id"] for e in stored(redis_url)) == sorted([one, *many])
