"""The drain figures: ``Drainer.drain_once()`` against raw loops that do the same file work.

Every figure starts from the same state: ``nkeys`` lists of ``per_key`` valid events
loaded straight into Redis (raw RESP, pipelined), ``logpipe:stats`` saying so. The
drainer runs in a child process (:mod:`bench.drain_child`) so its peak RSS is its own
and a profile, when asked for, covers exactly one pass.

The ceilings:

- :func:`raw_new_files` (many small keys): a plain loop in 16 threads that makes the
  same user directories and files, appends the same bytes, fsyncs the file and its
  directory, and ``logs_dir`` once per 256 files (the drainer's group: the new user
  directories' names durable too). No Redis at all: it is what the disk and the kernel
  allow.

Each timed run, ceiling or drain, starts with :func:`settle`: what the steps before it
left unwritten (the load's AOF, the previous run's files) is written back first, so no
run pays for another's metadata in its first journal commits.

Fresh trees: each timed run writes into a directory of its own and nothing is deleted
until the bench is over (:mod:`bench.run`). On ext4 without a journal (this project's
machines, 2026-12-02) a new inode is not taken from those freed in the last 60-300 s:
each ``mkdir`` and ``open(O_CREAT)`` walks past them (``recently_deleted`` in
``find_inode_bit``, 28 % of all CPU samples in ``perf`` while a loop made files after
a tree was deleted, ``bench/results/perf-recently-deleted.txt``). Deleting the last
run's 100,000 directories before the next made ``mkdir`` cost 600-700 us instead of
30-100, and the figures of both sides swung by 2x from run to run.
- :func:`raw_drain` (few large keys): LPOP 10,000 at a time (pipelined per 100 keys),
  into the same ``user_<id>/<day>.jsonl`` files (directory made and fsynced when new),
  append, fsync; one thread, no validation.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench.procs import BenchError
from logpipe_cli import keys

#: the day all loaded events belong to (any canonical day works; files are per day)
DAY = 20000
#: LPOP count of the raw loop, the drainer's default batch_events
BATCH = 10_000
#: threads of the raw new-file loop (the drainer's file threads are as many)
RAW_THREADS = 16
#: files per fsync of the raw loop's root: the drainer fsyncs logs_dir once per group
#: (logpipe_cli.drainer.GROUP_SIZE) for the user directories it made
RAW_GROUP = 256
_CMDS_PER_WRITE = 500


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def user_id(i: int) -> str:
    return f"u{i:06d}"


def user_key(i: int) -> str:
    return keys.event_key(user_id(i), DAY)


def event(i: int, n: int) -> bytes:
    """The ``n``-th event of user ``i``: ~60 bytes, as the API stores one."""
    return b'{"user_id":"%s","event":"visited","timestamp":%d}' % (
        user_id(i).encode(),
        DAY * 86400 + n,
    )


def file_bytes(i: int, per_key: int) -> bytes:
    return b"".join(event(i, n) + b"\n" for n in range(per_key))


def expected_bytes(nkeys: int, per_key: int) -> int:
    return sum(len(file_bytes(i, per_key)) for i in range(nkeys))


def _read_replies(sock: socket.socket, n: int) -> None:
    """Read ``n`` one-line replies (integers or errors); raise on an error reply."""
    buf = b""
    seen = 0
    while seen < n:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("redis closed the connection while loading")
        buf += chunk
        lines = buf.split(b"\r\n")
        buf = lines.pop()
        for line in lines:
            if line.startswith(b"-"):
                raise BenchError(f"redis refused the load: {line[:200]!r}")
        seen += len(lines)


def load(port: int, *, nkeys: int, per_key: int) -> float:
    """Fill ``nkeys`` lists with ``per_key`` events each; returns the seconds taken."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for first in range(0, nkeys, _CMDS_PER_WRITE):
            last = min(nkeys, first + _CMDS_PER_WRITE)
            chunk = [
                _resp(b"RPUSH", user_key(i).encode(), *(event(i, n) for n in range(per_key)))
                for i in range(first, last)
            ]
            sock.sendall(b"".join(chunk))
            _read_replies(sock, last - first)
        total = str(nkeys * per_key).encode()
        sock.sendall(_resp(b"HSET", keys.STATS.encode(), b"buffered", total))
        _read_replies(sock, 1)
    return time.perf_counter() - start


def wait_aof_rewrite(port: int, timeout_s: float = 120.0) -> None:
    """Wait until no AOF rewrite runs or is scheduled: a load can trigger one, and a
    fork writing 100 MB in the middle of a figure measures the rewrite, not the drain."""
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            info = client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            if time.monotonic() > deadline:
                raise BenchError("an AOF rewrite did not finish within {timeout_s:.0f} s")
            time.sleep(0.05)
    finally:
        client.close()


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``."""
    files = nbytes = 0
    for d in os.scandir(root):
        if d.is_dir(follow_symlinks=False):
            for f in os.scandir(d.path):
                files += 1
                nbytes += f.stat(follow_symlinks=False).st_size
    return files, nbytes


def settle() -> None:
    """Write back everything dirty before a timed run (``sync``). Without it a run
    started with what the step before left in the page cache and the journal: the
    raw loop right after the previous drain's :func:`remove` (100,000 directories
    deleted), a drain right after the load (the AOF), each paying for the other's
    write-back in its first fsyncs, by amounts that depend on timing."""
    os.sync()


def remove(path: Path) -> None:
    """Delete a tree, 16 threads at once over what lies two levels down (a logs tree's
    files, or the user directories of the bench's run trees: see "Fresh trees"): one
    thread took longer to delete 100,000 directories than to drain them."""
    if not path.exists():
        return
    below = [
        inner.path
        for outer in os.scandir(path)
        if outer.is_dir(follow_symlinks=False)
        for inner in os.scandir(outer.path)
    ]
    with ThreadPoolExecutor(RAW_THREADS) as pool:
        for _ in pool.map(_remove_one, below, chunksize=256):
            pass
    shutil.rmtree(path, ignore_errors=True)


def _remove_one(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---- logpipe ---------------------------------------------------------------------------


def logpipe_drain(
    port: int,
    logs_dir: Path,
    *,
    nkeys: int,
    per_key: int,
    on_disk: int = 0,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One ``drain_once()`` (fsync on) in a child process over what :func:`load` stored.

    ``on_disk`` is how many bytes the files under ``logs_dir`` held before. Checks that
    every event reached its file, once: the bytes on disk are what was loaded.
    """
    argv = [sys.executable, "-m", "bench.drain_child", str(port), str(logs_dir)]
    if profile is not None:
        argv += ["--profile", str(profile)]
    root = Path(__file__).resolve().parent.parent
    settle()
    out = subprocess.run(
        argv, cwd=root, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
    )
    if out.returncode != 0:
        raise BenchError(f"drain child exited with {out.returncode}: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    events = nkeys * per_key
    files, nbytes = tree_size(logs_dir)
    want = on_disk + expected_bytes(nkeys, per_key)
    if not result["ok"] or result["events"] != events or nbytes != want or files != nkeys:
        raise BenchError(
            f"drain moved {result['events']} events of {events} ({files} files, {nbytes} B "
            f"on disk, expected {want}): {result['errors'][:3]}"
        )
    seconds = result["seconds"]
    return {
        "events": events,
        "keys": nkeys,
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds, 1),
        "keys_per_s": round(nkeys / seconds, 1),
        "peak_rss_mb": result["peak_rss_mb"],
        "cpu_s": result["cpu_s"],
    }


# ---- the ceilings ----------------------------------------------------------------------


def _chunks(n: int, size: int) -> Iterator[range]:
    for first in range(0, n, size):
        yield range(first, min(n, first + size))


def raw_new_files(root: Path, *, nkeys: int, per_key: int) -> dict[str, Any]:
    """The many-keys ceiling: per key, in 16 threads, make ``user_<id>/``, create
    ``<day>.jsonl``, append its events, fsync the file and the directory; and fsync
    ``root`` after every 256th file (as the drainer does once per group of keys)."""
    root.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    data = [file_bytes(i, per_key) for i in range(nkeys)]  # made before the clock starts
    last = nkeys - 1

    def one(i: int) -> None:
        d = root / f"user_{user_id(i)}"
        d.mkdir(0o750)
        fd = os.open(d / f"{DAY}.jsonl", flags, 0o640)
        try:
            os.write(fd, data[i])
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if i % RAW_GROUP == RAW_GROUP - 1 or i == last:
            rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(rfd)
            finally:
                os.close(rfd)

    seconds = _timed(one, range(nkeys), threads=RAW_THREADS, chunksize=64)
    return _files_figures(nkeys, per_key, seconds)


def raw_new_files_syncfs(root: Path, *, nkeys: int, per_key: int) -> dict[str, Any]:
    """A reference beside :func:`raw_new_files`, not the target's ceiling: the same files
    made durable as the drainer now makes a round of many (``drainer.sync = "auto"``):
    groups of 256 files, three at once, each group's files made and written in one
    thread (no fsync), then one ``syncfs`` on a descriptor of ``root`` opened before the
    group wrote. (16 threads per group were slower: 2,800-3,400 files/s against
    3,900-4,300 in paired runs of 20,000 files.)"""
    root.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    data = [file_bytes(i, per_key) for i in range(nkeys)]
    libc = ctypes.CDLL(None, use_errno=True)

    def group(first: int) -> None:
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(first, min(nkeys, first + RAW_GROUP)):
                d = root / f"user_{user_id(i)}"
                d.mkdir(0o750)
                fd = os.open(d / f"{DAY}.jsonl", flags, 0o640)
                try:
                    os.write(fd, data[i])
                finally:
                    os.close(fd)
            if libc.syncfs(rfd) != 0:
                raise OSError(ctypes.get_errno(), "syncfs")
        finally:
            os.close(rfd)

    seconds = _timed(group, range(0, nkeys, RAW_GROUP), threads=3, chunksize=1)
    return _files_figures(nkeys, per_key, seconds)


def _timed(fn: Callable[[int], None], items: range, *, threads: int, chunksize: int) -> float:
    """Seconds ``fn`` takes over ``items`` in ``threads`` threads, after a :func:`settle`."""
    settle()
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items, chunksize=chunksize):
            pass
    return time.perf_counter() - start


def _files_figures(nkeys: int, per_key: int, seconds: float) -> dict[str, Any]:
    return {
        "files": nkeys,
        "events": nkeys * per_key,
        "seconds": round(seconds, 4),
        "events_per_s": round(nkeys * per_key / seconds, 1),
        "keys_per_s": round(nkeys / seconds, 1),
    }


def raw_drain(port: int, root: Path, *, nkeys: int, per_key: int) -> dict[str, Any]:
    """The few-large-keys ceiling: LPOP 10k at a time (pipelined per 100 keys) into the
    same files, append, fsync (and fsync the directory of a file it made)."""
    client = redis.Redis(port=port)
    root.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    moved = 0
    settle()
    start = time.perf_counter()
    try:
        todo = list(range(nkeys))
        while todo:
            more: list[int] = []
            for group in _chunks(len(todo), 100):
                ids = [todo[j] for j in group]
                pipe = client.pipeline(transaction=False)
                for i in ids:
                    pipe.lpop(user_key(i), BATCH)
                for i, values in zip(ids, pipe.execute(), strict=True):
                    if not values:
                        continue
                    d = root / f"user_{user_id(i)}"
                    path = d / f"{DAY}.jsonl"
                    try:
                        fd, made = os.open(path, flags), False
                    except FileNotFoundError:
                        d.mkdir(0o750, exist_ok=True)
                        fd, made = os.open(path, flags | os.O_CREAT, 0o640), True
                    try:
                        os.write(fd, b"\n".join(values) + b"\n")
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    if made:
                        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                        try:
                            os.fsync(dfd)
                        finally:
                            os.close(dfd)
                    moved += len(values)
                    if len(values) == BATCH:
                        more.append(i)
            todo = more
        seconds = time.perf_counter() - start
    finally:
        client.close()
    if moved != nkeys * per_key:
        raise BenchError(f"raw drain moved {moved} of {nkeys * per_key} events")
    return {
        "events": moved,
        "seconds": round(seconds, 4),
        "events_per_s": round(moved / seconds, 1),
    }
