"""Attacks on the lean write connection (logpipe_cli/resp.py) where a reply goes missing,
comes late, or is one Redis gives only in trouble: a cancelled caller must not shift the
next callers' replies; a write whose answer was lost is sent again by the committer under
the same flush id and stored once; -LOADING / -BUSY / -READONLY and a full Redis
(maxclients) are "unavailable" (503, sent again), never a hang; a killed connection is
replaced; ACL users, unix sockets and db numbers reach the right place.

A fake RESP server (``FakeRedis``) gives the precise misbehaviour; the rest runs on real
redis-server processes on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from logpipe_cli import scripts
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import RedisUnavailableError
from logpipe_cli.keys import EventKey
from logpipe_cli.resp import LeanRedis, pack
from logpipe_cli.settings import RedisSettings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio
KEY = EventKey("u1", 19675).key


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """On asyncio and on uvloop (what ``serve`` runs on: its transports call back in
    another order)."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


class FakeRedis:
    """A RESP server whose replies the test gives: each command received is put on
    ``commands`` as a list of bytes; ``answer(raw)`` sends raw bytes on the newest
    connection."""

    def __init__(self) -> None:
        self.commands: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        #: connections the client closed
        self.closed: asyncio.Queue[int] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.writers:
            w.close()
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (cmd := parser.gets()) is not False:
                await self.commands.put(cmd)
        await self.closed.put(len(self.writers))

    def answer(self, raw: bytes) -> None:
        self.writers[-1].write(raw)


async def test_a_cancelled_caller_does_not_shift_the_next_replies() -> None:
    async with FakeRedis() as fake:
        lean = LeanRedis(port=fake.port, timeout_s=10)
        try:
            calls = [asyncio.create_task(lean.call(pack(b"GET", f"k{i}"))) for i in range(3)]
            for _ in range(3):
                await fake.commands.get()  # all three sent, none answered
            calls[1].cancel()
            with pytest.raises(asyncio.CancelledError):
                await calls[1]
            fake.answer(b"$2\r\nv0\r\n$2\r\nv1\r\n$2\r\nv2\r\n")
            assert await calls[0] == b"v0"
            assert await calls[2] == b"v2"  # its own reply, not the cancelled one's
            later = asyncio.create_task(lean.call(pack(b"GET", b"k3")))
            await fake.commands.get()
            fake.answer(b"$2\r\nv3\r\n")
            assert await later == b"v3"
        finally:
            await lean.aclose()


async def test_a_caller_cancelled_while_connecting_leaves_no_connection_open() -> None:
    """Cancelled while AUTH is unanswered: the half-opened connection is closed, not
    left holding one of Redis' clients forever."""
    async with FakeRedis() as fake:
        lean = LeanRedis(port=fake.port, password="pw", timeout_s=10)
        try:
            call = asyncio.create_task(lean.call(pack(b"PING")))
            assert await fake.commands.get() == [b"AUTH", b"pw"]
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            async with asyncio.timeout(10):
                assert await fake.closed.get() == 1
        finally:
            await lean.aclose()


async def test_a_reply_nobody_asked_for_closes_the_connection() -> None:
    """An extra reply (a confused proxy, a stream out of step) would answer the next
    call with another's reply: the connection is dropped instead, and the next call gets
    a fresh one."""
    async with FakeRedis() as fake:
        lean = LeanRedis(port=fake.port, timeout_s=10)
        try:
            first = asyncio.create_task(lean.call(pack(b"GET", b"a")))
            await fake.commands.get()
            fake.answer(b"$1\r\na\r\n$5\r\nextra\r\n")
            assert await first == b"a"
            async with asyncio.timeout(10):
                assert await fake.closed.get() == 1
            nxt = asyncio.create_task(lean.call(pack(b"GET", b"b")))
            await fake.commands.get()
            assert len(fake.writers) == 2
            fake.answer(b"$1\r\nb\r\n")
            assert await nxt == b"b"
        finally:
            await lean.aclose()


async def test_a_late_reply_never_answers_the_next_call() -> None:
    """A call that timed out closed its connection: its reply, when it comes, is read
    by nobody, and the next call (on a new connection) gets its own."""
    async with FakeRedis() as fake:
        lean = LeanRedis(port=fake.port, timeout_s=0.2)
        try:
            with pytest.raises(redis.TimeoutError):
                await lean.call(pack(b"GET", b"slow"))
            assert await fake.commands.get() == [b"GET", b"slow"]
            fake.answer(b"$4\r\nlate\r\n")  # on the old connection: nobody listens
            nxt = asyncio.create_task(lean.call(pack(b"GET", b"next")))
            assert await fake.commands.get() == [b"GET", b"next"]
            assert len(fake.writers) == 2  # a fresh connection
            fake.answer(b"$4\r\nmine\r\n")
            assert await nxt == b"mine"
        finally:
            await lean.aclose()


@pytest.mark.parametrize(
    "refusal",
    [
        b"-LOADING Redis is loading the dataset in memory\r\n",
        b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or "
        b"SHUTDOWN NOSAVE.\r\n",
        b"-READONLY You can't write against a read only replica.\r\n",
        b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
        b"-ERR max number of clients reached\r\n",
    ],
)
async def test_refusals_are_sent_again_under_the_same_flush_id(refusal: bytes) -> None:
    """Redis refusing the write (it did not run) is "unavailable": the committer sends
    the same flush again, and the request succeeds once Redis takes it."""
    async with FakeRedis() as fake:
        settings = RedisSettings(url=f"redis://127.0.0.1:{fake.port}")
        client = connect(settings)
        lean = LeanRedis(port=fake.port, timeout_s=10)
        buffer = Buffer(client, settings)
        buffer.write_through(lean)
        committer = GroupCommitter(buffer, retry_s=30)
        try:
            request = asyncio.create_task(committer.append([(KEY, b"{}")]))
            first = await fake.commands.get()
            assert first[0] == b"EVALSHA"
            fake.answer(refusal)
            second = await fake.commands.get()
            assert second == first  # the same flush, the same id (ARGV[3])
            fake.answer(b":1\r\n")
            assert await request == []
        finally:
            await lean.aclose()
            await client.aclose()


async def test_the_flush_sent_again_after_a_lost_answer_is_stored_once(tmp_path: Path) -> None:
    """The write reached Redis but its answer did not come in time (Redis busy): the
    committer sends it again; when Redis gets to them, both copies run, and the flush id
    lets only one write. The request gets its 200."""
    server = RedisServer(tmp_path / "r", extra_args=("--enable-debug-command", "yes"))
    server.start()
    raw = server.client()
    try:
        settings = RedisSettings(url=server.url, timeout_seconds=0.3)
        client = connect(settings)
        lean = LeanRedis.from_url(server.url, 0.3)
        assert lean is not None
        buffer = Buffer(client, settings)
        buffer.write_through(lean)
        committer = GroupCommitter(buffer, retry_s=30)
        raw.script_load(scripts.APPEND)
        try:
            sleeper = threading.Thread(
                target=lambda: server.client().execute_command("DEBUG", "SLEEP", "2")
            )
            sleeper.start()
            await asyncio.to_thread(_wait_blocked, server)
            assert await committer.append([(KEY, b'{"n":1}')]) == []
            await asyncio.to_thread(sleeper.join)
            # every copy sent while Redis slept has run by now (a PING after them)
            assert raw.ping()
            assert raw.lrange(KEY, 0, -1) == [b'{"n":1}']
            assert int(raw.hget("logpipe:stats", "buffered") or 0) == 1
        finally:
            await lean.aclose()
            await client.aclose()
    finally:
        raw.close()
        server.kill()


def _wait_blocked(server: RedisServer) -> None:
    """Until Redis stops answering (DEBUG SLEEP has started): a PING with no PONG
    within a tenth of a second."""
    while True:
        with socket.create_connection(("127.0.0.1", server.port)) as probe:
            probe.settimeout(0.1)
            probe.sendall(pack(b"PING"))
            try:
                probe.recv(16)
            except TimeoutError:
                return


async def test_a_killed_connection_is_replaced(redis_url: str) -> None:
    """CLIENT KILL of the idle connection (as Redis' ``timeout`` does): the next flush
    may meet the dead connection (it did not run there) and goes again on a new one."""
    settings = RedisSettings(url=redis_url)
    lean = LeanRedis.from_url(redis_url, 5.0)
    assert lean is not None
    buffer = Buffer(connect(settings), settings)
    buffer.write_through(lean)
    committer = GroupCommitter(buffer, retry_s=10)
    raw = redis.Redis.from_url(redis_url)
    try:
        assert await lean.call(pack(b"CLIENT", b"SETNAME", b"lean")) == b"OK"
        assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
        assert await committer.append([(KEY, b'{"n":1}')]) == []
        assert await lean.call(pack(b"CLIENT", b"GETNAME")) is None  # a new connection
        assert raw.lrange(KEY, 0, -1) == [b'{"n":1}']
    finally:
        raw.close()
        await lean.aclose()
        await buffer.client.aclose()


async def test_two_flushes_in_flight_on_a_killed_connection_are_each_stored_once(
    tmp_path: Path,
) -> None:
    """Two flushes pipelined on the lean connection while Redis is busy (``DEBUG
    SLEEP``), and the connection killed behind them: whichever Redis did first (ran
    them and lost the replies, or dropped them unrun), each is sent again under its own
    id, every request is answered, and every event is stored once."""
    server = RedisServer(tmp_path / "r", extra_args=("--enable-debug-command", "yes"))
    server.start()
    settings = RedisSettings(url=server.url)
    lean = LeanRedis.from_url(server.url, 10.0)
    assert lean is not None
    buffer = Buffer(connect(settings), settings)
    buffer.write_through(lean)
    committer = GroupCommitter(buffer, retry_s=10)
    sleeper, killer = server.client(), server.client()

    def batch(tag: int) -> list[tuple[str, bytes]]:
        return [(KEY, b'{"b":%d,"i":%d}' % (tag, i)) for i in range(100)]

    def sleep_redis() -> None:
        with contextlib.suppress(redis.ConnectionError):  # killed too (TYPE normal)
            sleeper.execute_command("DEBUG", "SLEEP", "0.5")

    try:
        await committer.append([(KEY, b'{"warm":1}')])  # connected, script loaded
        # connected before Redis sleeps: a connection made while it sleeps has its
        # handshake answered first, and the kill would come after the flushes' replies
        assert sleeper.ping()
        assert killer.ping()
        asleep = asyncio.create_task(asyncio.to_thread(sleep_redis))
        await asyncio.sleep(0.1)  # DEBUG SLEEP sent first (else no overlap: see below)
        first = asyncio.create_task(committer.append(batch(1)))
        await asyncio.sleep(0)
        second = asyncio.create_task(committer.append(batch(2)))
        for _ in range(100):
            if len(committer._flushers) == 2:
                break
            await asyncio.sleep(0.001)
        assert len(committer._flushers) == 2  # both flushes out, neither answered
        await asyncio.to_thread(
            killer.execute_command, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
        )
        assert await asyncio.wait_for(first, 15) == []
        assert await asyncio.wait_for(second, 15) == []
        assert lean.connections == 2  # the killed one, and the one they went again on
        await asleep
        stored = killer.lrange(KEY, 0, -1)
        assert sorted(stored) == sorted([b'{"warm":1}', *(v for t in (1, 2) for _, v in batch(t))])
    finally:
        sleeper.close()
        killer.close()
        await lean.aclose()
        await buffer.client.aclose()
        server.kill()


async def test_a_kill_while_waiting_fails_the_call(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", extra_args=("--enable-debug-command", "yes"))
    server.start()
    lean = LeanRedis.from_url(server.url, 10.0)
    assert lean is not None
    raw = server.client()
    try:
        assert await lean.call(pack(b"CLIENT", b"SETNAME", b"lean")) == b"OK"
        waiting = asyncio.create_task(lean.call(pack(b"BLPOP", b"nothing", 0)))
        await asyncio.to_thread(_wait_blocked_client, raw)
        raw.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await lean.call(pack(b"PING")) == b"PONG"
    finally:
        raw.close()
        await lean.aclose()
        server.kill()


def _wait_blocked_client(raw: redis.Redis) -> None:
    while int(raw.info("clients")["blocked_clients"]) < 1:
        threading.Event().wait(0.01)


async def test_maxclients_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", extra_args=("--maxclients", "1"))
    server.start()
    hog = server.client()
    hog.ping()  # the one client Redis takes
    try:
        settings = RedisSettings(url=server.url)
        lean = LeanRedis.from_url(server.url, 10.0)
        assert lean is not None
        buffer = Buffer(connect(settings), settings)
        buffer.write_through(lean)
        try:
            # (the reason reaches us on asyncio; uvloop may see the reset first)
            with pytest.raises(RedisUnavailableError, match=r"max number of clients|lost"):
                await buffer.append([(KEY, b"{}")], "f1")
            hog.close()  # a place free again, once Redis has seen the close
            assert await _append_until_taken(buffer, "f2") == 1
        finally:
            await lean.aclose()
            await buffer.client.aclose()
    finally:
        hog.close()
        server.kill()


async def _append_until_taken(buffer: Buffer, flush_id: str) -> int:
    """The same flush (one id: stored once) until Redis takes it."""
    async with asyncio.timeout(20):
        while True:
            try:
                return await buffer.append([(KEY, b"{}")], flush_id)
            except RedisUnavailableError:
                await asyncio.sleep(0.05)


async def test_acl_user_unix_socket_and_db(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "r",
        extra_args=(
            "--unixsocket",
            str(sock),
            *("--user", "default", "off"),
            *("--user", "writer", "on", ">p%w@d", "~*", "&*", "+@all"),
        ),
    )
    server.start()
    try:
        for url in (
            f"redis://writer:p%25w%40d@127.0.0.1:{server.port}/5",
            f"unix://writer:p%25w%40d@{sock}?db=6",
        ):
            lean = LeanRedis.from_url(url, 5.0)
            assert lean is not None
            try:
                await lean.evalsha("return redis.call('SET', KEYS[1], ARGV[1])", ["k"], [url])
            finally:
                await lean.aclose()
        raw = redis.Redis(port=server.port, username="writer", password="p%w@d", db=5)
        try:
            assert raw.get("k") == f"redis://writer:p%25w%40d@127.0.0.1:{server.port}/5".encode()
            raw.select(6)
            assert raw.get("k") == f"unix://writer:p%25w%40d@{sock}?db=6".encode()
        finally:
            raw.close()
    finally:
        server.kill()


async def test_a_huge_reply(redis_url: str) -> None:
    lean = LeanRedis.from_url(redis_url, 10.0)
    assert lean is not None
    big = b"x" * (64 * 1024 * 1024)
    try:
        assert await lean.call(pack(b"SET", b"big", big)) == b"OK"
        got: Any = await lean.call(pack(b"GET", b"big"))
        assert got == big
        assert await lean.call(pack(b"DEL", b"big")) == 1
    finally:
        await lean.aclose()
