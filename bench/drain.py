"""The drain figures: logpipe's ``Drainer.drain_once()`` against a raw read + append + fsync.

Both start from the same state: ``events`` events over ``keys`` lists loaded straight
into Redis (raw RESP on one socket, one ``RPUSH`` per list), ``logpipe:stats`` saying so.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import redis

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.drainer import Drainer
from logpipe_cli.settings import load_settings

#: the day all loaded events belong to (any canonical day works; files are per day)
DAY = 20000
BATCH = 10_000


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def user_key(i: int) -> str:
    return keys.event_key(f"user_{i:03d}", DAY)


def load(port: int, *, events: int, nkeys: int) -> float:
    """Fill ``nkeys`` lists with ``events`` valid events in all; returns the seconds taken."""
    start = time.perf_counter()
    per_key = events // nkeys
    ts = DAY * 86400  # the events' own day is the lists' day, as the API would route them
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for i in range(nkeys):
            uid = f"user_{i:03d}".encode()
            values = [
                b'{"user_id":"%s","event":"visited","timestamp":%d}' % (uid, ts + n)
                for n in range(per_key)
            ]
            sock.sendall(_resp(b"RPUSH", user_key(i).encode(), *values))
        sock.sendall(_resp(b"HSET", keys.STATS.encode(), b"buffered", str(events).encode()))
        replies = b""
        while replies.count(b"\r\n") < nkeys + 1:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection while loading")
            replies += chunk
    if any(line.startswith(b"-") for line in replies.split(b"\r\n")):
        raise RuntimeError(f"redis refused the load: {replies[:200]!r}")
    return time.perf_counter() - start


def count_lines(root: Path) -> tuple[int, int]:
    lines = nbytes = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            data = Path(dirpath, name).read_bytes()
            lines += data.count(b"\n")
            nbytes += len(data)
    return lines, nbytes


async def logpipe_drain(
    port: int, logs_dir: Path, *, events: int, on_disk: int = 0
) -> dict[str, Any]:
    """Time one ``drain_once()`` (fsync on) over what :func:`load` put in Redis.

    ``on_disk`` is how many lines the files under ``logs_dir`` held before.
    """
    settings = load_settings(
        {
            "redis": {"url": f"redis://127.0.0.1:{port}"},
            "drainer": {"logs_dir": str(logs_dir), "fsync": True},
        },
        {},
    )
    client = connect(settings.redis)
    try:
        drainer = Drainer(Buffer(client, settings.redis), settings.drainer)
        start = time.perf_counter()
        report = await drainer.drain_once()
        seconds = time.perf_counter() - start
    finally:
        await client.aclose()
    lines, nbytes = count_lines(logs_dir)
    if not report.ok or lines != on_disk + events or report.events != events:
        raise RuntimeError(
            f"drain moved {report.events} events ({lines} lines on disk) of {events}: "
            f"{report.errors[:3]}"
        )
    return {
        "events": report.events,
        "files": report.files,
        "bytes": nbytes,
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds, 1),
    }


def raw_drain(port: int, out_dir: Path, *, events: int, nkeys: int) -> dict[str, Any]:
    """The ceiling: LPOP 10k at a time (pipelined per 100 keys), append, fsync each file."""
    client = redis.Redis(port=port)
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    moved = 0
    start = time.perf_counter()
    try:
        names = [user_key(i) for i in range(nkeys)]
        todo = names
        while todo:
            more: list[str] = []
            for g in range(0, len(todo), 100):
                group = todo[g : g + 100]
                pipe = client.pipeline(transaction=False)
                for name in group:
                    pipe.lpop(name, BATCH)
                for name, values in zip(group, pipe.execute(), strict=True):
                    if not values:
                        continue
                    fd = os.open(out_dir / f"{name.replace(':', '_')}.jsonl", flags, 0o644)
                    try:
                        os.write(fd, b"\n".join(values) + b"\n")
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    moved += len(values)
                    if len(values) == BATCH:
                        more.append(name)
            todo = more
        seconds = time.perf_counter() - start
    finally:
        client.close()
    if moved != events:
        raise RuntimeError(f"raw drain moved {moved} of {events} events")
    return {
        "events": moved,
        "seconds": round(seconds, 4),
        "events_per_s": round(moved / seconds, 1),
    }
