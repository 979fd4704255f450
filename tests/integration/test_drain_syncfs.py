"""A round of many files made durable by one syncfs(2) (logpipe_cli.durable): used where it
is meant to be, never acknowledging a round it could not sync, cleaned up when cancelled."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable

import pytest

from logpipe_cli import durable
from logpipe_cli.durable import Barrier
from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, DEADLINE_S, Rig

pytestmark = pytest.mark.anyio

MANY = durable.MIN_FILES + 4


def _count(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Record every syncfs (by barrier) and every fsync of the pass."""
    syncs: list[int] = []
    fsyncs: list[int] = []
    sync_and_close, fsync = Barrier.sync_and_close, os.fsync

    def counted_sync(self: Barrier) -> None:
        syncs.append(self.fd)
        sync_and_close(self)

    def counted_fsync(fd: int) -> None:
        fsyncs.append(fd)
        fsync(fd)

    monkeypatch.setattr(Barrier, "sync_and_close", counted_sync)
    monkeypatch.setattr(os, "fsync", counted_fsync)
    return syncs, fsyncs


async def _users(rig: Rig, n: int) -> dict[str, list[bytes]]:
    return {f"s{i:02d}": await rig.add(f"s{i:02d}", range(3)) for i in range(n)}


async def test_a_round_of_many_new_files_is_synced_once_not_file_by_file(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = await _users(rig, MANY)
    syncs, fsyncs = _count(monkeypatch)
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert len(syncs) == 1  # one group, one round
    assert report.synced_rounds == 1  # and the report says so
    assert fsyncs == []  # neither the files, their directories nor logs_dir
    for user, lines in users.items():
        assert rig.file_lines(user) == lines
    assert rig.redis_keys() == []


async def test_appends_to_files_that_exist_are_synced_once_too(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await _users(rig, MANY)
    assert (await rig.drainer().drain_once()).ok
    second = {u: await rig.add(u, range(3, 5)) for u in first}
    syncs, fsyncs = _count(monkeypatch)
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert (len(syncs), fsyncs) == (1, [])
    for user in first:
        assert rig.file_lines(user) == first[user] + second[user]


async def test_file_mode_and_small_rounds_fsync_each_file(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _users(rig, MANY)
    syncs, fsyncs = _count(monkeypatch)
    report = await rig.drainer(sync="file").drain_once()
    assert report.ok
    assert (syncs, report.synced_rounds) == ([], 0)
    assert len(fsyncs) >= 2 * MANY  # each file and its new directory (and logs_dir)

    few = durable.MIN_FILES - 1
    for i in range(few):
        await rig.add(f"t{i:02d}", range(2))
    syncs.clear()
    fsyncs.clear()
    assert (await rig.drainer().drain_once()).ok
    assert syncs == []
    assert len(fsyncs) >= 2 * few


class _FailingLibc:
    """libc, but its syncfs reports a write-back error, as the kernel does after one."""

    def __init__(self, real: object) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def syncfs(self, fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1


async def test_a_failed_syncfs_acknowledges_nothing_and_the_next_pass_delivers_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round's lines were written but may not be on disk: none of its keys is
    acknowledged (the events stay in their claims, the offsets BEGIN recorded beside
    them), and the next pass cuts each file back to its offset and writes it again."""
    old = await _users(rig, MANY)
    assert (await rig.drainer().drain_once()).ok  # files that exist, and new ones below
    new = {u: await rig.add(u, range(3, 6)) for u in old}
    new |= {f"n{i:02d}": await rig.add(f"n{i:02d}", range(2)) for i in range(4)}
    buffered = rig.stats()["buffered"]

    monkeypatch.setattr(durable, "_LIBC", _FailingLibc(durable._LIBC))
    report = await rig.drainer().drain_once()
    monkeypatch.undo()
    assert not report.ok
    assert any("Input/output error" in e and str(rig.logs) in e for e in report.errors)
    assert report.events == 0
    assert rig.stats()["buffered"] == buffered
    for user, lines in new.items():
        ek = EventKey(user, DAY)
        assert rig.raw.lrange(ek.claim, 0, -1) == lines  # still in Redis, in order
        assert rig.raw.exists(ek.lease) == 0  # given back: anyone may retry at once
        assert rig.raw.exists(ek.offset) == 1  # the offset to cut back to

    retry = await rig.drainer().drain_once()
    assert retry.ok, retry.errors
    assert retry.events == sum(len(x) for x in new.values())
    for user, lines in new.items():
        assert rig.file_lines(user) == old.get(user, []) + lines  # once, not twice
    assert rig.redis_keys() == []
    assert rig.stats()["buffered"] == 0


def _open_below(rig: Rig) -> list[str]:
    """What this process holds open below logs_dir (logs_dir itself included)."""
    held = []
    for n in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if target.startswith(str(rig.logs)):
            held.append(target)
    return held


async def test_a_pass_cancelled_during_the_syncfs_leaks_no_descriptor(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The syncfs's thread closes the barrier when it ends, and the files are closed:
    nothing of the pass stays open (locked) after it."""
    users = await _users(rig, MANY)
    started = threading.Event()
    sync_and_close: Callable[[Barrier], None] = Barrier.sync_and_close

    def slow(self: Barrier) -> None:
        started.set()
        time.sleep(0.3)
        sync_and_close(self)

    monkeypatch.setattr(Barrier, "sync_and_close", slow)
    task = asyncio.create_task(rig.drainer().drain_once())
    deadline = time.monotonic() + DEADLINE_S
    while not started.is_set():
        assert time.monotonic() < deadline, "the round never reached its syncfs"
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    left = _open_below(rig)
    while left and time.monotonic() < deadline:  # the thread ends its syncfs, then closes
        await asyncio.sleep(0.01)
        left = _open_below(rig)
    assert left == []
    monkeypatch.undo()
    retry = await rig.drainer(lease_seconds=0.2).drain_once()
    assert retry.ok, retry.errors
    for user, lines in users.items():
        assert rig.file_lines(user) == lines
    assert rig.redis_keys() == []
