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
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from logpipe_cli import keys, scripts
from logpipe_cli.errors import BufferFullError, RedisUnavailableError, WrongTypeError
from logpipe_cli.keys import EventKey, FoundKey, KeyKind
from logpipe_cli.scripts import Acked, Began, ClaimStatus, Prepared
from logpipe_cli.settings import RedisSettings


def connect(cfg: RedisSettings) -> aioredis.Redis:
    """A client for ``cfg.url`` that returns bytes and never retries by itself.

    Retrying a write whose answer was lost could store an event twice; the caller (or
    the HTTP client, on a 503) decides whether to try again.
    """
    return aioredis.Redis.from_url(
        cfg.url,
        decode_responses=False,
        socket_timeout=cfg.timeout_seconds,
        socket_connect_timeout=cfg.timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@contextlib.contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn redis-py's exceptions into :class:`RedisUnavailableError`."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise RedisUnavailableError(f"redis unavailable while {action}: {exc}") from exc


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
    Arguments are ``bytes``, ``str`` (UTF-8) or ``int``."""
    out: list[bytes] = []
    add = out.append
    for cmd in cmds:
        add(b"*%d\r\n" % len(cmd))
        for arg in cmd:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = b"%d" % arg
            add(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


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
        #: the drain scripts' SHA1 digests, what EVALSHA names them by
        self._sha = _DRAIN_SHAS

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, cfg: RedisSettings) -> AsyncIterator[Buffer]:
        """A buffer on its own client (see :func:`connect`), closed on the way out."""
        client = connect(cfg)
        try:
            yield cls(client, cfg)
        finally:
            await client.aclose()

    # ---- the write path -------------------------------------------------------------

    async def append(self, items: Sequence[tuple[str, bytes]], flush_id: str | None = None) -> int:
        """Append ``(list key, line)`` pairs in order, atomically, in one round trip.

        Calls with the same ``flush_id`` (within 60 s) write once: send the same
        id again when a call failed without an answer, and the events are stored once
        whether or not the first call ran. Returns the number of events buffered
        afterwards. Raises
        :class:`BufferFullError` (nothing stored) when ``max_buffered_events`` would be
        exceeded, :class:`WrongTypeError` (nothing stored) when a target key is not a
        list, :class:`RedisUnavailableError` when Redis cannot be reached.
        """
        grouped: dict[str, list[bytes]] = {}
        for key, value in items:
            values = grouped.get(key)
            if values is None:
                grouped[key] = [value]
            else:
                values.append(value)
        argv: list[Any] = [
            self.cfg.max_buffered_events,
            self.cfg.key_expiration_seconds,
            flush_id or uuid.uuid4().hex,
        ]
        for values in grouped.values():
            # one argument per list (see scripts.APPEND), unless a value holds a newline
            joined = b"\n".join(values)
            if joined.count(b"\n") == len(values) - 1:
                argv += (len(values), joined)
            else:
                argv.append(-len(values))
                argv.extend(values)
        with redis_errors("storing events"):
            reply = await self._append(
                keys=[keys.STATS, *grouped, keys.FLUSHES],
                args=argv,
            )
        outcome = scripts.appended(reply)
        if outcome.outcome == "wrongtype":
            names = list(grouped)
            bad = [names[i] for i in outcome.wrong]
            raise WrongTypeError(
                f"Redis key {bad[0]} holds another type than a list (written by something "
                "else?); nothing stored",
                bad,
            )
        if outcome.outcome == "full":
            raise BufferFullError(
                f"buffer full: Redis holds {self.cfg.max_buffered_events} events or more "
                "(redis.max_buffered_events); retry after the drainer catches up"
            )
        return outcome.buffered

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
        found: set[EventKey] = set()
        unsafe: set[str] = set()
        async for key in self.scan_keys(pattern, ("events", "claim")):
            if key.event_key is None:
                unsafe.add(key.name)
            else:
                found.add(key.event_key)
        return sorted(found), sorted(unsafe)

    # ---- the drain protocol (see drainer.py for the order of calls) ------------------
    #
    # The drain scripts are sent as EVALSHA commands built here, not through redis-py's
    # Script objects: a Script call checks and loads its script and goes through four
    # layers per key, which cost more than the script itself when a pass drains 100,000
    # keys of 10 events (bench/results, drain profiles). A NOSCRIPT reply (Redis
    # restarted, or SCRIPT FLUSH) means that command did not run: the scripts are loaded
    # and exactly those commands are sent again (see :meth:`_run_drain`).

    async def claim(self, eks: Sequence[EventKey], owner: str, lease_ms: int) -> list[Claim]:
        """Take each key for draining: rename it to its claim, or resume a stale claim."""
        sha = self._sha[scripts.CLAIM]
        lease = str(lease_ms)
        cmds = [
            ("EVALSHA", sha, 6, ek.key, ek.claim, ek.lease, ek.offset, ek.quarantine, ek.holder,
             owner, lease)
            for ek in eks
        ]  # fmt: skip
        replies = await self._run_drain("claiming keys", cmds)
        decoded = map(scripts.claimed, replies)
        return [Claim(ek, r.status, r.detail) for ek, r in zip(eks, decoded, strict=True)]

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
        replies = await self._run_drain("reading events", cmds)
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
        return [scripts.acked(r) for r in await self._run_drain("acknowledging events", cmds)]

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
        sent again, once; those that ran are not repeated (an ACK run twice would trim
        twice). Any other error reply is an outage for the whole call.
        """
        replies = await self._pipeline(action, cmds)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            with redis_errors(action):
                for text in _DRAIN_SCRIPTS:
                    await self.client.script_load(text)
            again = await self._pipeline(action, [cmds[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        for r in replies:
            if isinstance(r, ResponseError):
                raise RedisUnavailableError(f"redis unavailable while {action}: {r}")
        return replies

    async def _pipeline(self, action: str, cmds: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One pipeline of ``cmds``, one round trip; error replies are returned in place.

        Packed here and sent on a pooled connection rather than through redis-py's
        Pipeline, whose per-argument encoding and per-reply timeout took more than half
        of the drainer's main thread on a pass of many small keys (py-spy,
        bench/results). Every reply is read before returning, so the connection goes
        back to the pool in step; a connection error or a timeout disconnects it.
        """
        pool = self.client.connection_pool
        with redis_errors(action):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.send_packed_command(_pack(cmds), check_health=False)
                replies: list[Any] = []
                async with asyncio.timeout(self.cfg.timeout_seconds):
                    for _ in cmds:
                        try:
                            replies.append(await conn.read_response(timeout=math.inf))
                        except ResponseError as exc:
                            replies.append(exc)
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
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.STATS)
            pipe.hgetall(keys.LAST_DRAIN)
            with redis_errors("reading counters"):
                stats, last = await pipe.execute()
        return (
            {_str(k): int(v) for k, v in stats.items()},
            {_str(k): _str(v) for k, v in last.items()},
        )

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
