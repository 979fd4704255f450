"""The drainer: move buffered events from Redis into JSON Lines files, exactly once.

Per key, in this order (each Redis step one script, pipelined over a group of keys):

1. **look**: open the key's file if it exists and ``flock`` it (nothing is made); a
   file locked by another process is waited for on the event loop, not in a thread.
2. **claim**: rename ``logs:user_<id>:<day>`` to its claim list and take a lease, so
   events appended from now on go to a fresh list and nothing is read-then-deleted.
   A claim whose lease ran out (its drainer died) is resumed instead: re-check the
   lease and cut the file back to the offset recorded before the dead drainer's
   append. Then **begin**: record the file's size, fetch a batch (as every round of a
   key does). Never in the claim's own script: a claim can reach Redis after its
   drainer gave up on it and let the file go (see :meth:`Drainer._drain_group`).
3. **append** the batch in one write, fsync (making the file and its directory with
   the first append that has lines for them: a key that writes nothing makes no file).
4. **ack**: trim the batch from the claim, clear the offset, update the counters.

A crash between the begin and the ack leaves the offset behind, so the next drainer
truncates the half-acknowledged append and writes the batch again: no torn line, no
duplicate. A file made between a round's look and its append (by the drainer this one
took the key over from, waking up) is cut back the same way before anything is written.
An offset is trusted only as the dead holder recorded it (see :func:`check_offset`);
anything else leaves the claim in Redis, reported, rather than cut acknowledged lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from logpipe_cli import durable, keys
from logpipe_cli.buffer import AckItem, BeginItem, Buffer, Claim
from logpipe_cli.durable import Barrier
from logpipe_cli.errors import LogpipeError, UnsafeKeyError
from logpipe_cli.events import split_lines
from logpipe_cli.keys import EventKey
from logpipe_cli.scripts import ClaimStatus, Pending, Prepared, Record, parse_size
from logpipe_cli.settings import DrainerSettings
from logpipe_cli.sink import LockedFile, LogsDir, NewFile, UnlockedFile, encode_lines

log = logging.getLogger("logpipe.drainer")

#: keys worked on together: one pipeline per step for the whole group; the group's file
#: work goes to the FILE_THREADS threads in chunks, not a thread hand-off per key
GROUP_SIZE = 256
#: groups drained at once, so while one group waits for Redis or the main thread, the
#: others keep the file threads busy (py-spy of a 20,000-key pass, bench/results: with
#: one hand-off per key and 2 groups the threads idled ~73 % of it, now ~50 %).
#: GROUP_SIZE * GROUPS_IN_FLIGHT files are open at most.
GROUPS_IN_FLIGHT = 3
#: events one round reads for a whole group, shared among its keys (at most
#: ``batch_events`` each): bounds what a pass holds in memory whatever the group size
GROUP_EVENTS = 320_000

Progress = Callable[[int, int], None]

#: threads for file work (open, append + fsync, repair): fsyncs issued together share
#: the filesystem's journal commits, and 16 moved new files ~8 % faster than
#: asyncio's default pool (6 threads on 2 cores) in `make bench`
FILE_THREADS = 16
_file_pool: ThreadPoolExecutor | None = None
#: threads for the quick file work: looks, closes and ``logs_dir``'s fsync. Apart from
#: the appends' threads, whose queue is first come first served: a group's look or its
#: one fsync of ``logs_dir`` waited there behind the appends (a write and two fsyncs
#: each) that the other groups in flight had handed over before it.
QUICK_THREADS = 4
_quick_pool: ThreadPoolExecutor | None = None
_T = TypeVar("_T")
_R = TypeVar("_R")


def _started(threads: int, name: str) -> ThreadPoolExecutor:
    """A pool with all its ``threads`` started at once.

    A pool starts its threads lazily, one per task, and each start waits until the new
    thread runs: started in the middle of a pass, each one waited for the GIL behind the
    busy ones, 63 ms of the main thread in a 0.6 s pass of 1,000 keys x 1,000 events
    in a fresh process (cProfile). Started before the pass they cost ~2 ms. Each
    warm-up task waits at a barrier until all are running, so none is reused."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
    started = threading.Barrier(threads)
    for _ in range(threads):
        pool.submit(_wait_quietly, started)
    return pool


def _file_threads() -> ThreadPoolExecutor:
    """The process's file threads (appends, repairs), started when first asked for."""
    global _file_pool
    if _file_pool is None:
        _file_pool = _started(FILE_THREADS, "logpipe-files")
    return _file_pool


def _quick_threads() -> ThreadPoolExecutor:
    """The process's threads for quick file work (see :data:`QUICK_THREADS`)."""
    global _quick_pool
    if _quick_pool is None:
        _quick_pool = _started(QUICK_THREADS, "logpipe-looks")
    return _quick_pool


def _wait_quietly(barrier: threading.Barrier) -> None:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=5.0)


async def _in_file_thread(fn: Callable[..., _T], *args: Any, quick: bool = False) -> _T:
    """Run blocking file work in the process's file threads (``quick``: in the threads
    for quick file work)."""
    pool = _quick_threads() if quick else _file_threads()
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _each(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R | Exception]:
    """``fn`` over ``items`` in this thread; an item's exception is its result."""
    out: list[_R | Exception] = []
    for item in items:
        try:
            out.append(fn(item))
        except Exception as exc:  # handed back per item, as gather(return_exceptions=True)
            out.append(exc)
    return out


async def _in_file_threads(
    fn: Callable[[_T], _R],
    items: Sequence[_T],
    *,
    quick: bool = False,
    discard: Callable[[_R], None] | None = None,
) -> list[_R | Exception]:
    """``fn`` over ``items`` in the file threads (``quick``: the threads for quick file
    work), in order; each item's exception is its result. One thread task per chunk,
    not per item: handing work to a thread and back costs more than a small file's open
    or append (see the drain profiles).

    Cancelled (a second signal, DrainRunner.aclose) while a thread still works on a
    chunk, the thread cannot be stopped and nobody receives what it returns: each of
    those results is given to ``discard`` when the chunk ends (a file a look or a
    write opened and locked is closed, not kept locked for the process's life)."""
    if not items:
        return []
    pool = _quick_threads() if quick else _file_threads()
    n = min(QUICK_THREADS if quick else FILE_THREADS, len(items))
    size = -(-len(items) // n)
    chunks = [pool.submit(_each, fn, items[i : i + size]) for i in range(0, len(items), size)]
    try:
        results = await asyncio.gather(*(asyncio.wrap_future(c) for c in chunks))
    except BaseException:
        if discard is not None:
            for c in chunks:  # those not started were cancelled: nothing to discard
                c.add_done_callback(functools.partial(_discard_chunk, discard))
        raise
    return [r for chunk in results for r in chunk]


def _discard_chunk(discard: Callable[[_R], None], chunk: Future[list[_R | Exception]]) -> None:
    """Hand each result of a chunk nobody received to ``discard`` (see
    :func:`_in_file_threads`); runs in the thread that ends the chunk."""
    if chunk.cancelled() or chunk.exception() is not None:
        return
    for res in chunk.result():
        if not isinstance(res, Exception):
            with contextlib.suppress(Exception):
                discard(res)


@dataclass
class DrainReport:
    """What one drain pass did; ``errors`` empty means everything found was handled."""

    keys: int = 0
    events: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    quarantined: int = 0
    #: rounds made durable by one ``syncfs`` each (``drainer.sync``; the rest of the
    #: files were fsynced one by one): says what ``auto`` chose on this logs_dir
    synced_rounds: int = 0
    busy: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    wrong_type: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: keys already counted in ``keys`` and ``files``: a key whose resumed claim and
    #: newer events are both drained in one pass counts once
    counted: set[str] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    def count_key(self, key: str) -> None:
        if key not in self.counted:
            self.counted.add(key)
            self.keys += 1
            self.files += 1

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["counted"]
        return {**data, "ok": self.ok}


def new_owner() -> str:
    """A token naming this drainer in leases: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended.

    Cancelled again until it ends: Python 3.11's ``asyncio.wait_for`` (inside redis-py)
    swallows a cancellation that lands just as the future it waits for completes, which
    would leave ``await task`` waiting forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


#: the first and the longest pause between attempts at a file's lock while another
#: process holds it (the attempts run on the event loop, not in a file thread)
LOCK_RETRY_S = (0.002, 0.05)


@dataclass(slots=True)
class _Work:
    """A key being drained and its file: ``None`` until there is one (a key's file is
    made only when a batch has something to write to it, see :meth:`LogsDir.write_new`)."""

    key: EventKey
    path: Path
    file: LockedFile | None

    @property
    def size(self) -> int:
        return 0 if self.file is None else self.file.size


#: a key's file as :meth:`Drainer._look` found it
_Look = tuple[Path, LockedFile | UnlockedFile | None]


def _close_quietly(file: LockedFile | UnlockedFile | None) -> None:
    """Close ``file`` (if any), whatever the close says: it is given up either way."""
    if file is not None:
        with contextlib.suppress(OSError):
            file.close()


def _close_files(files: Iterable[LockedFile]) -> None:
    for file in files:
        _close_quietly(file)


def _close_in_file_threads(files: Sequence[LockedFile]) -> asyncio.Future[list[None]]:
    """Close ``files`` in the threads for quick file work, spread over them as
    :func:`_in_file_threads` spreads work: a close gives the GIL up and waits to take
    it back, and a thread closing a group's 256 files alone while the event loop's
    thread checked batches took 116 ms (a timeline of 1,000 keys x 1,000 events).
    Handed over before this returns: the threads close them even if the caller is
    cancelled while waiting."""
    loop, pool = asyncio.get_running_loop(), _quick_threads()
    size = -(-len(files) // min(QUICK_THREADS, len(files)))
    return asyncio.gather(
        *(
            loop.run_in_executor(pool, _close_files, files[i : i + size])
            for i in range(0, len(files), size)
        )
    )


def _close_looks(looks: Iterable[_Look]) -> None:
    for look in looks:
        _close_look(look)


def _close_look(look: _Look) -> None:
    _close_quietly(look[1])


def _close_new(made: NewFile | None) -> None:
    """Close the file of a :meth:`LogsDir.write_new` nobody received (see
    :func:`_in_file_threads`); ``None``: nothing was made."""
    _close_quietly(None if made is None else made.file)


@dataclass(frozen=True, slots=True)
class _Append:
    """One key's batch on its way from BEGIN through the file to ACK.

    Holds the lines to write and how many values they are, not the values read from
    Redis: those are let go as soon as the batch is checked, so the next group's reply
    is parsed into the memory they held. A round of 256 keys x 1,000 events kept its
    256,000 values (~24 MB of bytes objects) alive beside their lines until the ack,
    three rounds in flight: the bench's 1,000 x 1,000 pass into files that exist
    peaked at 160-161 MB (VmHWM), 125-141 MB since."""

    work: _Work
    fetched: int  # values read from the claim: all are acknowledged
    written: int  # of them, the lines in ``data``
    bad: list[bytes]  # quarantined
    data: bytes  # the lines to write

    def ack_item(self) -> AckItem:
        return AckItem(
            self.work.key,
            self.fetched,
            self.written,
            len(self.data),
            self.bad,
            self.work.size,
        )


def split_safely(values: list[bytes]) -> tuple[list[bytes], list[bytes], bytes]:
    """:func:`split_lines`, except that a value it cannot decode at all (too deep for
    the parser: ``RecursionError``; or any other error) is quarantined, not a crash."""
    try:
        return split_lines(values)
    except Exception:  # a hostile value must never stop a pass
        good: list[bytes] = []
        bad: list[bytes] = []
        for v in values:
            try:
                g, b, _ = split_lines([v])
            except Exception:  # this value is the culprit
                g, b = [], [v]
            good += g
            bad += b
        return good, bad, encode_lines(good)


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_offset(p: Prepared, file: LockedFile | None) -> int:
    """The pending offset of a resumed claim, if it can be trusted; else raise _Refused.

    Trusted only as the holder being recovered recorded it: the byte count that BEGIN
    wrote together with the holder record (so not below what was acknowledged), within
    the file and at the start of a line. Cutting to anything else (an offset written
    by hand, or copied from another claim) could destroy acknowledged lines or tear
    one. Reads the file: call it in a file thread, under the file's lock. ``file``
    is ``None`` when there is no file (yet): then only an offset of 0 can be trusted.
    """
    size = parse_size(p.offset)
    if size is None:
        raise _Refused(f"pending offset {p.offset!r} is not a byte count (written by hand?)")
    held = Record.parse(p.holder)
    if held is None:
        raise _Refused(f"pending offset {size} has no holder record to vouch for it")
    if size != held.size:
        raise _Refused(
            f"pending offset {size} was not recorded by the holder being recovered "
            f"({held.owner!r} recorded {held.size})"
        )
    if file is None:
        if size > 0:
            raise _Refused(f"pending offset {size} is beyond the end of the file (none there)")
        return size
    if size > file.size:
        raise _Refused(f"pending offset {size} is beyond the end of the file ({file.size} B)")
    if size > 0 and _byte_before(file, size) != b"\n":
        raise _Refused(f"pending offset {size} is not at the start of a line")
    return size


def _byte_before(file: LockedFile, offset: int) -> bytes:
    """The byte at ``offset - 1`` of the locked file (opened write-only, so read anew)."""
    fd = os.open(file.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        here, locked = os.fstat(fd), os.fstat(file.fd)
        if (here.st_dev, here.st_ino) != (locked.st_dev, locked.st_ino):
            raise _Refused(f"{file.path} was replaced while locked")
        return os.pread(fd, 1, offset - 1)
    finally:
        os.close(fd)


@contextlib.contextmanager
def gc_paused(pause: bool = True) -> Iterator[None]:
    """The cyclic garbage collector off while inside (if ``pause`` and it was on).

    A pass allocates container objects by the hundred thousand (each batch's list of
    values, the claims, the work items) and most live until their group is done, so
    the collector's young and middle collections kept walking them: 10-15 % of the
    main thread's CPU in a pass of 1,000 keys x 1,000 events (``getrusage``, paired
    runs), and ~400 collections in a pass of 20,000 small keys. Reference counting
    frees almost everything a pass makes; what is left in cycles (~2,800 objects
    after 20,000 keys: futures and exceptions of the asyncio plumbing) is collected
    by the next collection once the pass is over. Process-wide, so only for a process
    that does nothing else meanwhile (``logpipe drain``); the API's ``POST /drain``
    leaves it on."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Drainer:
    """Drains a :class:`Buffer` into ``cfg.logs_dir``. Safe to run many at once."""

    def __init__(
        self,
        buffer: Buffer,
        cfg: DrainerSettings,
        owner: str | None = None,
        *,
        pause_gc: bool = False,
    ) -> None:
        self.buffer = buffer
        self.cfg = cfg
        #: this drainer's token, and the one its leases carry in the current pass: the
        #: token with the pass's number after the first (see :meth:`_drain_once`)
        self._token = owner or new_owner()
        self.owner = self._token
        self._passes = 0
        #: the cyclic garbage collector paused during each pass (see :func:`gc_paused`):
        #: for a process that only drains (``logpipe drain``), not one that serves too
        self.pause_gc = pause_gc
        self.logs_dir = Path(cfg.logs_dir)
        self.lease_ms = max(100, int(cfg.lease_seconds * 1000))
        self._held: set[EventKey] = set()
        #: closes handed to the file threads and not yet waited for (see :meth:`_batch`)
        self._closing: list[asyncio.Future[list[None]]] = []
        #: ``logs_dir`` as :func:`~logpipe_cli.sink.path_for` spells it (absolute, normalized)
        self._root = Path(os.path.normpath(os.path.abspath(self.logs_dir)))
        self._logs = self._new_logs_dir()  # one per pass, made by drain_once
        #: no companion named the old way was left when this drainer started (see
        #: :meth:`_refuse_legacy_keys`); looked for until none is
        self._no_legacy = buffer.sharded is not None  # a cluster never held old names

    def _new_logs_dir(self) -> LogsDir:
        return LogsDir(
            self._root, file_mode=self.cfg.file_mode_bits, dir_mode=self.cfg.dir_mode_bits
        )

    async def _legacy_lists(self) -> set[EventKey]:
        """The lists that still have a claim, lease, offset, holder or quarantine named
        the way versions before the hash-tagged layout did. Such a claim may hold a batch
        half written to its file with its offset beside it: drained around it, the file
        would take newer lines that the repair after ``migrate-keys`` then cuts. So those
        lists are left alone (reported as unsafe) until they are renamed. One ``SCAN``
        per pass while any is left, then never again in this process."""
        found: set[EventKey] = set()
        async for raw in self.buffer.scan(keys.LEGACY_PATTERN):
            ek = keys.parse_legacy(raw)
            if ek is not None:
                found.add(ek)
        if not found:
            self._no_legacy = True
        return found

    # ---- one pass ------------------------------------------------------------------

    async def drain_once(
        self, *, wait_for_busy: bool = True, progress: Progress | None = None
    ) -> DrainReport:
        """Drain every key there is now.

        With ``wait_for_busy``, keys another drainer holds are tried again until they
        are done or their lease runs out and they can be taken over; without it (loop
        mode) they are left to their holder.
        """
        with gc_paused(self.pause_gc):
            return await self._drain_once(wait_for_busy, progress)

    async def _drain_once(self, wait_for_busy: bool, progress: Progress | None) -> DrainReport:
        start = time.monotonic()
        report = DrainReport()
        self._passes += 1
        if self._passes > 1:
            # Each pass holds its leases under a token of its own. A pass that gave up
            # on a request (a timeout) may see it reach Redis later: an ACK that trims
            # a batch the next pass has read again, or a BEGIN that records a stale
            # offset under the next pass's lease. Under one token the next pass's lease
            # would be the late request's too; under its own, the request finds no
            # lease of its sender's and does nothing. (A claim of an earlier pass, left
            # behind, is taken over once its lease runs out, as any other drainer's.)
            self.owner = f"{self._token}/{self._passes}"
        self._logs = self._new_logs_dir()
        _file_threads()  # started now, before the pass needs them
        _quick_threads()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            todo, report.unsafe = await self.buffer.find_drainable(self.cfg.log_pattern)
            if not self._no_legacy and (legacy := await self._legacy_lists()):
                todo = [ek for ek in todo if ek not in legacy]
                report.unsafe += sorted(
                    f"{ek.key} (old-named keys: run `logpipe migrate-keys`)" for ek in legacy
                )
            for key in report.unsafe:
                log.warning("left in Redis: key %r does not map to a file inside logs_dir", key)
            total, done = len(todo), 0
            deadline = start + 2 * self.cfg.lease_seconds + 1
            look_first = True
            while todo:
                groups = [todo[i : i + GROUP_SIZE] for i in range(0, len(todo), GROUP_SIZE)]

                def group_done(n: int) -> None:
                    nonlocal done
                    done += n
                    if progress is not None:
                        progress(min(done, total), total)

                busy = await self._drain_groups(groups, report, group_done, look_first)
                if not busy or not wait_for_busy or time.monotonic() > deadline:
                    report.busy.extend(ek.key for ek in busy)
                    break
                await asyncio.sleep(min(0.25, self.cfg.lease_seconds / 4))
                # keys another drainer holds: claimed first, looked at after (no file
                # opened and locked in vain at each try while the holder keeps the key)
                todo, look_first = busy, False
        except LogpipeError as exc:
            report.errors.append(exc.detail)
        finally:
            try:
                await cancel_and_wait(heartbeat)
                await self._closed()
            finally:
                self._logs.close()
        report.seconds = time.monotonic() - start
        with contextlib.suppress(LogpipeError):
            await self.buffer.record_drain(
                {
                    "at": time.time(),
                    "ok": int(report.ok),
                    "events": report.events,
                    "keys": report.keys,
                    "seconds": round(report.seconds, 6),
                    "error": report.errors[0] if report.errors else "",
                }
            )
        return report

    async def _drain_groups(
        self,
        groups: list[list[EventKey]],
        report: DrainReport,
        done: Callable[[int], None],
        look_first: bool = True,
    ) -> list[EventKey]:
        """Drain ``groups``, GROUPS_IN_FLIGHT at a time; returns the keys others hold.

        After a failure no new group starts; the groups under way finish first (a
        cancelled group could leave a thread writing to a file it no longer owns).
        """
        busy: list[EventKey] = []
        failed: list[Exception] = []
        queue = iter(groups)

        async def worker() -> None:
            for group in queue:
                if failed:
                    return
                try:
                    busy.extend(await self._drain_group(group, report, look_first))
                except Exception as exc:
                    failed.append(exc)
                    return
                done(len(group))

        await asyncio.gather(*(worker() for _ in range(GROUPS_IN_FLIGHT)))
        if failed:
            raise failed[0]
        return busy

    async def _closed(self) -> None:
        """Wait until every close :meth:`_batch` handed over has run: a pass returns
        with none of its files still open (locked). Cancelled meanwhile (a second
        signal, DrainRunner.aclose), the threads close them all the same: shielded, as
        a cancelled wait would cancel the closes still queued, and their descriptors
        would keep the keys' files locked for as long as the process runs."""
        closing, self._closing = self._closing, []
        if closing:
            await asyncio.shield(asyncio.gather(*closing))

    async def _heartbeat(self) -> None:
        """Renew our leases while a pass runs, so a slow batch is not taken over."""
        while True:
            await asyncio.sleep(self.cfg.lease_seconds / 3)
            with contextlib.suppress(LogpipeError):
                await self.buffer.renew(list(self._held), self.owner, self.lease_ms)

    async def _drain_group(
        self, group: Sequence[EventKey], report: DrainReport, look_first: bool = True
    ) -> list[EventKey]:
        """Drain a group of keys; returns those another drainer holds.

        With ``look_first``, each key's file is looked at (opened and locked if it
        exists, never made) before the claim; a key with no file yet is looked at again
        once claimed (a file that is not there then was not made before the claim:
        nothing removes one). A key whose file cannot be looked at (unsafe, or an
        error) is reported and not claimed: its events stay where they are. The claim
        begins nothing (see scripts.CLAIM for why): each key's first batch is read by
        BEGIN, with its file locked.
        """
        keys = list(group)
        looked: dict[EventKey, _Look] = {}
        if look_first:
            keys = []
            for ek, res in zip(group, await self._look(group), strict=True):
                if isinstance(res, Exception):
                    self._note_failure(ek, res, report)
                    continue
                keys.append(ek)
                if res[1] is not None:
                    looked[ek] = res
            if not keys:
                return []
        try:
            claims = await self.buffer.claim(keys, self.owner, self.lease_ms)
        except BaseException:
            _close_looks(looked.values())
            raise
        busy: list[EventKey] = []
        mine: list[Claim] = []
        for c in claims:
            if c.status is ClaimStatus.BUSY:
                busy.append(c.key)
            elif c.status is ClaimStatus.WRONGTYPE:
                report.wrong_type.append(c.key.key)
                log.warning("left in Redis: key %r is a %s, not a list", c.key.key, c.detail)
            if c.status in (ClaimStatus.CLAIMED, ClaimStatus.RESUME):
                mine.append(c)
            elif c.key in looked:
                _close_looks([looked.pop(c.key)])
        if not mine:
            return busy
        self._held.update(c.key for c in mine)
        opened: list[_Work] = []
        try:
            unlooked = [c for c in mine if c.key not in looked]
            work = opened = await self._open(unlooked, report) if unlooked else []
            mine_looked = [(c.key, *looked[c.key]) for c in mine if c.key in looked]
            settled, failed = await self._settle(mine_looked, report)
            looked.clear()  # owned by the work now (closed through ``opened``)
            work = opened = work + settled
            await self.buffer.release(failed, self.owner)
            resumed = {c.key for c in mine if c.status is ClaimStatus.RESUME}
            work = await self._repair(work, resumed, report)
            while work:
                work = await self._batch(work, report)
        finally:
            self._close(opened)
            _close_looks(looked.values())
            self._held.difference_update(c.key for c in mine)
        # A resumed claim predates the crash; events stored since then wait in a fresh
        # list under the same key: claim that too, so one pass drains everything there is.
        again = [
            c.key for c in mine if c.status is ClaimStatus.RESUME and c.key.key in report.counted
        ]
        if again:
            busy.extend(await self._drain_group(again, report))
        return busy

    def _count(self, keys: int) -> int:
        """Events a round reads per key when ``keys`` keys share it (see GROUP_EVENTS)."""
        return max(1, min(self.cfg.batch_events, GROUP_EVENTS // max(1, keys)))

    async def _look(self, keys: Sequence[EventKey]) -> list[_Look | Exception]:
        """Each key's file in the file threads (:meth:`LogsDir.find`): locked, busy
        (another process holds its lock) or none yet; or the error that refused it."""
        logs = self._logs

        def look_one(ek: EventKey) -> _Look:
            path = logs.path_for(ek)  # logs_dir normalized once, not per key
            return path, logs.find(path)

        results = await _in_file_threads(look_one, keys, quick=True, discard=_close_look)
        for res in results:
            if isinstance(res, Exception) and not isinstance(res, LogpipeError):
                _close_looks(r for r in results if isinstance(r, tuple))
                raise res
        return results

    @staticmethod
    def _note_failure(ek: EventKey, exc: Exception, report: DrainReport) -> None:
        if isinstance(exc, UnsafeKeyError):
            report.unsafe.append(ek.key)
        elif isinstance(exc, LogpipeError):
            report.errors.append(exc.detail)

    async def _settle(
        self,
        looked: Sequence[tuple[EventKey, Path, LockedFile | UnlockedFile | None]],
        report: DrainReport,
    ) -> tuple[list[_Work], list[EventKey]]:
        """Work for the keys looked at; a busy file is waited for on the event loop
        (:meth:`_lock_later`). Returns the work and the keys left for later (still busy;
        reported, for the caller to release)."""
        work: list[_Work] = []
        waiting: list[tuple[_Work, UnlockedFile]] = []
        for ek, path, file in looked:
            if isinstance(file, UnlockedFile):
                waiting.append((_Work(ek, path, None), file))
            else:
                work.append(_Work(ek, path, file))
        failed: list[EventKey] = []
        if waiting:
            locked, busy = await self._lock_later(waiting)
            work += locked
            for w, f in busy:
                # its holder still runs; give the key back and let a later pass retry
                log.warning("left for later: %s is locked by another process", f.path)
                report.busy.append(w.key.key)
                failed.append(w.key)
        return work, failed

    async def _open(self, claims: Sequence[Claim], report: DrainReport) -> list[_Work]:
        """Look at the files of keys already claimed (see :meth:`_look`); a key whose
        file cannot be opened (or stays locked by another process) is released.

        Nothing is made here: a key's file (and its user directory) is made only when a
        batch has lines for it (:meth:`_batch`), so a key whose values are all
        quarantined leaves no empty file behind. A file another process holds locked is
        waited for on the event loop (:meth:`_lock_later`), not in a file thread, so a
        busy file never takes a thread from the rest of the pass.
        """
        looked: list[tuple[EventKey, Path, LockedFile | UnlockedFile | None]] = []
        failed: list[EventKey] = []
        for c, res in zip(claims, await self._look([c.key for c in claims]), strict=True):
            if isinstance(res, Exception):
                self._note_failure(c.key, res, report)
                failed.append(c.key)
            else:
                looked.append((c.key, *res))
        try:
            work, busy = await self._settle(looked, report)
        except BaseException:
            _close_looks((path, file) for _, path, file in looked)
            raise
        try:
            await self.buffer.release(failed + busy, self.owner)
        except BaseException:
            # Redis failing (or a cancellation) here: the files opened and locked for
            # ``work`` are in no work item of the caller's yet
            self._close(work)
            raise
        return work

    async def _lock_later(
        self, waiting: list[tuple[_Work, UnlockedFile]]
    ) -> tuple[list[_Work], list[tuple[_Work, UnlockedFile]]]:
        """Try the locks of ``waiting`` again, with backoff, for at most twice the lease
        (a holder that never lets go, a stopped process, must not stall the pass for
        good): the keys whose file is now locked, and those still busy (closed).

        Each attempt is one non-blocking ``flock`` on the event loop: waiting holds no
        file thread (issue 9, defect 3: 100 concurrent drains waiting for each other's
        files used to hold every thread)."""
        deadline = time.monotonic() + 2 * self.cfg.lease_seconds
        delay, longest = LOCK_RETRY_S
        locked: list[_Work] = []
        try:
            while True:
                still: list[tuple[_Work, UnlockedFile]] = []
                for w, f in waiting:
                    file = f.try_lock()
                    if file is None:
                        still.append((w, f))
                    else:
                        w.file = file
                        locked.append(w)
                waiting = still
                if not waiting or time.monotonic() + delay > deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
        except BaseException:
            # cancelled (a second signal, DrainRunner.aclose) or an error: a lock kept by
            # a leaked descriptor would make this key busy for as long as the process runs
            self._close(locked)
            for _, f in waiting:
                f.close()  # those locked meanwhile are spent: a no-op
            raise
        for _, f in waiting:
            f.close()
        return locked, waiting

    async def _repair(
        self, work: list[_Work], resumed: set[EventKey], report: DrainReport
    ) -> list[_Work]:
        """For resumed claims: under the file lock, confirm the lease, undo the torn append.

        A pending offset that :func:`check_offset` does not trust leaves the claim in
        Redis (lease given back), reported in ``unsafe`` with the reason.
        """
        todo = [w for w in work if w.key in resumed]
        if not todo:
            return work
        pending = await self.buffer.prepare([w.key for w in todo], self.owner, self.lease_ms)
        lost: set[EventKey] = set()
        refused: list[EventKey] = []
        for w, p in zip(todo, pending, strict=True):
            if p.pending is Pending.LOST:
                lost.add(w.key)
                continue
            if p.pending is Pending.CLEAN:
                continue
            try:
                off = await _in_file_thread(check_offset, p, w.file)
            except _Refused as exc:
                log.warning("left in Redis: claim of %r: %s", w.key.key, exc.reason)
                report.unsafe.append(f"{w.key.key} (claim refused: {exc.reason})")
                refused.append(w.key)
                continue
            except OSError as exc:
                report.errors.append(f"cannot read {w.path}: {exc.strerror or exc}")
                lost.add(w.key)
                continue
            if w.file is not None and off < w.file.size:
                log.info(
                    "repairing %s: cutting %d unacknowledged bytes", w.file.path, w.file.size - off
                )
                file = w.file
                try:
                    await _in_file_thread(file.truncate, off)
                except LogpipeError as exc:
                    report.errors.append(exc.detail)
                    lost.add(w.key)
        if refused:
            await self.buffer.release(refused, self.owner)
        return self._drop(work, lost.union(refused))

    async def _batch(self, work: list[_Work], report: DrainReport) -> list[_Work]:
        """One begin/append/ack round for every key in ``work``; returns keys with more.

        A key with no file yet gets one here, made together with its first append (see
        :meth:`LogsDir.write_new`), and none at all if nothing is to be written.
        Before any ack, what was written is durable with its name: the file and its
        directory fsynced by the append, ``logs_dir`` once for the round's new user
        directories.
        """
        began = await self.buffer.begin(
            [BeginItem(w.key, w.size) for w in work],
            self.owner,
            self.lease_ms,
            self._count(len(work)),
        )
        done: set[EventKey] = set()
        writing: list[_Append] = []
        for w, b in zip(work, began, strict=True):
            values = b.values
            if not values:  # lease lost or nothing left
                done.add(w.key)
                continue
            good, bad, data = split_safely(values)
            writing.append(_Append(w, len(values), len(good), bad, data))
            values.clear()  # let go of as soon as checked (see _Append); ``good`` too
            if bad:
                log.warning(
                    "quarantined %d values of %s that are not one-line JSON objects",
                    len(bad),
                    w.key.key,
                )

        logs = self._logs
        # many files: one syncfs after the round's writes, opened before them, rather
        # than two fsyncs per file (see logpipe_cli.durable); else each file's fsync
        barrier = self._barrier(len(writing))
        fsync = self.cfg.fsync and barrier is None

        def append(a: _Append) -> NewFile | None:
            file = a.work.file
            if file is None:
                # nothing to write: no file is made (all of it quarantined)
                return logs.write_new(a.work.path, a.data, fsync=fsync) if a.data else None
            if a.data:
                file.append(a.data, fsync=fsync)
            return None

        acks: list[_Append] = []
        failed: list[EventKey] = []
        again: list[tuple[_Work, UnlockedFile]] = []
        #: files that were there by the time this round made them: see below
        appeared: set[EventKey] = set()
        made = False
        try:
            results = await _in_file_threads(append, writing, discard=_close_new)
            for a, res in zip(writing, results, strict=True):
                if isinstance(res, LogpipeError):
                    report.errors.append(res.detail)
                    failed.append(a.work.key)
                elif isinstance(res, BaseException):
                    for r in results:
                        if isinstance(r, NewFile):
                            r.file.close()
                    raise res
                elif res is None:
                    acks.append(a)
                else:
                    made = made or res.made
                    if res.written:
                        assert isinstance(res.file, LockedFile)
                        a.work.file = res.file
                        acks.append(a)
                    else:
                        appeared.add(a.work.key)
                        if isinstance(res.file, LockedFile):
                            a.work.file = res.file
                        else:
                            again.append((a.work, res.file))
        except BaseException:
            if barrier is not None:
                barrier.close()
            raise
        if acks and (made or barrier is not None):
            # the syncfs's thread closes the barrier (Barrier.close leaves it to it)
            sync = logs.sync if barrier is None else functools.partial(logs.sync, barrier)
            try:
                await _in_file_thread(sync, quick=True)
            except LogpipeError as exc:
                report.errors.append(exc.detail)
                failed.extend(a.work.key for a in acks)
                acks = []
            except BaseException:
                # cancelled: the files held to wait for below are in no work item
                for _, f in again:
                    _close_quietly(f)
                if barrier is not None:
                    barrier.close()  # if its syncfs never started
                raise
            else:
                report.synced_rounds += barrier is not None
        if barrier is not None:
            barrier.close()  # closed by its syncfs; or nothing to acknowledge, no syncfs
        if again:
            # locked by another process when this one went to make it: wait for it on
            # the event loop (then it is handled as below)
            _, busy = await self._lock_later(again)
            for w, f in busy:
                log.warning("left for later: %s is locked by another process", f.path)
                report.busy.append(w.key.key)
                failed.append(w.key)
        if failed:
            # Events stay in Redis; another pass (or drainer) retries once the disk is back.
            with contextlib.suppress(LogpipeError):
                await self.buffer.release(failed, self.owner)
            done.update(failed)
        replies = await self.buffer.ack([a.ack_item() for a in acks], self.owner, self.lease_ms)
        for a, acked in zip(acks, replies, strict=True):
            key = a.work.key
            if acked.lease == "lost":
                log.warning("lost the lease on %s; its new holder repairs the file", key.key)
                done.add(key)
                continue
            report.events += a.written
            report.bytes += len(a.data)
            report.quarantined += len(a.bad)
            if acked.left == 0:
                report.count_key(key.key)
                done.add(key)
        # closed in a file thread: a close on the event loop's thread waits for the GIL
        # against the file threads, once per key (py-spy of 20,000 small keys)
        # (handed over: the thread alone closes them, even if this task is cancelled).
        # Not waited for here: the keys are acknowledged, and the group goes on (its next
        # round, or the worker's next group) instead of queueing behind the other
        # groups' appends in the file threads until its closes have run; the pass waits
        # for every close before it returns (see _drain_once).
        files: list[LockedFile] = []
        for w in work:
            if w.key in done and w.file is not None:
                files.append(w.file)
                w.file = None
        if files:
            self._closing = [f for f in self._closing if not f.done()]
            self._closing.append(_close_in_file_threads(files))
        work = [w for w in work if w.key not in done]
        if appeared:
            # A file made between this round's look (none there, looked at once the
            # key was claimed: a file made before the claim would have been seen) and
            # its append. By a drainer that took the key over while this one paused:
            # then our lease is
            # gone and PREPARE says so. Or by the drainer this one took the key over
            # from, waking with an append it never acknowledged: then its bytes are cut
            # back to the offset our BEGIN recorded, as a resumed claim's are; never
            # written after (that would deliver its batch twice).
            work = await self._repair(work, appeared - done, report)
        return work

    def _barrier(self, files: int) -> Barrier | None:
        """A :class:`Barrier` for a round that writes ``files`` files, if it is to be made
        durable by one ``syncfs`` (fsync on, enough files, ``drainer.sync`` allowing it
        here); None: each file is fsynced."""
        if not self.cfg.fsync or files < durable.MIN_FILES:
            return None
        return Barrier.open(str(self._root), self.cfg.sync)

    def _drop(self, work: list[_Work], keys: set[EventKey]) -> list[_Work]:
        """Close (and so unlock) the files of ``keys``; the rest carry on."""
        self._close([w for w in work if w.key in keys])
        return [w for w in work if w.key not in keys]

    @staticmethod
    def _close(work: Sequence[_Work]) -> None:
        for w in work:
            _close_quietly(w.file)

    # ---- the loop ------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event,
        interval_s: float,
        on_report: Callable[[DrainReport], None] | None = None,
    ) -> None:
        """Drain every ``interval_s`` until ``stop`` is set, finishing the pass in hand.

        Failures (Redis down, disk full) are reported and retried with backoff; events
        stay in Redis meanwhile.
        """
        backoff = 0.0
        while not stop.is_set():
            report = await self.drain_once(wait_for_busy=False)
            if on_report is not None:
                on_report(report)
            if report.ok:
                backoff = 0.0
                wait = interval_s
            else:
                backoff = min(30.0, max(interval_s, backoff * 2 or 1.0))
                wait = backoff
                log.error("drain failed (%s); retrying in %.1f s", report.errors[0], wait)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
