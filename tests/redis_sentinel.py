"""A real Redis Sentinel setup for tests: 1 master, 2 replicas, 3 Sentinels.

Started from the ``redis-server`` binary (:func:`logpipe_cli.redis_binary.find`, as
:mod:`tests.redis_server` does; ``redis-server sentinel.conf --sentinel`` is a Sentinel)
on free ports in a temporary directory. Ready when every replica is online on the master
and every Sentinel names that master and knows both replicas and the other two Sentinels,
so that a failover can start. Short ``down-after-milliseconds`` and ``failover-timeout``
make a failover take a few seconds. Fails loudly (never skips) when anything is missing.

Each Sentinel's configuration already names the replicas and the other Sentinels (the
``known-replica``/``known-sentinel`` lines Sentinel itself writes there, with ids made
here), as a Sentinel restarted in production starts: found by hello messages alone, the
last of them was known to all only after a hello period (2 s), for each setup.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from logpipe_cli import redis_binary
from logpipe_cli.errors import LogpipeError
from tests.redis_server import RedisServer, free_port

MASTER_NAME = "logpipe-master"
#: how long a master may be silent before a Sentinel thinks it down
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
#: a replica's first sync starts at once (Redis waits 5 s for more replicas by default);
#: on every server, as any of them may become the master
FAST_SYNC = ("--repl-diskless-sync-delay", "0")
#: every wait on the setup gives up (and fails the test) after this long
DEADLINE_S = 30.0


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll ``condition`` until true; fail the test naming ``what`` when it never is."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass  # a server still starting or just killed: ask again
        if time.monotonic() > deadline:
            pytest.fail(f"sentinel setup: gave up waiting for {what}", pytrace=False)
        time.sleep(0.05)


@dataclass
class SentinelProc:
    """One Sentinel process."""

    dir: Path
    master_port: int
    port: int = field(default_factory=free_port)
    #: its run id (``sentinel myid``), set here so the others' configurations can name it
    myid: str = field(default_factory=lambda: secrets.token_hex(20))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, replica_ports: Sequence[int] = (), peers: Sequence[SentinelProc] = ()) -> None:
        """Start it knowing the replicas at ``replica_ports`` and the Sentinels ``peers``
        (each still checked over its own connection before a test relies on it: see
        :meth:`SentinelSetup.wait_ready`)."""
        try:
            binary = str(redis_binary.find())
        except LogpipeError as exc:
            pytest.fail(f"tests need a real Redis: {exc}", pytrace=False)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "sentinel.conf"  # Sentinel rewrites it: one file per Sentinel
        conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel myid {self.myid}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 2\n"
            + "".join(
                f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {port}\n" for port in replica_ports
            )
            + "".join(
                f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {p.port} {p.myid}\n"
                for p in peers
            )
        )
        self.proc = subprocess.Popen([binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL)
        wait_for(self._answers, f"the Sentinel on {self.port} to answer")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.dir / "sentinel.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"redis sentinel did not start on {self.port}:\n{log}", pytrace=False)
        with self.client() as c:
            return bool(c.ping())

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=0.5)

    def master_state(self) -> dict[str, Any]:
        with self.client() as c:
            state: dict[str, Any] = c.sentinel_master(MASTER_NAME)
            return state

    def master_port_seen(self) -> int | None:
        with self.client() as c:
            addr = c.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(addr[1]) if addr else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class SentinelSetup:
    """The servers (the first one the master at start) and the Sentinels watching them."""

    dir: Path
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelProc] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def settings(self, **more: Any) -> dict[str, Any]:
        """``LOGPIPE_*``-style keyword settings (see ``Launcher.env``) for this setup."""
        return {
            "redis_mode": "sentinel",
            "redis_sentinels": ",".join(self.sentinel_addresses),
            "redis_sentinel_master": MASTER_NAME,
            **more,
        }

    def start(self, replicas: int = 2, sentinels: int = 3) -> None:
        master = RedisServer(self.dir / "redis-0", extra_args=FAST_SYNC)
        master.start()
        self.servers.append(master)
        for i in range(1, replicas + 1):
            replica = RedisServer(
                self.dir / f"redis-{i}",
                extra_args=(*FAST_SYNC, "--replicaof", "127.0.0.1", str(master.port)),
            )
            replica.start()
            self.servers.append(replica)
        wait_for(
            lambda: self.online_replicas(master.port) == replicas,
            f"{replicas} replicas online on the master",
        )
        self.sentinels = [
            SentinelProc(self.dir / f"sentinel-{i}", master.port) for i in range(sentinels)
        ]
        replica_ports = [r.port for r in self.servers[1:]]
        for s in self.sentinels:
            s.start(replica_ports, [p for p in self.sentinels if p is not s])
        self.wait_ready(master.port, replicas)

    def wait_ready(self, master_port: int, replicas: int) -> None:
        """Every Sentinel names ``master_port``, and is connected to ``replicas`` replicas
        (each with its link to the master up) and to every other live Sentinel, none of
        them thought down."""
        others = sum(1 for s in self.sentinels if s.proc is not None) - 1

        def up(state: dict[str, Any]) -> bool:
            flags = state["flags"]
            flags = set(flags.split(",")) if isinstance(flags, str) else set(flags)
            return not flags & {"disconnected", "s_down", "o_down"}

        def agreed() -> bool:
            for s in self.sentinels:
                if s.proc is None:
                    continue
                if s.master_port_seen() != master_port:
                    return False
                with s.client() as c:
                    seen_replicas = c.sentinel_slaves(MASTER_NAME)
                    seen_sentinels = c.sentinel_sentinels(MASTER_NAME)
                online = [r for r in seen_replicas if up(r) and r.get("master-link-status") == "ok"]
                if len(online) < replicas:
                    return False
                if sum(1 for p in seen_sentinels if up(p)) < others:
                    return False
            return True

        wait_for(agreed, f"the Sentinels to agree on the master on port {master_port}")

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def master(self) -> RedisServer:
        """The server the Sentinels name as master now."""
        port = next(p for p in (s.master_port_seen() for s in self.sentinels if s.proc) if p)
        return self.server(port)

    def online_replicas(self, port: int) -> int:
        """Replicas connected and in sync (``INFO replication``) on the server at ``port``."""
        with redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=0.5) as c:
            info = c.info("replication")
        if info.get("role") != "master":
            return 0
        return sum(
            1
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns it (down for good: never restarted)."""
        old = self.master()
        old.kill()
        return old

    def wait_failover(self, old_port: int, replicas: int = 1) -> RedisServer:
        """Wait until every Sentinel names a new master that has ``replicas`` online."""

        def moved() -> bool:
            seen = {s.master_port_seen() for s in self.sentinels if s.proc}
            if len(seen) != 1 or old_port in seen:
                return False
            port = seen.pop()
            return port is not None and self.online_replicas(port) >= replicas

        wait_for(moved, f"a failover away from the master on port {old_port}")
        return self.master()

    def stop(self) -> None:
        for s in self.sentinels:
            s.kill()
        for r in self.servers:
            r.kill()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    """1 master, 2 replicas, 3 Sentinels of this test's own (a failover test kills some)."""
    setup = SentinelSetup(tmp_path / "sentinel")
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
