"""A key of another type (written by hand) fails only the requests aimed at it, storing nothing."""

from __future__ import annotations

import asyncio

import pytest
import redis
from litestar.testing import AsyncTestClient

from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import WrongTypeError
from tests.conftest import MakeSettings

pytestmark = pytest.mark.anyio

TS = 1712345678  # day 19818


async def test_post_to_a_key_of_another_type_fails_alone(
    redis_url: str, make_settings: MakeSettings
) -> None:
    raw = redis.Redis.from_url(redis_url)
    raw.hset("logs:user_bad:19818", "x", "1")
    async with AsyncTestClient(app=create_app(make_settings(redis_url))) as client:
        bad = client.post("/log", json={"user_id": "bad", "event": "e", "timestamp": TS})
        good = client.post("/log", json={"user_id": "good", "event": "e", "timestamp": TS})
        bad_resp, good_resp = await asyncio.gather(bad, good)
    assert bad_resp.status_code == 500
    assert "logs:user_bad:19818" in bad_resp.json()["detail"]
    assert good_resp.status_code == 200
    assert raw.type("logs:user_bad:19818") == b"hash"
    assert raw.lrange("logs:user_good:19818", 0, -1) == [
        b'{"user_id":"good","event":"e","timestamp":1712345678}'
    ]
    assert int(raw.hget("logpipe:stats", "buffered") or 0) == 1
    raw.close()


async def test_committer_retries_the_requests_that_share_a_flush_with_a_bad_key(
    redis_url: str, make_settings: MakeSettings
) -> None:
    settings = make_settings(redis_url)
    raw = redis.Redis.from_url(redis_url)
    raw.set("logs:user_bad:1", "not a list")
    client = connect(settings.redis)
    committer = GroupCommitter(Buffer(client, settings.redis))
    results = await asyncio.gather(
        committer.append([("logs:user_a:1", b'{"n":1}')]),
        committer.append([("logs:user_bad:1", b'{"n":2}'), ("logs:user_a:1", b'{"n":3}')]),
        committer.append([("logs:user_a:1", b'{"n":4}')]),
        return_exceptions=True,
    )
    await client.aclose()
    assert results[0] == []  # no duplicates (append answers with them)
    assert isinstance(results[1], WrongTypeError)
    assert results[2] == []
    # the refused request stored nothing, not even its event for the good key
    assert raw.lrange("logs:user_a:1", 0, -1) == [b'{"n":1}', b'{"n":4}']
    raw.close()
