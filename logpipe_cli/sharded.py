"""Redis Cluster mode: what a :class:`~logpipe_cli.buffer.Buffer` does differently when
its client is a ``RedisCluster`` (``redis.mode = "cluster"``).

A Redis Cluster runs a script only if all its keys are in one hash slot. So
(:mod:`logpipe_cli.slot_plan` builds the calls, this module sends them):

- a flush becomes one ``APPEND`` per slot it writes to (the same script as in standalone
  mode), with that slot's own counters and flush-id table (``keys.slot_key``) and per-list
  dedupe sets (``keys.list_id_set``); the scripts are packed per master and sent on one
  connection each, the masters in parallel (:meth:`Sharded.send`);
- the limits that span slots are checked before anything is written: a rate limit by a
  script on each principal's bucket (``RATE``, refunded by ``REFUND`` when another bucket
  refuses), backpressure against the per-slot counters summed in the background;
- the drain protocol's commands are single-slot already (a list's companions carry its name
  as hash tag); the one global key they name, the counters, becomes the slot's copy;
- ``WAIT`` (``redis.min_replicas``) goes to the masters a call wrote to, after a write on
  the same connection, in a round trip of its own; the drainer leaves the keys of a master
  that has too few replicas online.

Commands answered ``MOVED``/``ASK``/``TRYAGAIN`` did not run: those answered ``ASK`` are
sent to the slot's new owner after an ``ASKING`` on the same connection (redis-py's own
ASK handling splits the two over its pool), the others again through redis-py's
``ClusterPipeline``, which follows the redirect. Nothing whose connection failed
is resent here (it may have run); the slot map is read again before the next call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from logpipe_cli import keys, scripts
from logpipe_cli.errors import (
    BufferFullError,
    RateLimitedError,
    RedisUnavailableError,
    ReplicasMissingError,
    ReplicationError,
    WrongTypeError,
)
from logpipe_cli.keys import EventKey
from logpipe_cli.settings import RedisSettings
from logpipe_cli.slot_plan import RATE, REFUND, first_key, localize, plan_flush
from logpipe_cli.slots import SLOTS, key_slot

if TYPE_CHECKING:
    from logpipe_cli.buffer import Charge, RateLimit, Stored

log = logging.getLogger("logpipe.drainer")

#: how old the summed counters that backpressure is checked against may be: reading them
#: costs ~0.1 s of the API's CPU, so while under half of both limits only every 10 s
ROOM_MAX_AGE_S = 1.0
ROOM_MAX_AGE_FAR_S = 10.0

#: errors after which the slot map is read again (a master died, a failover)
_TOPOLOGY_ERRORS = (RedisConnectionError, RedisTimeoutError, ClusterDownError, SlotNotCoveredError)
#: rounds of INCR + WAIT that :meth:`Sharded.wait_on` tries while the slots it names
#: move away from their master (a resharding) before it gives up
WAIT_ROUNDS = 3
#: flush ids whose charge is remembered (:attr:`Sharded._charged`): a flush is sent
#: again within ``redis.write_retry_seconds``, with at most two flushes of a process in
#: Redis at a time (``committer.MAX_IN_FLIGHT``)
CHARGED_IDS_KEPT = 1024
#: replies that say the command did not run there: sent again, following the redirect
_REDIRECTS = (AskError, TryAgainError)  # MovedError is an AskError


def _sum_counters(replies: Sequence[Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for reply in replies:
        if not isinstance(reply, dict):
            continue  # a hash overwritten with another type: not logpipe's
        for k, v in reply.items():
            try:
                n = int(v)
            except ValueError:
                continue
            name = k.decode() if isinstance(k, bytes) else str(k)
            total[name] = total.get(name, 0) + n
    return total


class Sharded:
    """The cluster-mode parts of a Buffer (see the module's docstring)."""

    def __init__(self, client: RedisCluster, cfg: RedisSettings) -> None:
        self.client = client
        self.cfg = cfg
        self._append_sha = client.register_script(scripts.APPEND).sha
        self._rate = client.register_script(RATE)
        self._refund = client.register_script(REFUND)
        #: (monotonic time read, buffered events, buffered bytes) for backpressure
        self._room: tuple[float, int, int] | None = None
        self._room_task: asyncio.Task[None] | None = None
        #: a slot each master owns, for its per-slot REPLICATED key (see wait_on)
        self._slot_of: dict[str, int] = {}
        #: masters found with fewer than min_replicas replicas online, and when last asked
        self._short: set[str] = set()
        self._short_at = 0.0
        self._short_task: asyncio.Task[None] | None = None
        #: the flush ids whose rate-limit charge this process saw pass, newest last: a
        #: flush sent again is not charged again. RATE itself remembers only the last id
        #: that charged a bucket, which another process's flush (several API workers
        #: charging one token's bucket) may have replaced meanwhile
        self._charged: collections.OrderedDict[str, None] = collections.OrderedDict()

    # ---- one pipeline, errors handled the same way everywhere ------------------------

    async def run(self, action: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``cmds`` in one ``ClusterPipeline`` (one round trip per master, in parallel);
        error replies (``NOSCRIPT`` included) are returned in place.

        A failed connection, a cluster that is down or a slot nobody serves raises
        :class:`RedisUnavailableError` and makes the client read the slot map again
        before its next command (a failover: the promoted replica is found).
        """
        pipe = self.client.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except _TOPOLOGY_ERRORS as exc:
            await self._reload_slots()
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc
        for r in replies:
            if isinstance(r, Exception) and not isinstance(r, ResponseError):
                if isinstance(r, _TOPOLOGY_ERRORS):
                    await self._reload_slots()
                raise RedisUnavailableError(f"redis unavailable while {action}: {_why(r)}")
        return list(replies)

    async def _reload_slots(self) -> None:
        """Read the slot map again (a failover moves slots to the promoted replica).

        Connections to the nodes that answer are kept (other calls may be using them);
        if no node answers, the client is closed and reads the map on its next command.
        """
        self._slot_of = {}
        try:
            await self.client.nodes_manager.initialize()
        except (RedisError, OSError):
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()

    async def send(
        self,
        action: str,
        cmds: Sequence[tuple[Any, ...]],
        slots: Sequence[int],
        touched: set[str] | None = None,
    ) -> list[Any]:
        """:meth:`run`, faster: ``cmds[i]`` (whose keys are in ``slots[i]``) packed and
        sent on one connection per master, the masters in parallel, in order per master.

        ``ClusterPipeline`` works out each command's slot and policy anew: ~130 us a
        command, which made a flush of 100 events over 100 slots cost 13 ms (bench:
        7,600 events/s against 166,000 standalone). Commands answered ``MOVED``, ``ASK``
        or ``TRYAGAIN`` (they did not run), or whose slot has no known master, are sent
        again through :meth:`run`, which follows the redirects and updates the slot map.
        ``touched`` gets the name of every master written to (``"*"``: one followed a
        redirect, which may lead anywhere), for :meth:`wait_on`.
        """
        from logpipe_cli.buffer import _pack

        try:
            await self.client.initialize()  # reads the slot map, unless it has one
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc
        cache = self.client.nodes_manager.slots_cache
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        unrouted: list[int] = []
        for i, slot in enumerate(slots):
            owners = cache.get(slot)
            if owners:
                by_node.setdefault(owners[0].name, (owners[0], []))[1].append(i)
            else:
                unrouted.append(i)
        replies: list[Any] = [None] * len(cmds)
        timeout_s = self.cfg.timeout_seconds

        async def one(node: ClusterNode, where: list[int]) -> None:
            conn = node.acquire_connection()
            try:
                await conn.send_packed_command(_pack([cmds[i] for i in where]), check_health=False)
                async with asyncio.timeout(timeout_s):
                    for i in where:
                        try:
                            replies[i] = await conn.read_response(timeout=math.inf)
                        except ResponseError as exc:
                            replies[i] = exc
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be left unread
                raise
            finally:
                node.release(conn)

        if touched is not None:
            touched.update(by_node)
        try:
            await asyncio.gather(*(one(node, where) for node, where in by_node.values()))
        except (*_TOPOLOGY_ERRORS, TimeoutError) as exc:
            await self._reload_slots()
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc!r}") from exc
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc
        if any(isinstance(r, ClusterDownError) for r in replies):
            await self._reload_slots()
        await self._follow_ask(action, cmds, replies, touched)
        again = unrouted + [i for i, r in enumerate(replies) if isinstance(r, _REDIRECTS)]
        if again:
            if touched is not None:
                touched.add("*")
            again.sort()  # in the order given: BEGIN before its LRANGE
            for i, r in zip(again, await self.run(action, [cmds[i] for i in again]), strict=True):
                replies[i] = r
        return replies

    async def _follow_ask(
        self,
        action: str,
        cmds: Sequence[tuple[Any, ...]],
        replies: list[Any],
        touched: set[str] | None,
    ) -> None:
        """Send the commands answered ``ASK`` (their slot is being moved and their keys
        are on the new owner already: they did not run) to that owner, each after an
        ``ASKING`` on the same connection; their replies replace the redirects.

        redis-py's own ASK handling sends ``ASKING`` and the command on two connections
        of its pool once it holds more than one to that node; the command is then
        answered ``MOVED`` back to the old owner, which answers ``ASK`` again, until it
        gives up ("TTL exhausted"): every such command failed until the slot had moved.
        A reply that redirects again stays for :meth:`run`.
        """
        asks: dict[tuple[str, int], list[int]] = {}
        for i, r in enumerate(replies):
            if isinstance(r, AskError) and not isinstance(r, MovedError):
                asks.setdefault(r.node_addr, []).append(i)
        if not asks:
            return
        timeout_s = self.cfg.timeout_seconds
        from logpipe_cli.buffer import _pack

        async def asking(node: ClusterNode, where: list[int]) -> None:
            conn = node.acquire_connection()
            try:
                packed = _pack([c for i in where for c in (("ASKING",), cmds[i])])
                await conn.send_packed_command(packed, check_health=False)
                async with asyncio.timeout(timeout_s):
                    for i in where:
                        for step in ("asking", "command"):
                            try:
                                reply = await conn.read_response(timeout=math.inf)
                            except ResponseError as exc:
                                reply = exc
                            if step == "command":
                                replies[i] = reply
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be left unread
                raise
            finally:
                node.release(conn)

        calls = []
        for (host, port), where in asks.items():
            node = self.client.get_node(host=host, port=port)
            if node is None:
                continue  # a node the map does not know yet: left to run()
            if touched is not None:
                touched.add(node.name)
            calls.append(asking(node, where))
        try:
            await asyncio.gather(*calls)
        except (*_TOPOLOGY_ERRORS, TimeoutError) as exc:
            await self._reload_slots()
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc!r}") from exc
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc

    async def run_scripts(
        self,
        action: str,
        cmds: Sequence[tuple[Any, ...]],
        texts: Sequence[str],
        slots: Sequence[int] | None = None,
        touched: set[str] | None = None,
    ) -> list[Any]:
        """:meth:`send` (:meth:`run` without ``slots``); commands answered ``NOSCRIPT`` (a
        promoted replica, a restarted node: they did not run) are sent again once after
        loading ``texts`` on every master, each with the plain reads that followed it (a
        read after a script that did not run read what the script would have changed:
        BEGIN's LRANGE). Any other error reply raises :class:`RedisUnavailableError`."""
        if slots is None:
            replies = await self.run(action, cmds)
        else:
            replies = await self.send(action, cmds, slots, touched)
        missing: list[int] = []
        for i, r in enumerate(replies):
            if isinstance(r, NoScriptError):
                missing.append(i)
            elif missing and missing[-1] == i - 1 and cmds[i][0] != "EVALSHA":
                missing.append(i)  # reads are idempotent: sent again with their script
        if missing:
            try:
                for text in texts:
                    await self.client.script_load(text)
            except (RedisError, OSError) as exc:
                raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc
            if slots is None:
                again = await self.run(action, [cmds[i] for i in missing])
            else:
                again = await self.send(
                    action, [cmds[i] for i in missing], [slots[i] for i in missing], touched
                )
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        for r in replies:
            if isinstance(r, ResponseError):
                raise RedisUnavailableError(f"redis unavailable while {action}: {r}")
        return replies

    # ---- the drain protocol ----------------------------------------------------------

    async def drain_pipeline(self, action: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Buffer._pipeline in cluster mode: each command to its slot's master, the global
        counters replaced by the slot's own."""
        local = [localize(c) for c in cmds]
        return await self.send(action, local, [key_slot(first_key(c)) for c in local])

    async def run_drain_replicated(
        self, action: str, what: str, cmds: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """Buffer._run_drain_replicated in cluster mode: the commands (scripts loaded on
        ``NOSCRIPT``), then, with ``min_replicas`` set, ``WAIT`` on the masters they went
        to; raises :class:`ReplicationError` when one fell short."""
        from logpipe_cli.buffer import _DRAIN_SCRIPTS

        local = [localize(c) for c in cmds]
        touched: set[str] = set()
        slots = [key_slot(first_key(c)) for c in local]
        replies = await self.run_scripts(action, local, _DRAIN_SCRIPTS, slots, touched)
        if self.cfg.min_replicas:
            await self.check_replicated(touched, what)
        return replies

    async def check_replicated(self, touched: set[str], what: str) -> None:
        """``WAIT`` for ``min_replicas`` on the masters in ``touched`` (see :meth:`send`);
        :class:`ReplicationError` when one fell short."""
        cfg = self.cfg
        timeout_ms = max(1, round(cfg.replica_timeout_seconds * 1000))
        got = await self.wait_on(touched, cfg.min_replicas, timeout_ms)
        if got < cfg.min_replicas:
            short = await self._short_of_replicas(touched)
            if short:
                self._short.update(short)
                self._short_at = time.monotonic()
                raise ReplicasMissingError(
                    f"{what} on the Redis masters, but master {', '.join(short)} has fewer "
                    f"than redis.min_replicas = {cfg.min_replicas} replicas connected (its "
                    "replica took over when it died?): its slots are refused until one is back",
                    got,
                    cfg.min_replicas,
                )
            raise ReplicationError(
                f"{what} on the Redis masters but written on only {got} of "
                f"{cfg.min_replicas} replicas within {cfg.replica_timeout_seconds:g} s "
                "(redis.min_replicas)",
                got,
                cfg.min_replicas,
            )

    async def wait_on(self, touched: set[str], replicas: int, timeout_ms: int) -> int:
        """``WAIT`` on each master in ``touched`` (every master for ``"*"``), after a
        write on the same connection (so it covers every write that master took before,
        whichever connection sent it); the fewest replicas any of them reached. A master
        written to that no longer serves a slot (demoted by a failover) raises
        :class:`RedisUnavailableError`: its writes may be gone; the caller sends again."""
        primaries = self.client.get_primaries()
        if "*" in touched:
            masters = primaries
        else:
            masters = [n for n in primaries if n.name in touched]
            if len(masters) < len(touched):
                gone = sorted(touched - {n.name for n in masters})
                raise RedisUnavailableError(
                    f"redis unavailable: {', '.join(gone)} is no longer a master (a failover)"
                )
        if not masters:
            return replicas  # nothing was written
        fewest = replicas
        moving: set[int] = set()
        for _ in range(WAIT_ROUNDS):
            got, masters = await self._wait_round(masters, replicas, timeout_ms, moving)
            fewest = min([fewest, *got])
            if not masters:
                return fewest
        raise RedisUnavailableError(
            "redis unavailable while waiting for replicas: the slots of master "
            f"{', '.join(n.name for n in masters)} kept moving away (a resharding)"
        )

    async def _wait_round(
        self, masters: list[ClusterNode], replicas: int, timeout_ms: int, moving: set[int]
    ) -> tuple[list[int], list[ClusterNode]]:
        """An ``INCR`` and a ``WAIT`` on one connection to each of ``masters``: the WAIT
        replies of those whose INCR ran there, and those whose INCR was redirected.

        Redirections are not followed: an INCR sent on to the slot's new owner would
        leave the WAIT counting nothing of ours (see :meth:`_a_slot_of`). A redirected
        INCR's slot is added to ``moving`` (``ASK``: being moved) and, after a ``MOVED``,
        the slot map is read again, so the next round picks a slot the master keeps.
        """
        slots = [self._a_slot_of(node, moving) for node in masters]
        pipe = self.client.pipeline(transaction=False)
        for node, slot in zip(masters, slots, strict=True):
            pipe.execute_command("INCR", keys.slot_key(keys.REPLICATED, slot))
            pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        try:
            replies = await pipe.execute(raise_on_error=False, allow_redirections=False)
        except (RedisError, OSError) as exc:
            if isinstance(exc, _TOPOLOGY_ERRORS):
                await self._reload_slots()
            raise RedisUnavailableError(
                f"redis unavailable while waiting for replicas: {exc}"
            ) from exc
        got: list[int] = []
        again: list[ClusterNode] = []
        for node, slot, incr, wait in zip(
            masters, slots, replies[0::2], replies[1::2], strict=True
        ):
            if isinstance(incr, AskError):  # MovedError is an AskError: it did not run
                moving.add(slot)
                again.append(node)
                continue
            for r in (incr, wait):
                if isinstance(r, Exception):
                    raise RedisUnavailableError(
                        f"redis unavailable while waiting for replicas: {r}"
                    )
            got.append(int(wait))
        if any(isinstance(r, MovedError) for r in replies[0::2]):
            await self._reload_slots()
        return got, again

    def _a_slot_of(self, node: ClusterNode, moving: Container[int] = ()) -> int:
        """A slot ``node`` serves, as the client's slot map says, and not one of
        ``moving`` (cached while true)."""
        cache = self.client.nodes_manager.slots_cache
        slot = self._slot_of.get(node.name)
        if (
            slot is not None
            and slot not in moving
            and cache.get(slot)
            and cache[slot][0].name == node.name
        ):
            return slot
        # moved to another master (a resharding takes a master's lowest slots first, this
        # one): picked anew, or wait_on's INCR goes there and its WAIT counts nothing
        self._slot_of.pop(node.name, None)
        for s, owners in cache.items():
            if owners and owners[0].name not in self._slot_of and s not in moving:
                self._slot_of[owners[0].name] = s
        slot = self._slot_of.get(node.name)
        if slot is None:
            raise RedisUnavailableError(f"redis unavailable: master {node.name} serves no slot")
        return slot

    async def find_drainable(self, pattern: str) -> tuple[list[EventKey], list[str]]:
        """Buffer.find_drainable in cluster mode: ``SCAN`` on every master, except, with
        ``min_replicas`` set, one with fewer replicas online (a killed master's promoted
        replica, until a replica is back): its claims could not be copied before their
        files are written, so its keys wait (a warning says so) and the others drain."""
        try:
            # the slot map read again each pass: a master that died and came back as a
            # replica still answers, so nothing else would tell this client it moved
            await self.client.initialize()
            await self.client.nodes_manager.initialize()
            masters = self.client.get_primaries()
            if self.cfg.min_replicas:
                masters = await self._replicated_enough(masters)
            found: set[EventKey] = set()
            unsafe: set[str] = set()
            for node in masters:
                for kind, match in (("events", pattern), ("claim", keys.CLAIM_PREFIX + "*")):
                    async for raw in self.client.scan_iter(
                        match=match, count=1000, target_nodes=node
                    ):
                        key = keys.classify(raw)
                        if key.kind != kind:
                            continue  # a pattern of "*" also matches claims
                        if key.event_key is None:
                            unsafe.add(key.name)
                        else:
                            found.add(key.event_key)
        except _TOPOLOGY_ERRORS as exc:
            await self._reload_slots()
            raise RedisUnavailableError(f"redis unavailable while listing keys: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while listing keys: {exc}") from exc
        return sorted(found), sorted(unsafe)

    async def _replicas_online(self, masters: list[ClusterNode]) -> dict[str, int]:
        """Each master's replicas online, by ``INFO replication``."""
        infos: dict[str, dict[str, Any]] = await self.client.info(
            "replication", target_nodes=masters
        )
        if len(masters) == 1:  # one node's answer is not keyed by its name
            infos = {masters[0].name: infos}
        return {
            node.name: sum(
                1
                for name, value in infos.get(node.name, {}).items()
                if name.startswith("slave")
                and isinstance(value, dict)
                and value.get("state") == "online"
            )
            for node in masters
        }

    async def _short_of_replicas(self, touched: set[str]) -> list[str]:
        """The masters in ``touched`` with fewer than ``min_replicas`` replicas online
        (asked only after a WAIT fell short; ``[]`` when that cannot be told)."""
        masters = [n for n in self.client.get_primaries() if "*" in touched or n.name in touched]
        try:
            online = await self._replicas_online(masters)
        except (RedisError, OSError):
            return []
        return sorted(name for name, n in online.items() if n < self.cfg.min_replicas)

    def refuse_short(self, slots: Sequence[int]) -> None:
        """Raise :class:`ReplicasMissingError`, before anything is written, when one of
        ``slots`` is on a master lately found short of replicas: waiting out its ``WAIT``
        again (``redis.replica_timeout_seconds``) would hold up the API's other writes.
        Whether it has them again is asked in the background, once a second."""
        if not self._short:
            return
        cache = self.client.nodes_manager.slots_cache
        hit = sorted({o[0].name for s in slots if (o := cache.get(s)) and o[0].name in self._short})
        if not hit:
            return
        if self._short_task is None and time.monotonic() - self._short_at > ROOM_MAX_AGE_S:
            self._short_task = asyncio.create_task(self._recheck_short())
        raise ReplicasMissingError(
            f"not stored: master {', '.join(hit)} has fewer than redis.min_replicas = "
            f"{self.cfg.min_replicas} replicas connected (its replica took over when it "
            "died?); its slots are refused until one is back",
            0,
            self.cfg.min_replicas,
        )

    async def _recheck_short(self) -> None:
        try:
            masters = [n for n in self.client.get_primaries() if n.name in self._short]
            online = await self._replicas_online(masters)
            self._short = {name for name, n in online.items() if n < self.cfg.min_replicas}
        except (RedisError, OSError):
            pass  # asked again a second later
        finally:
            self._short_at = time.monotonic()
            self._short_task = None

    async def _replicated_enough(self, masters: list[ClusterNode]) -> list[ClusterNode]:
        """``masters`` with at least ``min_replicas`` replicas online (INFO replication)."""
        replicas = await self._replicas_online(masters)
        keep = []
        for node in masters:
            online = replicas[node.name]
            if online >= self.cfg.min_replicas:
                keep.append(node)
            else:
                log.warning(
                    "cluster master %s has %d of redis.min_replicas = %d replicas online: "
                    "its keys are left until one is back",
                    node.name,
                    online,
                    self.cfg.min_replicas,
                )
        return keep

    # ---- counters ---------------------------------------------------------------------

    async def counters(self) -> tuple[dict[str, int], dict[str, str]]:
        """Every slot's counters summed, and the last drain's outcome: 16384 reads
        pipelined per master (a constant cost, whatever the number of keys)."""
        replies = await self.read_slots(("HGETALL",))
        last = await self.run("reading counters", [("HGETALL", keys.LAST_DRAIN)])
        return _sum_counters(replies), {_str(k): _str(v) for k, v in last[0].items()}

    async def read_slots(self, cmd: tuple[Any, ...]) -> list[Any]:
        """``cmd`` (a read, e.g. ``("HGETALL",)``) on every slot's counters
        (``keys.slot_key(keys.STATS, slot)``), in slot order.

        Packed and sent on one connection per master, the masters in parallel: through
        ``ClusterPipeline`` the 16384 reads took ~0.3 s of CPU, packed ~0.1 s. A slot that
        moved (a reply of ``MOVED`` or ``ASK``: a resharding) is read again through the
        client, which follows the redirect.
        """
        try:
            await self.client.initialize()  # reads the slot map, unless it has one
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while reading counters: {exc}") from exc
        cache = self.client.nodes_manager.slots_cache
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for slot in range(SLOTS):
            owners = cache.get(slot)
            if not owners:
                raise RedisUnavailableError(f"redis unavailable: no master serves slot {slot}")
            by_node.setdefault(owners[0].name, (owners[0], []))[1].append(slot)
        replies: list[Any] = [None] * SLOTS
        from logpipe_cli.buffer import _pack

        async def read(node: ClusterNode, slots: list[int]) -> None:
            cmds = [(*cmd[:1], keys.slot_key(keys.STATS, s), *cmd[1:]) for s in slots]
            conn = node.acquire_connection()
            try:
                await conn.send_packed_command(_pack(cmds), check_health=False)
                for s in slots:
                    try:
                        replies[s] = await conn.read_response()
                    except ResponseError as exc:
                        replies[s] = exc
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be left unread
                raise
            finally:
                node.release(conn)

        try:
            await asyncio.gather(*(read(node, slots) for node, slots in by_node.values()))
        except _TOPOLOGY_ERRORS as exc:
            await self._reload_slots()
            raise RedisUnavailableError(f"redis unavailable while reading counters: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"redis unavailable while reading counters: {exc}") from exc
        every = [(*cmd[:1], keys.slot_key(keys.STATS, s), *cmd[1:]) for s in range(SLOTS)]
        await self._follow_ask("reading counters", every, replies, None)
        moved = [s for s in range(SLOTS) if isinstance(replies[s], ResponseError)]
        if moved:
            again = await self.run(
                "reading counters",
                [(*cmd[:1], keys.slot_key(keys.STATS, s), *cmd[1:]) for s in moved],
            )
            for s, r in zip(moved, again, strict=True):
                replies[s] = r
        if cmd[0].upper() == "HGETALL":
            return [_pairs(r) for r in replies]
        return replies

    async def _read_room(self) -> None:
        replies = await self.read_slots(("HMGET", "buffered", "buffered_bytes"))
        events = nbytes = 0
        for r in replies:
            if isinstance(r, list):
                events += _int(r[0])
                nbytes += _int(r[1])
        self._room = (time.monotonic(), events, nbytes)

    async def check_room(self, events: int, nbytes: int) -> None:
        """Backpressure against the summed counters, at most :data:`ROOM_MAX_AGE_S` old
        (:data:`ROOM_MAX_AGE_FAR_S` while under half of both limits; read again in the
        background while the last figure serves); raises
        :class:`BufferFullError` before anything is written."""
        cfg = self.cfg
        if not cfg.max_buffered_events and not cfg.max_buffered_bytes:
            return
        if self._room is None:
            # the first flushes of a process wait for one read, not one each
            if self._room_task is None:
                self._room_task = asyncio.create_task(self._refresh_room())
            await asyncio.shield(self._room_task)
            if self._room is None:
                await self._read_room()  # it failed: now raise its error here
        assert self._room is not None
        read_at, buffered, held = self._room
        near = (cfg.max_buffered_events and 2 * buffered >= cfg.max_buffered_events) or (
            cfg.max_buffered_bytes and 2 * held >= cfg.max_buffered_bytes
        )
        max_age = ROOM_MAX_AGE_S if near else ROOM_MAX_AGE_FAR_S
        if time.monotonic() - read_at > max_age and self._room_task is None:
            self._room_task = asyncio.create_task(self._refresh_room())
        if cfg.max_buffered_events and buffered + events > cfg.max_buffered_events:
            raise BufferFullError(
                f"buffer full: Redis holds {cfg.max_buffered_events} events or more "
                "(redis.max_buffered_events); retry after the drainer catches up"
            )
        if cfg.max_buffered_bytes and held + nbytes > cfg.max_buffered_bytes:
            raise BufferFullError(
                f"buffer full: the events in Redis hold {cfg.max_buffered_bytes} bytes "
                "or more (redis.max_buffered_bytes); retry after the drainer catches up"
            )

    async def _refresh_room(self) -> None:
        try:
            await self._read_room()
        except RedisUnavailableError:
            pass  # the last figure stays; the writes themselves will tell of the outage
        finally:
            self._room_task = None

    async def aclose(self) -> None:
        """Stop a background read of the counters (the client is closed by its owner)."""
        for task in (self._room_task, self._short_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # ---- rate limits ------------------------------------------------------------------

    async def charge(self, charges: Sequence[Charge], rate: RateLimit, flush_id: str) -> None:
        """Charge each request to its principal's bucket, one script per bucket (in
        parallel). If any request is refused, the buckets that were charged are refunded
        and :class:`~logpipe_cli.buffer.RateLimitedErrors` says which were refused."""
        from logpipe_cli.buffer import RateLimitedErrors, _rate_limited

        per_bucket: dict[str, list[int]] = {}
        for i, c in enumerate(charges):
            per_bucket.setdefault(keys.rate_bucket(c.principal), []).append(i)
        names = list(per_bucket)
        eps, burst = repr(rate.events_per_second), rate.burst
        cmds = [
            ("EVALSHA", self._rate.sha, 1, name, eps, burst, flush_id,
             *(charges[i].cost for i in per_bucket[name]))
            for name in names
        ]  # fmt: skip
        slots = [key_slot(name) for name in names]
        replies = await self.run_scripts("charging rate limits", cmds, [RATE], slots)
        refused: dict[int, RateLimitedError] = {}
        for name, reply in zip(names, replies, strict=True):
            where = per_bucket[name]
            for j, ms in zip(reply[0::2], reply[1::2], strict=True):
                i = where[int(j) - 1]
                refused[i] = _rate_limited(charges[i], rate, int(ms))
        if not refused:
            return
        back = [
            ("EVALSHA", self._refund.sha, 1, name, sum(charges[i].cost for i in per_bucket[name]),
             burst)
            for name, reply in zip(names, replies, strict=True)
            if not reply
        ]  # fmt: skip
        if back:
            await self.run_scripts("refunding rate limits", back, [REFUND])
        raise RateLimitedErrors(refused)

    # ---- the write path ---------------------------------------------------------------

    async def store(
        self,
        items: Sequence[tuple[str, bytes]],
        flush_id: str | None,
        ids: Sequence[str | None] | None,
        now: float | None,
        charges: Sequence[Charge],
        rate: RateLimit | None,
    ) -> Stored:
        """Buffer.store in cluster mode (see the module's docstring)."""
        from logpipe_cli.buffer import Stored

        flush_id = flush_id or uuid.uuid4().hex
        await self.check_room(len(items), sum(len(v) for _, v in items))
        calls = plan_flush(items, flush_id, self.cfg, ids, time.time() if now is None else now)
        if self.cfg.min_replicas:
            self.refuse_short([c.slot for c in calls])
        if (
            rate is not None
            and rate.events_per_second > 0
            and charges
            and flush_id not in self._charged
        ):
            await self.charge(charges, rate, flush_id)
            self._charged[flush_id] = None
            if len(self._charged) > CHARGED_IDS_KEPT:
                self._charged.popitem(last=False)
        cmds = [
            ("EVALSHA", self._append_sha, len(c.script_keys), *c.script_keys, *c.argv)
            for c in calls
        ]
        touched: set[str] = set()
        replies = await self.run_scripts(
            "storing events", cmds, [scripts.APPEND], [c.slot for c in calls], touched
        )
        if self.cfg.min_replicas:
            await self.check_replicated(touched, "stored")
        buffered = 0
        duplicates: list[int] = []
        bad: list[str] = []
        for call, reply in zip(calls, replies, strict=True):
            outcome = scripts.appended(reply)
            if outcome.outcome == "wrongtype":
                bad += [call.lists[i] for i in outcome.wrong]
            elif outcome.outcome == "stored":
                buffered += outcome.buffered
                duplicates += [call.order[p] for p in outcome.duplicates]
            else:  # limits are 0 in the per-slot calls: checked above
                raise RedisUnavailableError(f"unexpected APPEND outcome {outcome.outcome}")
        if bad:
            raise WrongTypeError(
                f"Redis key {bad[0]} (or its dedupe set) holds another type than expected "
                "(written by something else?); its events were not stored",
                bad,
            )
        return Stored(buffered, sorted(duplicates))


def _why(exc: Exception) -> str:
    """An error's text, with redis-py's "TTL exhausted." (it followed ``MOVED``/``ASK``
    or waited out ``TRYAGAIN`` 16 times: nothing ran) said plainly."""
    if isinstance(exc, ClusterError) and "TTL exhausted" in str(exc):
        return "redirected too often: keys of a slot being moved (resharding) or a failover"
    return str(exc)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    """A counter as stored; anything else (none, written by hand) counts as 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _pairs(reply: Any) -> Any:
    """An HGETALL reply read raw (a flat list) as a dict; an error or a dict as it is."""
    if isinstance(reply, list):
        return dict(zip(reply[0::2], reply[1::2], strict=True))
    return reply
