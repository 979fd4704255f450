"""What a drain leaves on disk and which threads it holds: no file for a key that writes
nothing, no file thread held while a file is locked elsewhere (issue 9, defect 3)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli import drainer
from logpipe_cli.keys import EventKey
from logpipe_cli.sink import LockedFile, LogsDir, encode_lines
from tests.integration.conftest import DAY, DEADLINE_S, Rig, line

pytestmark = pytest.mark.anyio


async def test_a_key_whose_values_are_all_quarantined_leaves_no_file(rig: Rig) -> None:
    ek = EventKey("q", DAY)
    bad = [b"not json", b"[1,2]"]
    rig.raw.rpush(ek.key, *bad)
    good = await rig.add("g", range(2))
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.quarantined == 2
    assert rig.raw.lrange(ek.quarantine, 0, -1) == bad
    assert not (rig.logs / "user_q").exists()  # neither the file nor its directory
    assert rig.file_lines("g") == good
    assert rig.raw.exists(ek.key, ek.claim, ek.lease, ek.offset, ek.holder) == 0


async def test_an_existing_file_is_left_as_it_was_when_nothing_is_written(rig: Rig) -> None:
    first = await rig.add("q", range(2))
    assert (await rig.drainer().drain_once()).events == 2
    ek = EventKey("q", DAY)
    rig.raw.rpush(ek.key, b"not json")
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.quarantined == 1
    assert rig.file_lines("q") == first


async def test_a_drain_waiting_for_a_locked_file_holds_no_file_thread(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one file thread: a drain that waited for a lock in it would stop every other drain
    monkeypatch.setattr(drainer, "FILE_THREADS", 1)
    monkeypatch.setattr(drainer, "_file_pool", None)
    a = [line("a1", n) for n in range(2)]
    rig.raw.rpush(EventKey("a1", DAY).key, *a)
    b = await rig.add("b1", range(2))
    rig.path("a1").parent.mkdir(parents=True)
    holder = LockedFile.open(rig.path("a1"))  # another process's drain, say
    try:
        first = rig.drainer(log_pattern="logs:user_a*:*", lease_seconds=30)
        waiting = asyncio.create_task(first.drain_once())
        deadline = time.monotonic() + DEADLINE_S
        while not rig.raw.exists(EventKey("a1", DAY).lease):  # claimed: now at the lock
            assert time.monotonic() < deadline, "the first drain never claimed its key"
            await asyncio.sleep(0.01)
        other = rig.drainer(log_pattern="logs:user_b*:*").drain_once()
        report = await asyncio.wait_for(other, timeout=DEADLINE_S)
        assert report.ok, report.errors
        assert rig.file_lines("b1") == b
        assert not waiting.done()  # still waiting for a1's lock, up to 2 leases
        assert rig.file("a1") == b""
    finally:
        holder.close()
    report = await asyncio.wait_for(waiting, timeout=DEADLINE_S)
    assert report.ok, report.errors
    assert rig.file_lines("a1") == a
    assert rig.redis_keys() == []


async def test_a_file_made_meanwhile_by_a_stale_holder_is_cut_back_not_appended_to(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a round's look (no file) and its append, the drainer this one took the key
    over from wakes and makes the file with a batch it never acknowledged: that batch is
    cut back to the offset this round recorded, and written once."""
    events = await rig.add("s", range(3))
    original = LogsDir.write_new

    def stale_append_first(self: LogsDir, path: Path, data: bytes, *, fsync: bool = True) -> Any:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(encode_lines(events[:2]))
        monkeypatch.setattr(LogsDir, "write_new", original)  # once
        return original(self, path, data, fsync=fsync)

    monkeypatch.setattr(LogsDir, "write_new", stale_append_first)
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.events == 3
    assert rig.file_lines("s") == events
    assert rig.redis_keys() == []


async def test_a_file_made_and_acknowledged_between_a_look_and_the_claim_is_kept(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drainer looks (no file yet); before it claims the key, another drainer drains
    the key whole, making the file, and new events arrive. The first drainer's claim is
    fresh, so nothing vouches for the look's "no file": the lines already there are
    acknowledged and kept, the new events follow them (CI caught two drainers on one
    ``logs_dir`` cutting each other's acknowledged lines this way)."""
    first = await rig.add("s", range(3))
    later: list[bytes] = []
    original = drainer.Drainer._look

    async def look_then_let_another_drain(self: drainer.Drainer, keys: Any) -> Any:
        looks = await original(self, keys)
        monkeypatch.setattr(drainer.Drainer, "_look", original)  # once
        other = await rig.drainer().drain_once()
        assert other.events == 3
        assert rig.file_lines("s") == first
        later.extend(await rig.add("s", range(3, 5)))
        return looks

    monkeypatch.setattr(drainer.Drainer, "_look", look_then_let_another_drain)
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.events == 2
    assert rig.file_lines("s") == first + later
    assert rig.redis_keys() == []


async def test_a_drain_cancelled_while_waiting_for_a_lock_keeps_no_file_locked(rig: Rig) -> None:
    """Stopped mid-wait (a second signal, or DrainRunner.aclose): the files it had locked
    are let go, or their keys would stay busy for as long as the process runs."""
    await rig.add("a1", range(1))
    await rig.add("a2", range(1))
    assert (await rig.drainer().drain_once()).events == 2  # both files exist now
    await rig.add("a1", range(1, 2))
    await rig.add("a2", range(1, 2))
    holder = LockedFile.open(rig.path("a1"))
    try:
        task = asyncio.create_task(rig.drainer(lease_seconds=30).drain_once())
        deadline = time.monotonic() + DEADLINE_S
        while not rig.raw.exists(EventKey("a1", DAY).lease):  # claimed: waiting for a1
            assert time.monotonic() < deadline, "the drain never claimed its keys"
            await asyncio.sleep(0.01)
        await drainer.cancel_and_wait(task)
    finally:
        holder.close()
    for user in ("a1", "a2"):
        LockedFile.open(rig.path(user), lock_timeout_s=0.5).close()  # free: not held on


def _open_paths() -> set[str]:
    """What this process's descriptors point at."""
    out: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
    return out


async def test_a_pass_returns_with_every_file_it_drained_closed(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished files are closed in the file threads without the group waiting for it;
    the pass itself waits: when drain_once returns, no file of it is open, so none is
    locked (another drainer's flock on each succeeds at once)."""
    monkeypatch.setattr(drainer, "GROUP_SIZE", 3)  # many groups, each closing its own
    close_files = drainer._close_files

    def slow_close(files: Any) -> None:
        time.sleep(0.2)  # still closing when the last ack is done
        close_files(files)

    monkeypatch.setattr(drainer, "_close_files", slow_close)
    users = [f"c{i}" for i in range(20)]
    for u in users:
        await rig.add(u, range(2))
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.keys == len(users)
    opened = _open_paths()
    for u in users:
        path = rig.path(u)
        assert str(path) not in opened
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
        finally:
            os.close(fd)


async def test_a_pass_cancelled_while_its_files_close_still_closes_them_all(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (a second signal, DrainRunner.aclose) while it waits for the closes
    it handed over, queued in one slow thread: they all run anyway, so no descriptor
    keeps a key's file locked for the rest of the process."""
    monkeypatch.setattr(drainer, "GROUP_SIZE", 3)
    monkeypatch.setattr(drainer, "QUICK_THREADS", 1)  # the closes queue behind each other
    monkeypatch.setattr(drainer, "_quick_pool", None)
    close_files = drainer._close_files

    def slow_close(files: Any) -> None:
        time.sleep(0.1)
        close_files(files)

    monkeypatch.setattr(drainer, "_close_files", slow_close)
    waiting = asyncio.Event()
    closed = drainer.Drainer._closed

    async def signal_then_wait(self: drainer.Drainer) -> None:
        waiting.set()
        await closed(self)

    monkeypatch.setattr(drainer.Drainer, "_closed", signal_then_wait)
    users = [f"k{i}" for i in range(12)]
    for u in users:
        await rig.add(u, range(2))
    task = asyncio.create_task(rig.drainer().drain_once())
    await asyncio.wait_for(waiting.wait(), timeout=DEADLINE_S)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + DEADLINE_S
    while any(str(rig.path(u)) in _open_paths() for u in users):
        assert time.monotonic() < deadline, "a drained file was never closed"
        await asyncio.sleep(0.05)
    for u in users:
        assert rig.file_lines(u) == [line(u, n) for n in range(2)]


def _slowed(monkeypatch: pytest.MonkeyPatch, method: str) -> threading.Event:
    """``LogsDir.<method>`` made to linger 0.3 s in its thread after doing its work;
    the event is set once a call has done it."""
    started = threading.Event()
    real = getattr(LogsDir, method)

    def slow(self: LogsDir, *args: Any, **kw: Any) -> Any:
        out = real(self, *args, **kw)
        started.set()
        time.sleep(0.3)
        return out

    monkeypatch.setattr(LogsDir, method, slow)
    return started


async def _cancel_once_in_thread(rig: Rig, started: Any, users: list[str]) -> None:
    """Start a pass, cancel it (as a second signal or DrainRunner.aclose does) while a
    file thread is inside ``started``'s slow call, and check that no file of ``users``
    stays open (locked) in this process once that call has ended."""
    task = asyncio.create_task(rig.drainer().drain_once())
    deadline = time.monotonic() + DEADLINE_S
    while not started.is_set():
        assert time.monotonic() < deadline, "the slow call never ran"
        await asyncio.sleep(0.005)
    await drainer.cancel_and_wait(task)
    await asyncio.sleep(1.0)  # the slow call takes 0.3 s
    left = [u for u in users if str(rig.path(u)) in _open_paths()]
    assert not left, f"files left open (locked) by a cancelled pass: {left}"
    for u in users:
        LockedFile.open(rig.path(u), lock_timeout_s=0.5).close()  # free: not held on


async def test_a_pass_cancelled_while_a_look_runs_keeps_no_file_locked(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look (open and lock) still running in a thread when the pass is cancelled:
    the files it opened are closed when it ends, not left locked for the process's life."""
    users = [f"l{i}" for i in range(4)]
    for u in users:
        await rig.add(u, range(2))
    assert (await rig.drainer().drain_once()).ok  # the files exist: looks open them
    for u in users:
        await rig.add(u, range(2, 4))
    await _cancel_once_in_thread(rig, _slowed(monkeypatch, "find"), users)


async def test_a_pass_cancelled_while_a_new_file_is_made_keeps_no_file_locked(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file made (locked, written) in a thread that is still running when the pass is
    cancelled: closed when it ends, not left locked for the process's life."""
    users = [f"n{i}" for i in range(4)]
    for u in users:
        await rig.add(u, range(2))
    await _cancel_once_in_thread(rig, _slowed(monkeypatch, "write_new"), users)


async def test_a_pass_cancelled_while_logs_dir_syncs_keeps_no_file_open(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file found there, locked by another process, when the round went to make it
    (held to wait for its lock after logs_dir's fsync): the pass cancelled during that
    fsync closes it, not leaving its descriptor open for the process's life."""
    from logpipe_cli.sink import NewFile, UnlockedFile

    for u in ("a", "b"):
        await rig.add(u, range(2))
    write_new, sync = LogsDir.write_new, LogsDir.sync
    started = threading.Event()

    def appeared_elsewhere(self: LogsDir, path: Path, data: bytes, **kw: Any) -> Any:
        if path != rig.path("a"):
            return write_new(self, path, data, **kw)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # made meanwhile by a drainer that holds it (say)
        return NewFile(UnlockedFile(path, os.open(path, os.O_WRONLY | os.O_APPEND)), False, True)

    def slow_sync(self: LogsDir) -> None:
        started.set()
        time.sleep(0.3)
        sync(self)

    monkeypatch.setattr(LogsDir, "write_new", appeared_elsewhere)
    monkeypatch.setattr(LogsDir, "sync", slow_sync)
    await _cancel_once_in_thread(rig, started, ["a", "b"])


async def test_redis_failing_as_a_claimed_key_is_given_back_keeps_no_file_locked(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys looked at once claimed (no file at the first look): one refused, and Redis
    fails as its lease is given back. The others' files, opened and locked by then,
    are closed: not kept locked for the life of the process (a loop drainer's next
    passes, and every other drainer, would find them busy until it exits)."""
    from logpipe_cli.buffer import Buffer
    from logpipe_cli.errors import RedisUnavailableError, SinkError

    for u in ("a", "b"):
        await rig.add(u, range(2))
    assert (await rig.drainer().drain_once()).ok  # the files exist
    for u in ("a", "b"):
        await rig.add(u, range(2, 4))
    find, seen = LogsDir.find, set()

    def find_late(self: LogsDir, path: Path) -> Any:
        if path not in seen:  # the first look: not there yet (made just after it)
            seen.add(path)
            return None
        if path == rig.path("b"):
            raise SinkError(f"cannot open {path}: Input/output error")
        return find(self, path)

    async def release_fails(self: Buffer, eks: Any, owner: str) -> None:
        if list(eks):
            raise RedisUnavailableError("Redis unavailable while releasing leases")

    monkeypatch.setattr(LogsDir, "find", find_late)
    monkeypatch.setattr(Buffer, "release", release_fails)
    report = await rig.drainer().drain_once()
    assert not report.ok
    await asyncio.sleep(0.2)
    assert str(rig.path("a")) not in _open_paths(), "a's file left open (locked)"
    LockedFile.open(rig.path("a"), lock_timeout_s=0.5).close()  # free: not held on
