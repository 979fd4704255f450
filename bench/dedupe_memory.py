"""``python -m bench.dedupe_memory [--ids N]``: what the dedupe window costs Redis per id.

Starts its own redis-server (free port, temp dir, no persistence) and, for each spread of
users, fills the id sets exactly as the APPEND script does (``SADD`` of the client's
32-hex-digit ids into ``keys.id_set(user, bucket)`` with its ``EXPIREAT``), reading
``INFO memory``'s ``used_memory`` before and after. Prints bytes per id and per million.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.procs import Procs, free_port, need, wait_redis
from logpipe_cli import keys
from logpipe_cli.appclient import new_event_id

WINDOW_S = 86400
BATCH = 10_000


def fill(client: redis.Redis, ids: int, users: int) -> None:
    bucket = int(time.time() // WINDOW_S)
    expire_at = (bucket + 2) * WINDOW_S
    sets = [keys.id_set(f"user_{u:06d}", bucket) for u in range(users)]
    for start in range(0, ids, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(ids, start + BATCH)):
            pipe.sadd(sets[i % users], new_event_id())
        pipe.execute()
    pipe = client.pipeline(transaction=False)
    for key in sets:
        pipe.expireat(key, expire_at)
    pipe.execute()


def measure(port: int, ids: int, users: int) -> dict[str, float]:
    client = redis.Redis(port=port)
    try:
        client.flushall()
        before = int(client.info("memory")["used_memory"])
        fill(client, ids, users)
        after = int(client.info("memory")["used_memory"])
        per_id = (after - before) / ids
        return {
            "ids": ids,
            "users": users,
            "bytes_per_id": round(per_id, 1),
            "mb_per_million_ids": round(per_id * 1_000_000 / 2**20, 1),
        }
    finally:
        client.flushall()
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dedupe_memory")
    p.add_argument("--ids", type=int, default=1_000_000, help="ids per measurement")
    p.add_argument("--users", default="1,1000,100000", help="comma-separated user counts")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="logpipe-dedupe-mem-"))
    procs = Procs(tmp)
    try:
        port = free_port()
        proc = procs.start(
            "redis-server",
            [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--dir", str(tmp), "--save", "", "--appendonly", "no"],
        )  # fmt: skip
        wait_redis(port, proc)
        rows = [measure(port, args.ids, int(u)) for u in args.users.split(",")]
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
