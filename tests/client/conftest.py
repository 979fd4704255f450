"""Fixtures for the client library's tests: a scripted fake server and a real one.

The fake is an ``httpx.MockTransport`` that plays a script (statuses, headers, transport
errors) and records every request, with a fake clock whose ``sleep`` only moves time on,
so waits are measured exactly and no test sleeps. The real one is ``logpipe serve`` on the
session's redis-server, read back through Redis.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from logpipe_cli.appclient import RetryPolicy
from tests.processes import Api, Launcher
from tests.redis_server import RedisServer

#: no jitter, so the waits are exact; a short total so the give-up tests stay small
POLICY = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=2.0, max_total_s=10.0, jitter=0.0)

Step = int | tuple[int, dict[str, str]] | type[httpx.TransportError]


@dataclass
class FakeClock:
    """``monotonic`` and ``sleep`` for a client: sleeping records the wait and moves time."""

    now: float = 1000.0
    waits: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass
class Seen:
    """One request as the fake server received it."""

    path: str
    headers: httpx.Headers
    body: bytes
    #: the status answered, or None when the step raised a transport error
    status: int | None = None

    def events(self) -> list[dict[str, Any]]:
        body = self.body
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/log":
            return [json.loads(body)]
        return [json.loads(line) for line in body.splitlines() if line.strip()]


class FakeServer:
    """Answers each request with the next step of ``script`` (then 200 for ever).

    A step is a status, a ``(status, headers)`` pair, or a transport error class to raise
    as if the connection dropped or timed out. ``gate``, when set, holds every request
    until it is opened: a server that stopped answering.
    """

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        #: set once a request has been answered (with a status)
        self.answered = threading.Event()
        self._lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        with self._lock:
            seen = Seen(request.url.path, request.headers, request.read())
            self.seen.append(seen)
            step: Step = self.script.pop(0) if self.script else 200
        if isinstance(step, type):
            raise step("scripted failure", request=request)
        status, headers = step if isinstance(step, tuple) else (step, {})
        seen.status = status
        self.answered.set()
        if status == 200:
            n = len(seen.events())
            body: dict[str, Any] = (
                {"stored": True, "key": "logs:user_x:1"} if seen.path == "/log" else {"accepted": n}
            )
        elif status == 400:
            body = {"detail": "user_id: must be 1-128 characters", "field": "user_id"}
        else:
            body = {"detail": f"scripted {status}"}
        return httpx.Response(status, json=body, headers=headers)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def async_transport(self) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            await request.aread()
            return self.handler(request)

        return httpx.MockTransport(handle)

    def events(self) -> list[dict[str, Any]]:
        """Every event of every request that was answered 200, in order."""
        return [e for s in self.seen if s.status == 200 for e in s.events()]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """``logpipe serve`` for every test of the three modules here that talk to a real API
    (a start costs a second or two): each test empties its Redis (``live``), and reads back
    only what Redis holds, never the process's own counters. Being a session fixture of
    ours, its tests share one pytest-xdist group (tests/conftest.py), so one worker
    starts it once."""
    launcher = Launcher(tmp_path_factory.mktemp("client-procs"))
    try:
        env = launcher.env(redis_server.url, Path(tmp_path_factory.mktemp("logs")))
        yield launcher.api(env)
    finally:
        launcher.cleanup()


@pytest.fixture
def live(api: Api, redis_url: str) -> str:
    """The real API's URL, with its Redis emptied for this test."""
    return api.url


def stored(redis_url: str) -> list[dict[str, Any]]:
    """Every event buffered in Redis (the API stores; nothing drains in these tests)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [
            json.loads(line)
            for key in client.scan_iter("logs:*", count=1000)
            for line in client.lrange(key, 0, -1)
        ]
    finally:
        client.close()
