"""Sentinel and replication settings: list parsing, the checks at load, masking."""

from __future__ import annotations

import pytest

from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import load_settings

SENTINEL = {"mode": "sentinel", "sentinels": ["10.0.0.1:26379", "h2:26380"], "sentinel_master": "m"}


def test_sentinels_from_the_file_and_from_a_comma_separated_variable() -> None:
    from_file = load_settings({"redis": SENTINEL}, {})
    assert from_file.redis.sentinels == ("10.0.0.1:26379", "h2:26380")
    from_env = load_settings(
        {},
        {
            "LOGPIPE_REDIS_MODE": "sentinel",
            "LOGPIPE_REDIS_SENTINELS": "10.0.0.1:26379, h2:26380",
            "LOGPIPE_REDIS_SENTINEL_MASTER": "m",
        },
    )
    assert from_env.redis == from_file.redis
    assert from_env.sources["redis.sentinels"] == "env"


@pytest.mark.parametrize(
    ("redis", "fragment"),
    [
        ({"mode": "sentinel"}, "needs redis.sentinels"),
        ({"mode": "sentinel", "sentinels": ["h:1"]}, "needs redis.sentinel_master"),
        ({**SENTINEL, "url": "unix:///tmp/r.sock"}, "must be a redis:// URL"),
        ({"sentinels": ["nohost"]}, "'nohost' is not host:port"),
        ({"sentinels": ["h:99999"]}, "the port of 'h:99999' is not a number in 1-65535"),
        ({"sentinels": "h:1"}, "must be a list of strings"),
        ({"mode": "shards"}, "must be one of 'standalone', 'sentinel', 'cluster'"),
        ({"mode": "cluster", "url": "redis://h:1/2"}, "has only db 0"),
        ({"mode": "cluster", "url": "unix:///tmp/r.sock"}, "needs a redis:// or rediss://"),
        ({"cluster_nodes": ["h:0"]}, "the port of 'h:0' is not a number in 1-65535"),
        ({"min_replicas": -1}, "must be at least 0"),
    ],
)
def test_unusable_sentinel_settings_are_refused_at_load(
    redis: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError, match="redis") as err:
        load_settings({"redis": redis}, {})
    assert fragment in err.value.detail


def test_the_sentinel_password_is_masked_where_settings_are_shown() -> None:
    s = load_settings({"redis": {**SENTINEL, "sentinel_password": "hunter2"}}, {})
    assert s.redis.sentinel_password == "hunter2"
    assert "hunter2" not in repr(s.redis)
    assert s.as_dict()["redis"]["sentinel_password"] == "***"
    assert s.as_dict()["redis"]["sentinels"] == ["10.0.0.1:26379", "h2:26380"]
    assert s.as_dict(mask_secrets=False)["redis"]["sentinel_password"] == "hunter2"
