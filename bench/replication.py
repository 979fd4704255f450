"""What `WAIT` costs: ingest events/s into one Redis, and into a Sentinel master with
``redis.min_replicas`` 0 and 1, in the same run.

In-process (the write path without HTTP): ``CONCURRENCY`` tasks each store one event at a
time through one :class:`GroupCommitter`, as the API's requests do, for ``SECONDS`` per
setup. The Sentinel setup (1 master, 2 replicas, 3 Sentinels on this machine) is the test
fixture's. On a 2-core box the replicas compete with the client for CPU, so the figure to
read is the cost per event of ``WAIT`` relative to no ``WAIT``, not the absolute rate.

    python -m bench.replication [SECONDS]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from logpipe_cli.buffer import Buffer
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.keys import event_key
from logpipe_cli.settings import RedisSettings, load_settings
from tests.redis_sentinel import MASTER_NAME, SentinelSetup
from tests.redis_server import RedisServer

CONCURRENCY = 64
DAY = 20000


async def rate(cfg: RedisSettings, seconds: float) -> float:
    """Events stored per second by CONCURRENCY one-event writers."""
    stored = 0
    async with Buffer.connect(cfg) as buffer:
        committer = GroupCommitter(buffer, retry_s=cfg.write_retry_seconds)
        deadline = time.monotonic() + seconds

        async def writer(n: int) -> None:
            nonlocal stored
            key = event_key(f"u{n}", DAY)
            line = b'{"user_id":"u%d","event":"e","timestamp":%d}' % (n, DAY * 86400)
            while time.monotonic() < deadline:
                await committer.append([(key, line)])
                stored += 1

        start = time.monotonic()
        await asyncio.gather(*(writer(n) for n in range(CONCURRENCY)))
        return stored / (time.monotonic() - start)


def settings(**redis_cfg: Any) -> RedisSettings:
    return load_settings({"redis": {"max_buffered_events": 0, **redis_cfg}}, {}).redis


def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        single = RedisServer(Path(tmp) / "single")
        single.start()
        setup = SentinelSetup(Path(tmp) / "sentinel")
        try:
            setup.start()
            sentinel = {
                "mode": "sentinel",
                "sentinels": setup.sentinel_addresses,
                "sentinel_master": MASTER_NAME,
            }
            runs = {
                "standalone": settings(url=single.url),
                "sentinel, min_replicas 0": settings(**sentinel),
                "sentinel, min_replicas 1": settings(**sentinel, min_replicas=1),
                "sentinel, min_replicas 2": settings(**sentinel, min_replicas=2),
            }
            figures = {name: asyncio.run(rate(cfg, seconds)) for name, cfg in runs.items()}
        finally:
            setup.stop()
            single.stop()
    base = figures["sentinel, min_replicas 0"]
    print(f"ingest through GroupCommitter, {CONCURRENCY} writers, {seconds:g} s each")
    for name, per_s in figures.items():
        extra = 1e6 / per_s - 1e6 / base
        waits = "min_replicas" in name and "min_replicas 0" not in name
        note = f"  WAIT adds {extra:+.1f} us/event" if waits else ""
        print(f"  {name:<26} {per_s:>10,.0f} events/s  {1e6 / per_s:6.1f} us/event{note}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
