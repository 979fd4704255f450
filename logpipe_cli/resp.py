"""A lean Redis connection for the write path's one hot call (``EVALSHA`` of APPEND).

redis-py spends more per command than the command costs Redis: it packs every argument
through its encoder, takes a connection from the pool, wraps the call in its retry
object and parses the reply through layers of classes (issue 12's profile: about a
fifth of a ``POST /logs`` of 100 events went to ``pack_command`` and the encoder). This
module does only what the write path needs: one connection (calls are pipelined on it,
answered in order), commands packed by :func:`pack` into one buffer, replies parsed by
hiredis (a C parser), a deadline per call, and a fresh connection after any failure.

Its errors are redis-py's exception classes (``ConnectionError``, ``TimeoutError``,
``ResponseError``), so callers map them as they map redis-py's
(:func:`logpipe_cli.buffer.redis_errors`). Standalone Redis over TCP or a Unix socket
only (:meth:`LeanRedis.from_url` says ``None`` otherwise: TLS, Sentinel and Cluster go
through redis-py).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any, cast

import hiredis
from hiredis import pack_command as _pack_command
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: what hiredis's ``gets()`` answers while a reply is incomplete
_MORE = object()
#: the URL parts a lean connection knows how to use (others: redis-py's path)
_KNOWN = frozenset({"host", "port", "path", "username", "password", "db", "connection_class"})


def pack(*args: bytes | str | int) -> bytes:
    """One command in the Redis protocol (a RESP array of bulk strings). Arguments are
    ``bytes``, ``str`` (UTF-8) or ``int``.

    hiredis's packer (C): for APPEND's ~20 arguments of a single event it takes a fifth
    of the time of the two list comprehensions it replaced, and two thirds for a flush
    of a thousand lists (``bench.ingest_cpu``).
    """
    # (hiredis's stub types the argument as a 1-tuple and the result as Any)
    return cast(bytes, _pack_command(cast(Any, args)))


class _Replies(asyncio.Protocol):
    """The socket's side: replies parsed as they arrive, handed to the waiting calls in
    order; a lost connection fails every call still waiting."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.reader = hiredis.Reader(replyError=ResponseError, notEnoughData=_MORE)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but act as one)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"protocol error from {self.where}: {exc}"))
                return
            if reply is _MORE:
                return
            if not waiting:  # a reply nobody asked for: the stream cannot be trusted
                self.fail(RedisConnectionError(f"unexpected reply from {self.where}"))
                return
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection to {self.where} lost" + (f": {exc}" if exc else "")
        self.fail(RedisConnectionError(reason))

    def fail(self, exc: Exception) -> None:
        """Close the connection; every waiting call gets ``exc``."""
        if self.lost is None:
            self.lost = exc
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)


class LeanRedis:
    """One pipelined connection to a standalone Redis, opened on first use and opened
    again after a failure (never a command sent twice by itself: a call that failed
    may or may not have run, the caller decides).

    ``timeout_s`` bounds connecting and each call's wait for its reply; a call that
    times out closes the connection (a late reply would answer the next call).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout_s: float = 5.0,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._username, self._password, self._db = username, password, db
        self.timeout_s = timeout_s
        self.where = path if path is not None else f"{host}:{port}"
        self._conn: _Replies | None = None
        self._connecting: asyncio.Lock | None = None
        #: connections opened so far: a caller that keeps what it learned of Redis's
        #: state (Buffer's expiring id sets) forgets it when this moves (Redis may have
        #: restarted, empty, in between)
        self.connections = 0

    @classmethod
    def from_url(cls, url: str, timeout_s: float) -> LeanRedis | None:
        """A lean connection for ``redis://`` and ``unix://`` URLs; ``None`` for what it
        does not handle (TLS, options in the URL), which then goes through redis-py."""
        try:
            parts = parse_url(url)
        except ValueError:
            return None
        if not set(parts) <= _KNOWN or parts.get("connection_class") is SSLConnection:
            return None
        return cls(
            host=parts.get("host", "127.0.0.1"),
            port=int(parts.get("port", 6379)),
            path=parts.get("path"),
            username=parts.get("username"),
            password=parts.get("password"),
            db=int(parts.get("db", 0) or 0),
            timeout_s=timeout_s,
        )

    @property
    def connected(self) -> bool:
        """Whether a connection is open (the next call goes through it, connection
        number :attr:`connections`, unless it is lost before the call is sent)."""
        return self._conn is not None and self._conn.lost is None

    async def _open(self) -> _Replies:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent callers share one attempt
            conn = self._conn
            if conn is not None and conn.lost is None:
                return conn
            self._conn = None
            conn = await self._connect()
            self._conn = conn
            self.connections += 1
            return conn

    async def _connect(self) -> _Replies:
        loop = asyncio.get_running_loop()
        proto = _Replies(self.where)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._path is not None:
                    transport, _ = await loop.create_unix_connection(lambda: proto, self._path)
                else:
                    transport, _ = await loop.create_connection(
                        lambda: proto, self._host, self._port
                    )
        except TimeoutError:
            raise RedisTimeoutError(f"timeout connecting to {self.where}") from None
        except OSError as exc:
            raise RedisConnectionError(f"error connecting to {self.where}: {exc}") from None
        # uvloop may call connection_made only after create_connection returned
        proto.transport = transport
        hello: list[bytes] = []
        if self._password is not None:
            auth = (self._username, self._password) if self._username else (self._password,)
            hello.append(pack(b"AUTH", *auth))
        if self._db:
            hello.append(pack(b"SELECT", self._db))
        if hello:
            try:
                replies = await self._send(proto, b"".join(hello), len(hello))
            except BaseException:
                # cancelled (or timed out) half-open: nobody else will close it, and
                # Redis would keep counting it against maxclients
                proto.fail(RedisConnectionError(f"connection to {self.where} abandoned"))
                raise
            for reply in replies:
                if isinstance(reply, ResponseError):
                    proto.fail(RedisConnectionError(f"{self.where}: {reply}"))
                    # redis-py's words for a refused AUTH, without the password
                    raise RedisConnectionError(f"{self.where} refused the connection: {reply}")
        return proto

    async def _send(self, conn: _Replies, packed: bytes, n: int = 1) -> list[Any]:
        """Write ``packed`` (``n`` commands) and wait for their ``n`` replies."""
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in range(n)]
        conn.waiting.extend(futs)
        assert conn.transport is not None
        conn.transport.write(packed)
        timer = loop.call_later(self.timeout_s, self._expire, conn, futs[-1])
        try:
            return [await fut for fut in futs]
        finally:
            timer.cancel()

    async def _send_one(self, conn: _Replies, packed: bytes) -> Any:
        """:meth:`_send` for one command: its reply (the write path's every call, so
        without the list of futures and the comprehension's own coroutine)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        conn.waiting.append(fut)
        assert conn.transport is not None
        conn.transport.write(packed)
        timer = loop.call_later(self.timeout_s, self._expire, conn, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, conn: _Replies, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            conn.fail(RedisTimeoutError(f"timeout reading from {self.where}"))

    async def call(self, packed: bytes) -> Any:
        """Send one packed command; its reply (an error reply raised)."""
        conn = await self._open()
        reply = await self._send_one(conn, packed)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` by its digest; loaded first if Redis does not know it
        (``NOSCRIPT``: the call did not run, so sending it again is safe)."""
        sha = script_sha(script)
        packed = pack(b"EVALSHA", sha, len(keys), *keys, *args)
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._open()
        reply = await self._send_one(conn, packed)
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            await self.call(pack(b"SCRIPT", b"LOAD", script))
            conn = await self._open()
            reply = await self._send_one(conn, packed)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()


_SHAS: dict[str, str] = {}


def script_sha(script: str) -> str:
    """A script's SHA1 digest (what ``EVALSHA`` names it by), computed once."""
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
    return sha
