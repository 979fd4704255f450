"""What `logpipe run` checks before it starts a Redis of its own."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from logpipe_cli import redis_binary, supervisor
from logpipe_cli.errors import LogpipeError


def fake_redis(tmp_path: Path, version: str) -> Path:
    path = tmp_path / f"redis-server-{version}"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=0 malloc=libc bits=64'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(("version", "major"), [("6.2.6", 6), ("7.0.15", 7), ("10.1.0", 10)])
def test_major_version(tmp_path: Path, version: str, major: int) -> None:
    assert redis_binary.major_version(fake_redis(tmp_path, version)) == major


def test_major_version_of_something_else_is_none(tmp_path: Path) -> None:
    assert redis_binary.major_version(tmp_path / "missing") is None


def test_redis_6_is_refused_on_redis_7_data(tmp_path: Path) -> None:
    (tmp_path / "data" / "appendonlydir").mkdir(parents=True)
    with pytest.raises(LogpipeError, match=r"Redis 7.*cannot read"):
        supervisor._refuse_older_redis_on_newer_data(
            fake_redis(tmp_path, "6.2.6"), tmp_path / "data"
        )


def test_redis_7_on_its_own_data_and_6_on_empty_data_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    supervisor._refuse_older_redis_on_newer_data(fake_redis(tmp_path, "6.2.6"), data)
    (data / "appendonlydir").mkdir()
    supervisor._refuse_older_redis_on_newer_data(fake_redis(tmp_path, "7.0.15"), data)


@pytest.mark.parametrize(
    ("buffered", "maxmemory"),
    [(0, 0), (1, supervisor.MIN_MAXMEMORY_BYTES), (2**30, 2**31)],
)
def test_maxmemory_leaves_room_for_the_buffer(buffered: int, maxmemory: int) -> None:
    assert supervisor._maxmemory_for(buffered) == maxmemory
