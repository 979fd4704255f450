"""POST /drain: concurrent requests share one pass; a relative logs_dir is fixed at start."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app, services_of
from tests.conftest import MakeSettings

pytestmark = pytest.mark.anyio

TS = 1712345678  # day 19818


def ndjson(users: int, per_user: int) -> bytes:
    return b"".join(
        json.dumps({"user_id": f"u{u}", "event": f"e{n}", "timestamp": TS + n}).encode() + b"\n"
        for u in range(users)
        for n in range(per_user)
    )


async def test_concurrent_drain_requests_get_one_pass(
    settings_for: MakeSettings, tmp_path: Path
) -> None:
    # In the test's own event loop (Litestar's test clients serve one request at a
    # time), so the five requests are in flight together.
    app = create_app(settings_for())
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's narrower ASGI types
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        stored = await c.post(
            "/logs", content=ndjson(50, 40), headers={"content-type": "application/x-ndjson"}
        )
        assert stored.json() == {"accepted": 2000}
        answers = await asyncio.gather(*(c.post("/drain") for _ in range(5)))
        passes = services_of(app).drains.passes
    assert passes == 1
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1  # the same report, byte for byte
    assert (answers[0].json()["events"], answers[0].json()["keys"]) == (2000, 50)
    lines = (tmp_path / "logs" / "user_u7" / "19818.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["event"] for x in lines] == [f"e{n}" for n in range(40)]


def test_a_relative_logs_dir_is_taken_from_the_start_directory(
    settings_for: MakeSettings,
    store: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start, later = tmp_path / "start", tmp_path / "later"
    start.mkdir()
    later.mkdir()
    monkeypatch.chdir(start)
    app = create_app(settings_for(drainer={"logs_dir": "logs"}))
    monkeypatch.chdir(later)  # e.g. a library the app loads changes directory
    with TestClient(app) as client:
        event = {"user_id": "u1", "event": "e", "timestamp": TS}
        assert client.post("/log", json=event).status_code == 200
        assert client.post("/drain").json()["events"] == 1
    assert (start / "logs" / "user_u1" / "19818.jsonl").read_bytes() == (
        b'{"user_id":"u1","event":"e","timestamp":1712345678}\n'
    )
    assert not (later / "logs").exists()
    assert store.llen("logs:user_u1:19818") == 0
