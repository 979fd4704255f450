"""Fixtures for the API tests: the app in Litestar's test client, against a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from logpipe_cli.settings import Settings
from tests.conftest import MakeSettings


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test's (emptied) Redis, to look at what the API stored."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def settings_for(make_settings: MakeSettings, redis_url: str) -> MakeSettings:
    """``make_settings`` already pointed at the test's Redis."""

    def make(**sections: dict[str, Any]) -> Settings:
        return make_settings(redis_url, **sections)

    return make
