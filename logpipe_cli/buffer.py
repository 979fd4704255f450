"""Everything the API and the drainer ask of Redis: append, claim, ack, recover, stats.

Each multi-step change is one Lua script, and calls for many keys go out in one
pipeline, so a batch of work costs one round trip however many keys it touches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import hiredis
import redis.asyncio as aioredis
from hiredis import pack_command as _pack_command
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from logpipe_cli import keys, ownkeys, scripts
from logpipe_cli.errors import (
    BufferFullError,
    LogpipeError,
    RateLimitedError,
    RedisUnavailableError,
    ReplicationError,
    WrongTypeError,
)
from logpipe_cli.keys import EventKey, FoundKey, KeyKind
from logpipe_cli.redis_conn import is_cluster, make_client, recheck_master
from logpipe_cli.resp import LeanRedis
from logpipe_cli.scripts import Acked, Began, ClaimStatus, Prepared
from logpipe_cli.settings import RedisSettings
from logpipe_cli.sharded import Sharded

try:  # redis-py's own hiredis parser (see _read_replies); its other path if it moves
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser
    from redis.asyncio.connection import AbstractConnection

    _READ_RESPONSE: Any = AbstractConnection.read_response
except ImportError:  # pragma: no cover - another redis-py layout
    _NOT_ENOUGH_DATA, _AsyncHiredisParser = object(), None  # type: ignore[assignment,misc]
    _READ_RESPONSE = None


def connect(cfg: RedisSettings) -> aioredis.Redis:
    """A client for the configured Redis (``redis.url``, or the Sentinels' master) that
    returns bytes and never retries by itself (see :mod:`logpipe_cli.redis_conn`)."""
    return make_client(cfg)


@contextlib.contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn redis-py's exceptions into :class:`RedisUnavailableError`."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise _unavailable(action, exc) from exc


def _unavailable(action: str, exc: BaseException) -> LogpipeError:
    """The error for Redis refusing ``action``: a key of another type is no outage
    (retrying cannot help; :meth:`Buffer._name_wrong_type` names the key), anything
    else is :class:`RedisUnavailableError`."""
    if ownkeys.is_wrongtype(exc):
        return WrongTypeError(
            f"a Redis key holds another type than logpipe keeps there, while {action}: {exc}", []
        )
    return RedisUnavailableError(f"redis unavailable while {action}: {exc}")


@dataclass(frozen=True)
class Stored:
    """What :meth:`Buffer.store` did: events buffered now, and the items not stored
    because their event id was stored before (indexes into the call's items)."""

    buffered: int
    duplicates: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RateLimit:
    """``[limits]``: a token bucket per principal, ``burst`` deep, refilled at
    ``events_per_second``."""

    events_per_second: float
    burst: int


@dataclass(frozen=True)
class Charge:
    """One request's share of an append under a rate limit: whose bucket pays, how much."""

    principal: str
    cost: int


class RateLimitedErrors(RateLimitedError):
    """APPEND refused some requests of a call for their rate limit (nothing stored):
    ``refused`` maps each one's position in ``charges`` to its own error."""

    def __init__(self, refused: dict[int, RateLimitedError]) -> None:
        first = next(iter(refused.values()))
        super().__init__(first.detail, first.retry_after_s)
        self.refused = refused


@dataclass(frozen=True)
class Claim:
    """What a drainer got when it asked for a key."""

    key: EventKey
    status: ClaimStatus
    detail: str  # pending offset for resume, holder for busy, type for wrongtype


@dataclass(frozen=True)
class BeginItem:
    """One key of a BEGIN call: the file's size before the append."""

    key: EventKey
    size: int


@dataclass(frozen=True)
class AckItem:
    """One key of an ACK call: what the append of its batch did."""

    key: EventKey
    acknowledged: int  # events trimmed from the claim (written + quarantined)
    written: int  # events appended to the file
    nbytes: int  # bytes appended to the file
    quarantined: list[bytes]  # values refused, moved to the quarantine list
    size: int  # the file's size after the append: now acknowledged


@dataclass(frozen=True)
class KeyInfo:
    key: str
    event_key: EventKey | None
    kind: str  # "events", "claim" or "quarantine"
    events: int
    bytes: int
    ttl_s: int  # -1 = no expiry


def _rate_limited(charge: Charge, rate: RateLimit, wait_ms: int) -> RateLimitedError:
    # whole seconds, rounded up: a client that waits Retry-After finds the tokens there
    retry_after_s = max(1, -(-wait_ms // 1000))
    return RateLimitedError(
        f"rate limit: {charge.cost} event(s) over limits.events_per_second = "
        f"{rate.events_per_second:g} (burst {rate.burst}); retry after {retry_after_s} s",
        retry_after_s,
    )


def _int_or_none(value: bytes | str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


#: the scripts the drain protocol sends by digest (see :meth:`Buffer._run_drain`)
_DRAIN_SCRIPTS = (
    scripts.CLAIM,
    scripts.PREPARE,
    scripts.BEGIN,
    scripts.ACK,
    scripts.RENEW,
    scripts.RELEASE,
)
_DRAIN_SHAS = {text: hashlib.sha1(text.encode()).hexdigest() for text in _DRAIN_SCRIPTS}


def _pack(cmds: Sequence[tuple[Any, ...]]) -> bytes:
    """``cmds`` in the Redis protocol (RESP2 arrays of bulk strings), as one buffer.
    Arguments are ``bytes``, ``str`` (UTF-8) or ``int``.

    hiredis's C packer (redis-py's own dependency here) does the encoding: 0.7 µs a
    drain command against 2.7 µs for the same bytes made in Python, which was the
    largest item of the drainer's main thread on 20,000 small keys (cProfile,
    bench/results)."""
    return b"".join([_pack_command(cmd) for cmd in cmds])


async def _read_replies(conn: Any, n: int) -> list[Any]:
    """``n`` replies from a redis-py connection, an error reply as its exception in
    place. Straight from the connection's hiredis reader when redis-py parses with
    hiredis (as here: a dependency): ``Connection.read_response`` wraps every reply
    in a timeout context and its checks, ~3x the parse of a short reply, three
    replies a key in a drain of many small keys (cProfile, bench/results). The caller
    bounds the whole read with its own timeout. A RESP3 push message (none is asked
    for on these connections) is handed to the parser and skipped, as
    ``read_response`` does. Another parser, or a connection class with a
    ``read_response`` of its own (fakeredis's), goes through ``read_response``."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if (
        type(parser) is not _AsyncHiredisParser
        or type(reader) is not hiredis.Reader
        or getattr(type(conn), "read_response", None) is not _READ_RESPONSE
    ):
        replies: list[Any] = []
        for _ in range(n):
            try:
                replies.append(await conn.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return replies
    out: list[Any] = []
    gets, more = reader.gets, _NOT_ENOUGH_DATA
    push = getattr(parser, "_hiredis_PushNotificationType", None) or _NoPush
    while len(out) < n:
        reply = gets()
        if reply is more:
            if not parser._connected:  # disconnected meanwhile (as read_response checks)
                raise RedisConnectionError("connection closed while reading replies")
            await parser.read_from_socket()  # type: ignore[no-untyped-call] # EOF raises
            continue
        if isinstance(reply, RedisConnectionError):  # e.g. LOADING: as read_response does
            raise reply
        if isinstance(reply, push):
            await parser.handle_push_response(reply)  # type: ignore[no-untyped-call]
            continue
        out.append(reply)  # an error reply is its ResponseError, returned in place
    return out


class _NoPush:
    """No reply is one of these (hiredis without push messages)."""


def _where(items: Sequence[tuple[str, bytes]]) -> dict[str, list[int]]:
    """Each list key's item indexes, keys in the order of their first item (the order
    :meth:`Buffer.store` sends the lists in)."""
    where: dict[str, list[int]] = {}
    for i, (key, _) in enumerate(items):
        at = where.get(key)
        if at is None:
            where[key] = [i]
        else:
            at.append(i)
    return where


class ExpiringIdSets:
    """The lists whose user's dedupe set of the current bucket this process has written
    to (so the set expires: APPEND set its expiry on its first write), that APPEND then
    need not read the TTL of (a tenth of its Redis cost per event with an id).

    What it knows is forgotten when the bucket turns, when the connection to Redis is
    opened again (Redis may have restarted and lost the set; a call lost or timed out
    closes the lean connection), after a write refused half-way (its ids taken out
    again), past ``max_keys`` and every ``max_age_s``. A set deleted by hand while the
    API runs and written again before that is left without an expiry until its user's
    first write after (never, if there is none: delete id sets with the API stopped).
    """

    def __init__(self, max_keys: int = 100_000, max_age_s: float = 600.0) -> None:
        self.max_keys, self.max_age_s = max_keys, max_age_s
        self.keys: set[str] = set()
        self._bucket, self._connection, self._since = -1, -1, 0.0

    def current(self, bucket: int, connection: int, now: float) -> set[str]:
        """The lists known for ``bucket`` on connection number ``connection``."""
        if (
            bucket != self._bucket
            or connection != self._connection
            or now - self._since > self.max_age_s
            or len(self.keys) > self.max_keys
        ):
            self.keys = set()
            self._bucket, self._connection, self._since = bucket, connection, now
        return self.keys

    def forget(self) -> None:
        self.keys = set()


def _dedupe_args(
    grouped_ids: dict[str, list[str]],
    argv: list[Any],
    window: int,
    bucket: int,
    expiring: Container[str] = (),
) -> list[str]:
    """Append APPEND's three dedupe values to ``argv`` and return the lists whose ids
    it checks (whose user's set it writes).

    ``grouped_ids``: each list's event ids ("" for an event without one), in the lists'
    order. Only lists named by :func:`keys.event_key` are checked: their user is in the
    name, which the script reads its dedupe set's name from. ``bucket``: the current
    dedupe bucket, ``floor(now / window)``. ``expiring``: the lists whose set of this
    bucket is known to expire already (see :class:`ExpiringIdSets`).
    """
    section: list[str] = []
    add = section.append
    checked: list[str] = []
    for key, line_ids in grouped_ids.items():
        entry = (
            scripts.ids_entry(line_ids, key in expiring)
            if key.startswith(keys.EVENT_PREFIX)
            else "0"
        )
        if entry != "0":
            checked.append(key)
        add(entry)
    # the current bucket is kept until the end of the next one: every id at least
    # `window` seconds (and less than twice that)
    argv += (" ".join(section), (bucket + 2) * window, bucket)
    return checked


def _add_values(grouped: dict[str, list[bytes]], argv: list[Any]) -> int:
    """Append each list's values to APPEND's ``argv`` (see scripts.APPEND): ``n`` and
    the ``n`` values joined by newlines, or, when one of them holds a newline, ``-n``
    and the values one by one. Returns the values' bytes."""
    nbytes = 0
    for values in grouped.values():
        if any(b"\n" in v for v in values):
            argv.append(-len(values))
            argv.extend(values)
        else:
            argv += (len(values), b"\n".join(values))
        nbytes += sum(map(len, values))
    return nbytes


#: an item's value
_second = itemgetter(1)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Buffer:
    """logpipe's view of Redis.

    ``async with Buffer.connect(cfg) as buffer:`` makes the client and closes it;
    ``Buffer(client, cfg)`` uses a client the caller owns (and closes).
    """

    def __init__(self, client: aioredis.Redis, cfg: RedisSettings) -> None:
        self.client = client
        self.cfg = cfg
        self._append = client.register_script(scripts.APPEND)
        #: the lists whose dedupe set is known to expire (see ExpiringIdSets)
        self._expiring = ExpiringIdSets()
        #: logpipe's own keys found of another type and logged (see _name_wrong_type)
        self._reported: set[str] = set()
        #: the drain scripts' SHA1 digests, what EVALSHA names them by
        self._sha = _DRAIN_SHAS
        #: cluster mode's ways (redis.mode = "cluster"), see logpipe_cli.sharded
        self.sharded = Sharded(client, cfg) if is_cluster(client) else None  # type: ignore[arg-type]

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, cfg: RedisSettings) -> AsyncIterator[Buffer]:
        """A buffer on its own client (see :func:`connect`), closed on the way out."""
        client = connect(cfg)
        try:
            buffer = cls(client, cfg)
            try:
                yield buffer
            finally:
                if buffer.sharded is not None:
                    await buffer.sharded.aclose()
        finally:
            await client.aclose()

    # ---- the write path -------------------------------------------------------------

    #: the lean connection APPEND goes through (see :meth:`write_through`), else redis-py
    _lean: LeanRedis | None = None

    def write_through(self, lean: LeanRedis | None) -> None:
        """Send APPEND (the write path's one call) through ``lean`` rather than redis-py:
        a third of the client's cost per call (:mod:`logpipe_cli.resp`). The caller owns
        and closes it. Not with ``redis.min_replicas`` (its WAIT goes with redis-py)."""
        self._lean = lean

    async def append(
        self,
        items: Sequence[tuple[str, bytes]],
        flush_id: str | None = None,
        *,
        charges: Sequence[Charge] = (),
        rate: RateLimit | None = None,
    ) -> int:
        """Append ``(list key, line)`` pairs in order, atomically, in one round trip.

        Calls with the same ``flush_id`` (within 60 s) write once: send the same
        id again when a call failed without an answer, and the events are stored once
        whether or not the first call ran. Returns the number of events buffered
        afterwards (:meth:`store` does the same with event ids). Raises
        :class:`BufferFullError` (nothing stored) when ``max_buffered_events`` or
        ``max_buffered_bytes`` would be exceeded, :class:`WrongTypeError` (nothing
        stored) when a target key is not a list, :class:`RedisUnavailableError` when
        Redis cannot be reached.

        With a ``rate``, each of ``charges`` (one per request whose events are in
        ``items``) is taken from its principal's token bucket in the same script, before
        anything is written; if any cannot pay, nothing is stored and
        :class:`RateLimitedErrors` says which (the caller sends the others again).
        """
        return (await self.store(items, flush_id, charges=charges, rate=rate)).buffered

    async def store(
        self,
        items: Sequence[tuple[str, bytes]],
        flush_id: str | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        now: float | None = None,
        charges: Sequence[Charge] = (),
        rate: RateLimit | None = None,
    ) -> Stored:
        """:meth:`append` (the same ``charges`` and ``rate``, the same errors), and which
        items were duplicates.

        ``ids[i]`` is item ``i``'s event id (or ``None``). An item whose id its user
        (from the list's key) already stored within ``redis.dedupe_seconds`` -- or that
        an earlier item of the same call carries -- is not stored; its index is in the
        answer's ``duplicates``. ``now`` (Unix seconds) picks the dedupe bucket; tests
        pass it, the API uses its clock. A duplicate is neither stored nor counted
        (``buffered``, ``accepted``, ``buffered_bytes``), but it is charged to its
        request's rate limit (it was sent), and the limits are checked before the ids are
        (so they count it too).
        """
        if self.sharded is not None:
            return await self.sharded.store(items, flush_id, ids, now, charges, rate)
        # each list's values (and ids), lists in the order of their first item
        grouped: dict[str, list[bytes]] = {}
        grouped_ids: dict[str, list[str]] = {}
        if ids and self.cfg.dedupe_seconds > 0 and any(ids):
            for (key, value), eid in zip(items, ids, strict=True):
                values = grouped.get(key)
                if values is None:
                    grouped[key] = [value]
                    grouped_ids[key] = [eid or ""]
                else:
                    values.append(value)
                    grouped_ids[key].append(eid or "")
        else:
            grouped = defaultdict(list)
            for key, value in items:
                grouped[key].append(value)
        argv: list[Any] = [
            self.cfg.max_buffered_events,
            self.cfg.key_expiration_seconds,
            flush_id or uuid.uuid4().hex,
        ]
        lines = list(map(_second, items))
        if b"\n" not in b"".join(lines):
            # the usual (the API's lines are compact JSON): each list's values joined,
            # all in C calls, however many lists
            nbytes = sum(map(len, lines))
            lists = grouped.values()
            argv += chain.from_iterable(zip(map(len, lists), map(b"\n".join, lists), strict=True))
        else:
            nbytes = _add_values(grouped, argv)
        buckets: dict[str, int] = {}
        if rate is not None and rate.events_per_second > 0:
            for charge in charges:
                bucket = keys.rate_bucket(charge.principal)
                argv += (buckets.setdefault(bucket, len(buckets) + 1), charge.cost)
        # the fixed tail (see scripts.APPEND): dedupe's three values, then the limits'
        known: set[str] | None = None
        checked: list[str] = []
        if grouped_ids:
            window = self.cfg.dedupe_seconds
            id_bucket = int((time.time() if now is None else now) // window)
            known = self._known_expiring(id_bucket)
            checked = _dedupe_args(grouped_ids, argv, window, id_bucket, known or ())
        else:
            argv += ("", 0, 0)
        scope = 1 if grouped_ids else 0
        argv += (self.cfg.max_buffered_bytes, nbytes)
        if buckets:
            assert rate is not None
            argv += (repr(rate.events_per_second), rate.burst)
        else:
            argv += (0, 0)
        argv += (len(buckets), scope)
        script_keys = [keys.STATS, *grouped, *buckets, keys.FLUSHES]
        try:
            if self.cfg.min_replicas:
                reply = await self._append_replicated(script_keys, argv)
            elif self._lean is not None:
                with redis_errors("storing events"):
                    reply = await self._lean.evalsha(scripts.APPEND, script_keys, argv)
            else:
                with redis_errors("storing events"):
                    reply = await self._append(keys=script_keys, args=argv)
        except WrongTypeError as exc:
            raise await self._name_wrong_type(exc) from exc
        outcome = scripts.appended(reply)
        if known is not None:
            if outcome.outcome == "stored":
                known.update(checked)  # each of them expires now (APPEND saw to it)
            elif outcome.outcome == "wrongtype":
                self._expiring.forget()  # its ids were taken out again
        if outcome.outcome == "wrongtype":
            names = list(grouped)
            bad = [names[i] for i in outcome.wrong]
            raise WrongTypeError(
                f"Redis key {bad[0]} (or its user's logpipe:ids:* dedupe set) holds another "
                "type than expected (written by something else?); nothing stored",
                bad,
            )
        if outcome.outcome == "limited":
            assert rate is not None  # only charged calls are refused
            raise RateLimitedErrors(
                {
                    x.request: _rate_limited(charges[x.request], rate, x.retry_after_ms)
                    for x in outcome.limited
                }
            )
        if outcome.outcome == "full":
            raise BufferFullError(
                f"buffer full: Redis holds {self.cfg.max_buffered_events} events or more "
                "(redis.max_buffered_events); retry after the drainer catches up"
            )
        if outcome.outcome == "full_bytes":
            raise BufferFullError(
                f"buffer full: the events in Redis hold {self.cfg.max_buffered_bytes} bytes "
                "or more (redis.max_buffered_bytes); retry after the drainer catches up"
            )
        if not outcome.duplicates:
            return Stored(outcome.buffered)
        # the script counts positions in grouped order; the caller's are item indexes
        order = [i for at in _where(items).values() for i in at]
        return Stored(outcome.buffered, sorted(order[p] for p in outcome.duplicates))

    def _known_expiring(self, bucket: int) -> set[str] | None:
        """The lists whose id set of ``bucket`` is known to expire, for a call about to go
        out on the lean connection (:class:`ExpiringIdSets`); ``None`` for one that goes
        through redis-py (``min_replicas``, or no lean connection), whose connections'
        history is not known, and while the lean one is closed (the call opens another)."""
        lean = self._lean
        if lean is None or not lean.connected or self.cfg.min_replicas:
            return None
        # (no await between here and the call: it goes through this connection)
        return self._expiring.current(bucket, lean.connections, time.monotonic())

    async def _append_replicated(self, script_keys: list[str], argv: list[Any]) -> Any:
        """APPEND, then WAIT for ``min_replicas``, in one pipeline (one round trip).

        Between them a write to :data:`keys.REPLICATED`: WAIT waits for this
        connection's last write, and a flush sent again (its id already done, so APPEND
        writes nothing) must still wait until the first sending is on the replicas.
        """
        sha = self._append.sha
        for attempt in (1, 2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(sha, len(script_keys), *script_keys, *argv)
                self._add_wait(pipe)
                with redis_errors("storing events"):
                    replies = await pipe.execute(raise_on_error=False)
            reply = replies[0]
            if isinstance(reply, NoScriptError) and attempt == 1:
                # Redis restarted (or failed over) since the script was loaded: the
                # flush did not run; load it and send the flush again
                with redis_errors("loading the append script"):
                    await self.client.script_load(scripts.APPEND)
                continue
            for r in replies:
                if isinstance(r, Exception):
                    raise _unavailable("storing events", r)
            if scripts.appended(reply).outcome == "stored":
                await self._check_replicas(replies[-1], "stored")
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _add_wait(self, pipe: Pipeline) -> None:
        """End ``pipe`` with a write and a WAIT for ``min_replicas`` (see _append_replicated)."""
        pipe.incr(keys.REPLICATED)
        timeout_ms = max(1, round(self.cfg.replica_timeout_seconds * 1000))
        pipe.execute_command("WAIT", self.cfg.min_replicas, timeout_ms)

    async def _check_replicas(self, reply: Any, what: str) -> None:
        """Raise :class:`ReplicationError` when WAIT saw fewer than ``min_replicas``
        (after checking that the master did not move, see ``recheck_master``)."""
        got, wanted = int(reply), self.cfg.min_replicas
        if got < wanted:
            await recheck_master(self.client)
            raise ReplicationError(
                f"{what} on the Redis master but written on only {got} of {wanted} replicas "
                f"within {self.cfg.replica_timeout_seconds:g} s (redis.min_replicas)",
                got,
                wanted,
            )

    # ---- finding keys ---------------------------------------------------------------

    async def scan(self, pattern: str) -> AsyncIterator[bytes]:
        """Keys matching ``pattern``, by ``SCAN`` (never ``KEYS``); may repeat a key."""
        with redis_errors("listing keys"):
            async for key in self.client.scan_iter(match=pattern, count=1000):
                yield key

    async def scan_keys(
        self, pattern: str, kinds: Sequence[KeyKind] = ("events", "claim", "quarantine")
    ) -> AsyncIterator[FoundKey]:
        """Every buffered key of ``kinds``, parsed, each once: event lists (``pattern``),
        claims and quarantines. The one place that knows which scans find them."""
        patterns = {
            "events": pattern,
            "claim": keys.CLAIM_PREFIX + "*",
            "quarantine": keys.QUARANTINE_PREFIX + "*",
        }
        seen: set[bytes] = set()
        for kind in kinds:
            async for raw in self.scan(patterns[kind]):
                found = keys.classify(raw)
                # SCAN may repeat a key, and a pattern of "*" also matches claims
                if found.kind == kind and raw not in seen:
                    seen.add(raw)
                    yield found

    async def find_drainable(self, pattern: str) -> tuple[list[EventKey], list[str]]:
        """Event keys to drain (including stranded claims), and keys that are unsafe.

        An unsafe key matches ``pattern`` but is not a canonical ``logs:user_<id>:<day>``
        key, so it cannot be mapped to a file inside ``logs_dir``; it is left alone.
        """
        if self.sharded is not None:  # every master (enough replicas, with min_replicas)
            return await self.sharded.find_drainable(pattern)
        found: set[EventKey] = set()
        unsafe: set[str] = set()
        async for key in self.scan_keys(pattern, ("events", "claim")):
            if key.event_key is None:
                unsafe.add(key.name)
            else:
                found.add(key.event_key)
        # sorted by a tuple key: EventKey's own __lt__ (a dataclass's) costs ~1 s for
        # 100,000 keys
        return sorted(found, key=lambda ek: (ek.user_id, ek.day)), sorted(unsafe)

    # ---- the drain protocol (see drainer.py for the order of calls) ------------------
    #
    # The drain scripts are sent as EVALSHA commands built here, not through redis-py's
    # Script objects: a Script call checks and loads its script and goes through four
    # layers per key, which cost more than the script itself when a pass drains 100,000
    # keys of 10 events (bench/results, drain profiles). A NOSCRIPT reply (Redis
    # restarted, or SCRIPT FLUSH) means that command did not run: the scripts are loaded
    # and exactly those commands are sent again (see :meth:`_run_drain`).

    async def claim(self, eks: Sequence[EventKey], owner: str, lease_ms: int) -> list[Claim]:
        """Take each key for draining: rename it to its claim, or resume a stale claim.

        Nothing is begun here (see scripts.CLAIM): :meth:`begin` records where the
        append starts, once the claim is known to be the caller's.
        """
        sha = self._sha[scripts.CLAIM]
        lease = str(lease_ms)
        cmds = [
            ("EVALSHA", sha, 6, ek.key, ek.claim, ek.lease, ek.offset, ek.quarantine, ek.holder,
             owner, lease)
            for ek in eks
        ]  # fmt: skip
        replies = await self._run_drain("claiming keys", cmds)
        out: list[Claim] = []
        for ek, reply in zip(eks, replies, strict=True):
            r = scripts.claimed(reply)
            out.append(Claim(ek, r.status, r.detail))
        return out

    async def prepare(self, eks: Sequence[EventKey], owner: str, lease_ms: int) -> list[Prepared]:
        """Re-check the lease (after locking the file) and read each pending offset.

        Per key: the lease lost, nothing pending, or the pending offset and the holder
        record as stored (the drainer decides whether to trust them).
        """
        sha = self._sha[scripts.PREPARE]
        cmds = [("EVALSHA", sha, 3, ek.lease, ek.offset, ek.holder, owner, lease_ms) for ek in eks]
        return [scripts.prepared(r) for r in await self._run_drain("checking leases", cmds)]

    async def begin(
        self, batch: Sequence[BeginItem], owner: str, lease_ms: int, count: int
    ) -> list[Began]:
        """Record each file's size before the append and fetch the next events.

        Per key: the events (oldest first, at most ``count``), or the lease lost.
        """
        sha = self._sha[scripts.BEGIN]
        lease, last = str(lease_ms), count - 1
        cmds: list[tuple[Any, ...]] = []
        for item in batch:
            ek = item.key
            claim = ek.claim
            cmds.append(
                ("EVALSHA", sha, 4, claim, ek.lease, ek.offset, ek.holder, owner, lease, item.size)
            )
            cmds.append(("LRANGE", claim, 0, last))
        # the claim and the offset must be on the replicas before the batch is written
        # to its file: a master that then died would otherwise hand a new drainer a
        # claim without the offset to cut the file back to, and the batch is written twice
        replies = await self._run_drain_replicated("reading events", "claims recorded", cmds)
        return [
            scripts.began(ok, values)
            for ok, values in zip(replies[0::2], replies[1::2], strict=True)
        ]

    async def ack(self, batch: Sequence[AckItem], owner: str, lease_ms: int) -> list[Acked]:
        """Drop events now safely on disk; move refused values to the quarantine.

        Per key: events left in the claim, or the lease lost (nothing done).
        """
        sha = self._sha[scripts.ACK]
        lease = str(lease_ms)
        cmds: list[tuple[Any, ...]] = []
        for item in batch:
            ek = item.key
            cmds.append(
                (
                    "EVALSHA", sha, 6,
                    ek.claim, ek.lease, ek.offset, keys.STATS, ek.quarantine, ek.holder,
                    owner, lease, item.acknowledged, item.written, item.nbytes, item.size,
                    *item.quarantined,
                )
            )  # fmt: skip
        return [
            scripts.acked(r)
            for r in await self._run_drain_replicated("acknowledging events", "acks done", cmds)
        ]

    async def renew(self, eks: Iterable[EventKey], owner: str, lease_ms: int) -> list[bool]:
        """Extend our leases; ``False`` for each one that is no longer ours."""
        sha = self._sha[scripts.RENEW]
        cmds = [("EVALSHA", sha, 1, ek.lease, owner, lease_ms) for ek in eks]
        if not cmds:
            return []
        replies = await self._run_drain("renewing leases", cmds)
        return [scripts.renewed(r) == "held" for r in replies]

    async def release(self, eks: Iterable[EventKey], owner: str) -> None:
        """Give leases up early (after an error) so another drainer can take over now."""
        sha = self._sha[scripts.RELEASE]
        cmds = [("EVALSHA", sha, 1, ek.lease, owner) for ek in eks]
        if cmds:
            for reply in await self._run_drain("releasing leases", cmds):
                scripts.released(reply)  # "not ours": it ran out; nothing to give back

    async def record_drain(self, report: dict[str, Any]) -> None:
        """Keep the last drain's outcome where `/stats` and operators can read it."""
        with redis_errors("recording the drain"):
            await self.client.hset(keys.LAST_DRAIN, mapping={k: str(v) for k, v in report.items()})

    async def _run_drain(self, action: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``cmds`` (drain scripts as EVALSHA, and plain reads) in one pipeline.

        A command answered NOSCRIPT did not run (Redis restarted or its script cache was
        flushed): the scripts are loaded and exactly the commands that met NOSCRIPT are
        sent again, once, each with the plain reads that followed it; scripts that ran
        are not repeated (an ACK run twice would trim twice). Any other error reply is
        an outage for the whole call.
        """
        replies = await self._pipeline(action, cmds)
        missing: list[int] = []
        for i, r in enumerate(replies):
            if isinstance(r, NoScriptError):
                missing.append(i)
            elif missing and missing[-1] == i - 1 and cmds[i][0] != "EVALSHA":
                # a plain read right after a script that did not run read what it would
                # have left (BEGIN's LRANGE): sent again with it (reads are idempotent)
                missing.append(i)
        if missing:
            with redis_errors(action):
                for text in _DRAIN_SCRIPTS:
                    await self.client.script_load(text)
            again = await self._pipeline(action, [cmds[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        for r in replies:
            if isinstance(r, ResponseError):
                raise await self._name_wrong_type(_unavailable(action, r))
        return replies

    async def _run_drain_replicated(
        self, action: str, what: str, cmds: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """:meth:`_run_drain`, then, with ``min_replicas`` set, a write and a WAIT in a
        round trip of their own: WAIT covers everything replicated before that write,
        whichever pooled connection sent it, including commands resent after NOSCRIPT.
        Raises :class:`ReplicationError` when it fell short."""
        if self.sharded is not None:  # WAIT on the masters written to
            return await self.sharded.run_drain_replicated(action, what, cmds)
        replies = await self._run_drain(action, cmds)
        if self.cfg.min_replicas:
            timeout_ms = max(1, round(self.cfg.replica_timeout_seconds * 1000))
            waited = await self._run_drain(
                action,
                [("INCR", keys.REPLICATED), ("WAIT", self.cfg.min_replicas, timeout_ms)],
            )
            await self._check_replicas(waited[-1], what)
        return replies

    async def _pipeline(self, action: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One pipeline of ``cmds``, one round trip; error replies are returned in place.

        Packed here and sent on a pooled connection rather than through redis-py's
        Pipeline, whose per-argument encoding and per-reply timeout took more than half
        of the drainer's main thread on a pass of many small keys (py-spy,
        bench/results). Every reply is read before returning, so the connection goes
        back to the pool in step; a connection error or a timeout disconnects it.
        """
        if self.sharded is not None:
            return await self.sharded.drain_pipeline(action, cmds)
        pool = self.client.connection_pool
        with redis_errors(action):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.send_packed_command(_pack(cmds), check_health=False)
                async with asyncio.timeout(self.cfg.timeout_seconds):
                    replies = await _read_replies(conn, len(cmds))
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be left unread
                raise
            finally:
                await pool.release(conn)
        return replies

    # ---- reading state --------------------------------------------------------------

    async def ping(self) -> float:
        """Round-trip time in seconds; raises :class:`RedisUnavailableError`."""
        start = time.perf_counter()
        with redis_errors("pinging"):
            await self.client.ping()
        return time.perf_counter() - start

    async def info(self) -> dict[str, Any]:
        with redis_errors("reading INFO"):
            return dict(await self.client.info())

    async def stats(self) -> dict[str, int]:
        """The counters kept in Redis (buffered, accepted, drained_events, ...)."""
        return (await self.counters())[0]

    async def counters(self) -> tuple[dict[str, int], dict[str, str]]:
        """The counters and the last drain's outcome, in one round trip."""
        if self.sharded is not None:
            return await self.sharded.counters()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.STATS)
            pipe.hgetall(keys.LAST_DRAIN)
            try:
                with redis_errors("reading counters"):
                    stats, last = await pipe.execute()
            except WrongTypeError as exc:
                raise await self._name_wrong_type(exc) from exc
        # anyone with Redis access can write these hashes: a counter that is no integer
        # is not one logpipe wrote, and is left out rather than failing every reader
        counters = {_str(k): n for k, v in stats.items() if (n := _int_or_none(v)) is not None}
        return counters, {_str(k): _str(v) for k, v in last.items()}

    async def _name_wrong_type(self, exc: LogpipeError) -> LogpipeError:
        """``exc`` (Redis said WRONGTYPE, naming no key) made precise: which of
        logpipe's own keys holds another type and what to do, logged once. Any other
        error, or when none of those keys is at fault, is ``exc`` itself."""
        if not isinstance(exc, WrongTypeError) or exc.keys:
            return exc
        try:
            found = await ownkeys.misplaced(self.client)
        except (RedisError, OSError):
            return exc
        if not found:
            return exc
        for f in found:
            ownkeys.report_once(f, self._reported)
        return WrongTypeError("; ".join(f.describe() for f in found), [f.key for f in found])

    async def list_keys(self, pattern: str) -> list[KeyInfo]:
        """Buffered keys with their sizes: event lists, claims and quarantines."""
        found = sorted([k async for k in self.scan_keys(pattern)], key=lambda k: k.raw)
        async with self.client.pipeline(transaction=False) as pipe:
            for k in found:
                pipe.type(k.raw)
                pipe.memory_usage(k.raw)
                pipe.ttl(k.raw)
                pipe.llen(k.raw)  # an error reply for a key of another type: counted as 0
            with redis_errors("reading keys"):
                replies = await pipe.execute(raise_on_error=False)
        types = replies[0::4]
        infos: list[KeyInfo] = []
        for i, k in enumerate(found):
            kind = k.kind if _str(types[i]) == "list" else f"wrong type ({_str(types[i])})"
            mem, ttl, length = replies[4 * i + 1 : 4 * i + 4]
            infos.append(
                KeyInfo(
                    key=k.name,
                    event_key=k.event_key,
                    kind=kind,
                    events=length if isinstance(length, int) else 0,
                    bytes=mem if isinstance(mem, int) else 0,
                    ttl_s=int(ttl),
                )
            )
        return infos
