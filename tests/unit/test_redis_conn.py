"""make_client: which client each mode gets, and a short reason when no Sentinel answers."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from logpipe_cli.buffer import Buffer
from logpipe_cli.errors import RedisUnavailableError
from logpipe_cli.redis_conn import SentinelMasterClient, make_client
from logpipe_cli.settings import load_settings
from tests.redis_server import free_port


def test_standalone_is_a_plain_client_on_the_url() -> None:
    cfg = load_settings({"redis": {"url": "redis://:pw@h:7000/3"}}, {}).redis
    client = make_client(cfg)
    try:
        assert type(client) is aioredis.Redis
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 7000, 3)
    finally:
        asyncio.run(client.aclose())


def test_no_sentinel_answering_is_a_one_line_reason() -> None:
    ports = [free_port(), free_port()]
    cfg = load_settings(
        {
            "redis": {
                "mode": "sentinel",
                "url": "redis://:secret@ignored:1/2",
                "sentinels": [f"127.0.0.1:{p}" for p in ports],
                "sentinel_master": "m",
                "sentinel_password": "s3",
            }
        },
        {},
    ).redis

    async def go() -> None:
        async with Buffer.connect(cfg) as buffer:
            assert isinstance(buffer.client, SentinelMasterClient)
            kwargs = buffer.client.connection_pool.connection_kwargs
            assert (kwargs["password"], kwargs["db"]) == ("secret", 2)
            await buffer.ping()

    with pytest.raises(RedisUnavailableError) as err:
        asyncio.run(go())
    assert err.value.detail == (
        f"redis unavailable while pinging: no Sentinel of 127.0.0.1:{ports[0]}, "
        f"127.0.0.1:{ports[1]} names a master for 'm' now (Sentinels unreachable, or a "
        "failover under way)"
    )
