"""A rig for drainer tests on the real redis-server: settings, clients, helpers to look."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.drainer import Drainer
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import Settings
from logpipe_cli.sink import path_for
from tests.cli.conftest import invoke, workdir  # noqa: F401 - fixtures (redis-check tests)
from tests.conftest import MakeSettings
from tests.redis_sentinel import sentinel_setup  # noqa: F401 - fixture

DAY = 19675
#: polls for a condition (a lease running out) give up after this long
DEADLINE_S = 20.0


def line(user: str, n: int, day: int = DAY, **extra: Any) -> bytes:
    """The stored form of event ``n`` of ``user`` on ``day`` (as the API writes it)."""
    body = {"user_id": user, "event": f"e{n}", "timestamp": day * 86400 + n % 86400, **extra}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Rig:
    settings: Settings
    client: aioredis.Redis
    buffer: Buffer
    raw: redis.Redis
    logs: Path

    def drainer(self, owner: str | None = None, **cfg: Any) -> Drainer:
        """A drainer on this rig's Redis; ``cfg`` overrides drainer settings."""
        return Drainer(self.buffer, replace(self.settings.drainer, **cfg), owner)

    async def add(self, user: str, ns: Iterable[int], day: int = DAY) -> list[bytes]:
        """Buffer events ``ns`` of ``user`` the way the API does; returns their lines."""
        lines = [line(user, n, day) for n in ns]
        await self.buffer.append([(EventKey(user, day).key, x) for x in lines])
        return lines

    def path(self, user: str, day: int = DAY) -> Path:
        return path_for(self.logs, EventKey(user, day))

    def file(self, user: str, day: int = DAY) -> bytes:
        p = self.path(user, day)
        return p.read_bytes() if p.exists() else b""

    def file_lines(self, user: str, day: int = DAY) -> list[bytes]:
        data = self.file(user, day)
        assert data == b"" or data.endswith(b"\n"), "torn last line"
        return data.splitlines()

    def redis_keys(self) -> list[str]:
        """Every key but the counters and the recent write ids: what is still buffered
        or in progress."""
        skip = {b"logpipe:stats", b"logpipe:last_drain", b"logpipe:flushes"}
        return sorted(k.decode() for k in self.raw.scan_iter() if k not in skip)

    def stats(self) -> dict[str, int]:
        stats: dict[bytes, bytes] = self.raw.hgetall("logpipe:stats")  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in stats.items()}

    async def wait_lease_gone(self, ek: EventKey) -> None:
        """Let a lease run out (the way a dead drainer's does) without a fixed sleep."""
        deadline = time.monotonic() + DEADLINE_S
        while await self.client.exists(ek.lease):
            assert time.monotonic() < deadline, "lease never ran out"
            await asyncio.sleep(0.02)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run_python(args: list[str], cwd: Path, env: dict[str, str]) -> Finished:
    """Run ``python ARGS`` without blocking the event loop; return what it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=DEADLINE_S * 3)
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


def logpipe_env(rig: Rig, **variables: str) -> dict[str, str]:
    """The environment for a ``logpipe`` child: this rig's Redis and logs_dir, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    env["LOGPIPE_REDIS_URL"] = rig.settings.redis.url
    env["LOGPIPE_DRAINER_LOGS_DIR"] = str(rig.logs)
    env.update(variables)
    return env


@pytest.fixture
async def rig(make_settings: MakeSettings, redis_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    settings = make_settings(redis_url)
    client = connect(settings.redis)
    raw = redis.Redis.from_url(redis_url)
    try:
        yield Rig(settings, client, Buffer(client, settings.redis), raw, tmp_path / "logs")
    finally:
        raw.close()
        await client.aclose()
