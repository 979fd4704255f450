"""The risks redis-check warns about: ways a setup can lose buffered events."""

from __future__ import annotations

from typing import Any

import pytest

from logpipe_cli.health import HealthReport, risks
from logpipe_cli.settings import load_settings


def report(**changes: Any) -> HealthReport:
    values: dict[str, Any] = {
        "url": "redis://h",
        "version": "7",
        "rtt_ms": 0.1,
        "used_memory": 0,
        "maxmemory": 2 * 1024**3,
        "maxmemory_policy": "noeviction",
        "aof_enabled": True,
        "rdb_saves": False,
        "buffered_events": 0,
        "buffered_keys": 0,
    }
    values.update(changes)
    return HealthReport(**values)


def test_safe_setup_has_no_risks() -> None:
    assert risks(report(), load_settings()) == []
    assert risks(report(aof_enabled=False, rdb_saves=True), load_settings()) == []


@pytest.mark.parametrize(
    "policy", ["allkeys-lru", "volatile-ttl", "allkeys-random", "allkeys-lrm", "volatile-lfu"]
)
def test_evicting_policy(policy: str) -> None:
    (warning,) = risks(report(maxmemory_policy=policy), load_settings())
    assert policy in warning
    assert "noeviction" in warning


def test_no_maxmemory() -> None:
    (warning,) = risks(report(maxmemory=0), load_settings())
    assert "no maxmemory" in warning
    assert "redis.max_buffered_bytes" in warning


def test_no_persistence() -> None:
    (warning,) = risks(report(aof_enabled=False, rdb_saves=False), load_settings())
    assert "persistence is off" in warning


def test_ttl_shorter_than_two_intervals() -> None:
    settings = load_settings(
        {"redis": {"key_expiration_seconds": 100}, "drainer": {"interval_seconds": 60}}
    )
    (warning,) = risks(report(), settings)
    assert "key_expiration_seconds (100)" in warning
    long_enough = load_settings(
        {"redis": {"key_expiration_seconds": 120}, "drainer": {"interval_seconds": 60}}
    )
    assert risks(report(), long_enough) == []
