"""What Redis Cluster and ``WAIT`` cost per event: ingest and drain events/s against one
Redis and against a 3-master cluster, with ``redis.min_replicas`` 0 and 1, in the same run.

Four setups, all on this machine, every redis-server with AOF (``appendfsync always``, as
the test fixtures run it):

- ``standalone``: one redis-server;
- ``standalone + replica, min_replicas 1``: the same with one replica and ``WAIT 1``;
- ``cluster, min_replicas 0`` / ``1``: 3 masters + 3 replicas (tests/redis_cluster.py).

Per setup and repetition, after emptying Redis and ``logs_dir``:

- *ingest*: ``CONCURRENCY`` tasks each store one event at a time through one
  :class:`GroupCommitter` (the API's write path without HTTP), each task its own user, so
  a flush spans up to ``CONCURRENCY`` keys (in cluster mode: as many slots, over all
  three masters, one script each), for ``--seconds``;
- *ingest100*: ``BATCH_WRITERS`` tasks each store ``BATCH`` events of its own user at a
  time (a ``POST /logs`` body of one user): one slot per request;
- *drain*: ``NKEYS`` x ``PER_KEY`` events stored through :meth:`Buffer.append` (so the
  counters are right in every mode), then one ``Drainer.drain_once()`` with fsync into new
  files, timed.

The repetitions interleave the setups (a change of load on a shared box hits all of them)
and the median is printed with its spread. On a 2-core machine the six cluster nodes, the
replicas and the client share two cores, so the cluster cannot be faster; the figure to
read is each setup's cost per event (µs) relative to standalone. README "Scaling out" has
the model of how throughput grows with masters on separate machines.

    python -m bench.cluster [--seconds S] [--reps N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from logpipe_cli.buffer import Buffer
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.drainer import Drainer
from logpipe_cli.keys import event_key
from logpipe_cli.settings import Settings, load_settings
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer

CONCURRENCY = 64
#: writers of the batched ingest figure, each BATCH events of its own user at a time
BATCH_WRITERS = 16
BATCH = 100
DAY = 20000
NKEYS = 200
PER_KEY = 250
#: events per Buffer.append while loading the drain figure
LOAD_CHUNK = 2000


def line(user: int, n: int) -> bytes:
    return b'{"user_id":"u%d","event":"e","timestamp":%d}' % (user, DAY * 86400 + n)


async def ingest_rate(cfg: Settings, seconds: float, batch: int) -> tuple[float, int]:
    """Events stored per second, and how many: ``batch`` = 1, CONCURRENCY writers of one
    event at a time (each its own user, as many ``POST /log`` clients); otherwise
    BATCH_WRITERS writers of ``batch`` events of one user at a time (``POST /logs``)."""
    stored = 0
    writers = CONCURRENCY if batch == 1 else BATCH_WRITERS
    async with Buffer.connect(cfg.redis) as buffer:
        committer = GroupCommitter(buffer, retry_s=cfg.redis.write_retry_seconds)
        deadline = time.monotonic() + seconds

        async def writer(n: int) -> None:
            nonlocal stored
            key = event_key(f"u{n}", DAY)
            i = 0
            while time.monotonic() < deadline:
                await committer.append([(key, line(n, i + j)) for j in range(batch)])
                stored += batch
                i += batch

        start = time.monotonic()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        return stored / (time.monotonic() - start), stored


async def load(cfg: Settings) -> None:
    """Store NKEYS x PER_KEY events for the drain figure."""
    items = [(event_key(f"d{k}", DAY), line(k, n)) for n in range(PER_KEY) for k in range(NKEYS)]
    async with Buffer.connect(cfg.redis) as buffer:
        for i in range(0, len(items), LOAD_CHUNK):
            await buffer.append(items[i : i + LOAD_CHUNK])


async def drain_rate(cfg: Settings) -> tuple[float, int]:
    """Events/s of one ``drain_once()`` into new files, and how many it drained."""
    async with Buffer.connect(cfg.redis) as buffer:
        report = await Drainer(buffer, cfg.drainer).drain_once()
    if report.errors or report.events != NKEYS * PER_KEY:
        raise RuntimeError(f"drain pass incomplete: {report.events} events, {report.errors}")
    return report.events / report.seconds, report.events


@dataclass
class Setup:
    name: str
    redis: dict[str, Any]
    #: empties every master before a measurement
    flush: Callable[[], None]
    #: the setup's masters and replicas, whose CPU time is counted
    masters: list[int]
    replicas: list[int]


def cpu_seconds(ports: list[int]) -> float:
    """User + system CPU seconds the redis-servers on ``ports`` have used so far."""
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as c:
            info = c.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


@dataclass
class Figure:
    """One measurement: events/s, and CPU µs per event: the redis-server masters', the
    replicas', and this process's (logpipe's client side: the API's or drainer's share)."""

    rate: float
    master_us: float
    replica_us: float
    client_us: float


def timed(setup: Setup, events_of: Callable[[], tuple[float, int]]) -> Figure:
    """Run ``events_of`` (returns events/s and events) and charge the CPU it used, here
    and in the setup's redis-servers, to each event."""
    m0, r0 = cpu_seconds(setup.masters), cpu_seconds(setup.replicas)
    c0 = time.process_time()
    rate, events = events_of()
    c1 = time.process_time()
    m1, r1 = cpu_seconds(setup.masters), cpu_seconds(setup.replicas)
    return Figure(
        rate, (m1 - m0) * 1e6 / events, (r1 - r0) * 1e6 / events, (c1 - c0) * 1e6 / events
    )


def settings(redis_cfg: dict[str, Any], logs: Path) -> Settings:
    return load_settings(
        {
            "redis": {"max_buffered_events": 0, **redis_cfg},
            "drainer": {"logs_dir": str(logs)},
        },
        {},
    )


def flush_one(port: int) -> Callable[[], None]:
    def flush() -> None:
        with redis.Redis(port=port) as c:
            c.flushall()

    return flush


def wait_replica_online(port: int, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    with redis.Redis(port=port) as c:
        while c.info("replication").get("slave0", {}).get("state") != "online":
            if time.monotonic() > deadline:
                raise RuntimeError("the standalone replica never came online")
            time.sleep(0.05)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


#: the figures: ingest of single events, of 100-event batches, and the drain
PARTS = ("ingest", f"ingest{BATCH}", "drain")
FIELDS = ("rate", "master_us", "replica_us", "client_us")


def measure(seconds: float, reps: int, tmp: Path) -> dict[str, dict[str, Any]]:
    single = RedisServer(tmp / "single")
    primary = RedisServer(tmp / "primary", extra_args=("--repl-diskless-sync-delay", "0"))
    replica = RedisServer(tmp / "replica")
    cluster = RedisCluster(tmp / "cluster")
    try:
        single.start()
        primary.start()
        replica.extra_args = ("--replicaof", "127.0.0.1", str(primary.port))
        replica.start()
        wait_replica_online(primary.port)
        cluster.start()
        masters = [m.port for m in cluster.masters()]
        cluster_replicas = [s.port for s in cluster.servers if s.port not in masters]
        cluster_cfg = {"mode": "cluster", "url": cluster.seed_url}
        setups = [
            Setup("standalone", {"url": single.url}, flush_one(single.port), [single.port], []),
            Setup(
                "standalone + replica, min_replicas 1",
                {"url": primary.url, "min_replicas": 1},
                flush_one(primary.port),
                [primary.port],
                [replica.port],
            ),
            Setup("cluster, min_replicas 0", cluster_cfg, cluster.flush, masters, cluster_replicas),
            Setup(
                "cluster, min_replicas 1",
                {**cluster_cfg, "min_replicas": 1},
                cluster.flush,
                masters,
                cluster_replicas,
            ),
        ]
        runs: dict[str, dict[str, list[Figure]]] = {s.name: {p: [] for p in PARTS} for s in setups}
        logs = tmp / "logs"
        for rep in range(reps):
            for s in setups:
                cfg = settings(s.redis, logs)
                figs: dict[str, Figure] = {}
                for part, batch in (("ingest", 1), (f"ingest{BATCH}", BATCH)):
                    s.flush()
                    figs[part] = timed(
                        s, functools.partial(asyncio.run, ingest_rate(cfg, seconds, batch))
                    )
                s.flush()
                shutil.rmtree(logs, ignore_errors=True)
                asyncio.run(load(cfg))
                figs["drain"] = timed(s, functools.partial(asyncio.run, drain_rate(cfg)))
                for part, fig in figs.items():
                    runs[s.name][part].append(fig)
                rates = "  ".join(f"{p} {f.rate:>9,.0f}/s" for p, f in figs.items())
                print(f"  rep {rep + 1}/{reps} {s.name:<38} {rates}", file=sys.stderr)
        return {
            name: {
                part: {f: spread([getattr(x, f) for x in figs]) for f in FIELDS}
                for part, figs in r.items()
            }
            for name, r in runs.items()
        }
    finally:
        cluster.stop()
        for server in (single, primary, replica):
            server.stop()


def render(results: dict[str, dict[str, Any]], seconds: float, reps: int) -> str:
    base = results["standalone"]
    out = [
        f"ingest: {CONCURRENCY} writers of one event at a time, each its own user; "
        f"ingest{BATCH}: {BATCH_WRITERS} writers of {BATCH} events of one user at a time; "
        f"both through GroupCommitter, {seconds:g} s. drain: {NKEYS} keys x {PER_KEY} "
        f"events, drain_once() with fsync. Median of {reps} (min-max); CPU µs per event "
        "of the Redis masters, their replicas, and logpipe's process.",
    ]
    for part in PARTS:
        out += [
            "",
            f"| setup | {part} events/s | µs/event | x standalone "
            "| masters' CPU µs/event | replicas' | logpipe's |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in results.items():
            rate = r[part]["rate"]
            med = rate["median"]
            cpu = " | ".join(f"{r[part][f]['median']:.1f}" for f in FIELDS[1:])
            out.append(
                f"| {name} | {med:,.0f} ({rate['min']:,.0f}-{rate['max']:,.0f}) "
                f"| {1e6 / med:.1f} | {base[part]['rate']['median'] / med:.2f} | {cpu} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="ingest time per figure")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every figure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-cluster-") as tmp:
        results = measure(args.seconds, args.reps, Path(tmp))
    print(render(results, args.seconds, args.reps))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
