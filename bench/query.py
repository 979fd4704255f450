"""``python -m bench.query [--events N]``: read one user's day back through ``EventReader``.

The day holds ``events`` events, all but the last 1,000 drained into its file (the rest
still buffered in Redis, so both halves of a day stream are read). Measured, each in a
fresh child process so its peak RSS (``VmHWM``) is the query's own:

- the first page (100 events, oldest first) and the first page newest first (which reads
  the whole day, keeping 101 events);
- the full export as NDJSON (``EventReader.export``), events/s.

Peak RSS is shown above the child's RSS after its imports (``VmHWM`` before the query).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.procs import Procs, free_port, need, wait_redis
from logpipe_cli.buffer import Buffer
from logpipe_cli.drainer import Drainer
from logpipe_cli.keys import EventKey
from logpipe_cli.query import MAX_EXPORT_LIMIT, EventReader, Query
from logpipe_cli.settings import load_settings

DAY = 20000
USER = "bench"
BUFFERED = 1000


def _line(n: int) -> bytes:
    body = {"user_id": USER, "event": f"page_view_{n % 7}", "timestamp": DAY * 86400 + n % 86400}
    return json.dumps({**body, "path": f"/item/{n}", "ms": n % 997}).encode()


def _settings(port: int, logs: Path) -> Any:
    return load_settings(
        {"redis": {"url": f"redis://127.0.0.1:{port}/0"}, "drainer": {"logs_dir": str(logs)}}, {}
    )


def load(port: int, logs: Path, events: int) -> None:
    """Store ``events`` events of one user's day: drained but the last BUFFERED."""
    key = EventKey(USER, DAY).key
    client = redis.Redis(port=port)
    try:
        for start in range(0, events, 10_000):
            client.rpush(key, *(_line(n) for n in range(start, min(events, start + 10_000))))
        client.hset("logpipe:stats", "buffered", events)
    finally:
        client.close()
    cfg = _settings(port, logs)

    async def drain() -> None:
        async with Buffer.connect(cfg.redis) as buffer:
            await Drainer(buffer, cfg.drainer).drain_once()
            lines = [(key, _line(n)) for n in range(events, events + BUFFERED)]
            await buffer.append(lines)

    asyncio.run(drain())


def _hwm_kb() -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1])
    return 0


def measure(port: int, logs: Path, what: str) -> dict[str, Any]:
    """In this process: run one query (``first``, ``first_desc`` or ``export``)."""
    cfg = _settings(port, logs)
    now = (DAY + 1) * 86400.0
    base_kb = _hwm_kb()

    async def go() -> dict[str, Any]:
        async with Buffer.connect(cfg.redis) as buffer:
            reader = EventReader(buffer, logs, clock=lambda: now)
            start = time.perf_counter()
            if what == "export":
                q = Query.parse(USER, limit=MAX_EXPORT_LIMIT, max_limit=MAX_EXPORT_LIMIT)
                n = nbytes = 0
                async for chunk in reader.export(q):
                    nbytes += len(chunk)
                    n += chunk.count(b"\n")
                n -= 1  # the closing {"next_cursor": ...} line
            else:
                order = "desc" if what == "first_desc" else "asc"
                page = await reader.page(Query.parse(USER, limit=100, order=order))
                n, nbytes = len(page.events), sum(len(f.raw) for f in page.events)
            seconds = time.perf_counter() - start
        return {"events": n, "bytes": nbytes, "seconds": seconds}

    result = asyncio.run(go())
    return {**result, "rss_base_kb": base_kb, "rss_peak_kb": _hwm_kb()}


def run(port: int, tmp: Path, events: int) -> dict[str, Any]:
    """Load the day, then time each query in a child process of its own."""
    logs = tmp / "query-logs"
    load(port, logs, events)
    out: dict[str, Any] = {"events": events + BUFFERED, "file_bytes": 0}
    out["file_bytes"] = (logs / f"user_{USER}" / f"{DAY}.jsonl").stat().st_size
    for what in ("first", "first_desc", "export"):
        argv = [sys.executable, "-m", "bench.query", "--measure", what, "--port", str(port)]
        proc = subprocess.run(
            [*argv, "--logs", str(logs)], check=True, capture_output=True, text=True
        )
        out[what] = json.loads(proc.stdout)
    return out


def table(r: dict[str, Any]) -> str:
    rows = [f"one user's day: {r['events']:,} events, file {r['file_bytes'] / 2**20:.1f} MiB"]
    for what, label in (
        ("first", "first page (100, asc)"),
        ("first_desc", "first page (100, desc)"),
        ("export", "full export (NDJSON)"),
    ):
        m = r[what]
        rate = f"{m['events'] / m['seconds']:,.0f} events/s" if what == "export" else ""
        rows.append(
            f"  {label:<24} {m['seconds'] * 1000:>9,.1f} ms  {rate:>18}  "
            f"peak RSS {m['rss_peak_kb'] / 1024:,.1f} MiB "
            f"(+{(m['rss_peak_kb'] - m['rss_base_kb']) / 1024:,.1f} over imports)"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--measure", choices=("first", "first_desc", "export"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--logs", type=Path)
    args = parser.parse_args()
    if args.measure:  # the child: one query, its figures as JSON
        print(json.dumps(measure(args.port, args.logs, args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-query-") as name:
        tmp = Path(name)
        procs = Procs(tmp)
        try:
            port = free_port()
            (tmp / "redis").mkdir()
            proc = procs.start(
                "redis-server",
                [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", str(tmp / "redis"), "--save", "", "--appendonly", "no"],
            )  # fmt: skip
            wait_redis(port, proc)
            result = run(port, tmp, args.events - BUFFERED)
        finally:
            procs.stop_all()
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
