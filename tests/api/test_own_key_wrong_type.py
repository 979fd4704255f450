"""A key logpipe keeps for itself (``logpipe:stats``, ...) overwritten with another type.

Redis answers such a script ``WRONGTYPE`` without naming the key. That is no outage (a
503 says "retry", and retrying cannot help): the answer is a 500 that names the key and
what to do, the API logs it once, and renaming the key aside lets everyone in again.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from litestar.testing import AsyncTestClient

from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import WrongTypeError
from tests.conftest import MakeSettings
from tests.processes import wait_until

pytestmark = pytest.mark.anyio

EVENT = {"user_id": "u1", "event": "e", "timestamp": 1712345678}


@pytest.mark.parametrize(
    ("key", "kind", "wanted"),
    [("logpipe:stats", "string", "hash"), ("logpipe:flushes", "set", "zset")],
)
async def test_ingest_names_the_key_and_recovers_once_it_is_renamed(
    redis_url: str,
    make_settings: MakeSettings,
    capsys: pytest.CaptureFixture[str],
    key: str,
    kind: str,
    wanted: str,
) -> None:
    raw = redis.Redis.from_url(redis_url)
    if kind == "string":
        raw.set(key, "x")
    else:
        raw.sadd(key, "x")
    async with AsyncTestClient(app=create_app(make_settings(redis_url))) as client:
        answers = [
            await client.post("/log", json=EVENT),
            await client.post("/log", json=EVENT),
            await client.post("/logs", json=[EVENT]),
        ]
        for resp in answers:
            assert resp.status_code == 500, resp.text
            detail = resp.json()["detail"]
            assert f"Redis key {key} holds a {kind} where logpipe keeps a {wanted}" in detail
            assert f"RENAME {key} {key}.bad" in detail
        assert raw.keys("logs:*") == []
        # one log line for the operator, not one per request. (Read from stderr: Litestar's
        # logging config replaces the root logger's handlers and writes from a queue
        # listener thread; a line logged after the requests marks the end of theirs.)
        logging.getLogger("logpipe_cli").error("end of the requests' lines")
        err = ""

        def logged() -> bool:
            nonlocal err
            err += capsys.readouterr().err
            return "end of the requests' lines" in err

        wait_until(logged, "the server's log lines")
        assert err.count(f"Redis key {key} holds a {kind}") == 1, err
        raw.rename(key, key + ".bad")
        ok = await client.post("/log", json=EVENT)
        assert ok.status_code == 200, ok.text
    assert raw.llen("logs:user_u1:19818") == 1
    raw.close()


async def test_stats_names_a_last_drain_of_another_type(
    redis_url: str, make_settings: MakeSettings
) -> None:
    raw = redis.Redis.from_url(redis_url)
    raw.zadd("logpipe:last_drain", {"x": 1})
    async with AsyncTestClient(app=create_app(make_settings(redis_url))) as client:
        resp = await client.get("/stats")
    assert resp.status_code == 500, resp.text
    assert "Redis key logpipe:last_drain holds a zset" in resp.json()["detail"]
    raw.close()


async def test_committer_fails_every_request_of_the_flush_at_once(
    redis_url: str, make_settings: MakeSettings
) -> None:
    """A bad key of logpipe's own is no request's key: the committer must not send the
    flush's requests again (they would meet it again, forever)."""
    settings = make_settings(redis_url)
    raw = redis.Redis.from_url(redis_url)
    raw.set("logpipe:stats", "x")
    client = connect(settings.redis)
    committer = GroupCommitter(Buffer(client, settings.redis))
    results = await asyncio.wait_for(
        asyncio.gather(
            committer.append([("logs:user_a:1", b'{"n":1}')]),
            committer.append([("logs:user_b:1", b'{"n":2}')]),
            return_exceptions=True,
        ),
        timeout=30,
    )
    await client.aclose()
    for result in results:
        assert isinstance(result, WrongTypeError), result
        assert result.keys == ["logpipe:stats"]
    raw.close()
