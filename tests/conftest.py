"""Shared fixtures: settings factory, a pinned-width console, real Redis servers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from logpipe_cli.settings import Settings, load_settings

pytest_plugins = ["tests.redis_server"]  # the real redis-server fixtures

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings with logs under tmp_path; pass ``{"section": {"key": value}}`` overrides."""

    def make(redis_url: str = "redis://127.0.0.1:1", **sections: dict[str, Any]) -> Settings:
        data: dict[str, dict[str, Any]] = {
            # short, so a test of a Redis outage gets its 503 quickly (and still retries)
            "redis": {"url": redis_url, "write_retry_seconds": 0.2},
            "drainer": {"logs_dir": str(tmp_path / "logs"), "lease_seconds": 1.0},
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return load_settings(data, {})

    return make


@pytest.fixture
def console() -> Console:
    """A console that renders plain text at a fixed width, for asserting on tables."""
    return Console(file=io.StringIO(), width=100, color_system=None)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, as logpipe does."""
    return "asyncio"
