"""Liveness, readiness, the OpenAPI document, and concurrent requests sharing round trips."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from litestar.testing import AsyncTestClient, TestClient

from logpipe_cli.api import create_app
from tests.conftest import MakeSettings
from tests.redis_server import free_port


def test_healthz_and_readyz_with_redis(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        live = client.get("/healthz")
        ready = client.get("/readyz")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["redis_rtt_ms"] >= 0


def test_readyz_is_503_without_redis_while_healthz_stays_200(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}", redis={"timeout_seconds": 1.0})
    with TestClient(create_app(settings)) as client:
        live = client.get("/healthz")
        ready = client.get("/readyz")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.headers["retry-after"]
    assert "redis unavailable" in ready.json()["detail"]


def test_openapi_documents_the_ingest_routes(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.get("/schema/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "logpipe"
    for path in ("/log", "/logs"):
        assert "post" in doc["paths"][path]
        responses = doc["paths"][path]["post"]["responses"]
        assert {"200", "400", "413", "415", "503"} <= set(responses)
    assert "get" in doc["paths"]["/healthz"]
    assert "get" in doc["paths"]["/readyz"]


@pytest.mark.anyio
async def test_concurrent_requests_are_all_stored(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    """Many requests in flight at once share flushes; every one is stored exactly once."""
    async with AsyncTestClient(create_app(settings_for())) as client:
        resps = await asyncio.gather(
            *(
                client.post(
                    "/log", json={"user_id": f"u{i % 3}", "event": f"e{i}", "timestamp": 86400 * 2}
                )
                for i in range(60)
            )
        )
    assert [r.status_code for r in resps] == [200] * 60
    seen: list[str] = []
    for uid in range(3):
        seen += [json.loads(x)["event"] for x in store.lrange(f"logs:user_u{uid}:2", 0, -1)]
    assert sorted(seen) == sorted(f"e{i}" for i in range(60))
    assert int(store.hget("logpipe:stats", "buffered") or 0) == 60
