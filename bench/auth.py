"""What a bearer token costs on the ``POST /log`` fast path: the same API with and
without tokens configured, measured by wrk in interleaved runs.

    python -m bench.auth [--runs 3] [--seconds 4] [--connections 32]

Both servers run at once (one idles while the other is measured) so that each pair of
runs sees the same machine; Redis is emptied between runs. On a busy machine the spread
between runs is larger than the token's cost, so the gate's own CPU time per request is
also measured in-process (:func:`gate_cost_us`), which noise hardly moves.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench import loadgen
from bench.procs import Procs, free_port, need, wait_http, wait_redis
from bench.run import AUTH_TOKEN as TOKEN
from bench.run import server_env
from logpipe_cli.auth import Authorizer
from logpipe_cli.gate import gate
from logpipe_cli.metrics import ApiMetrics


def gate_cost_us(n: int = 200_000) -> float:
    """Microseconds the token gate adds to one ``POST /log`` (best of 3 runs of ``n``)."""
    headers = [
        (b"host", b"127.0.0.1:3000"),
        (b"content-type", b"application/json"),
        (b"content-length", b"63"),
        (b"authorization", b"Bearer " + TOKEN.encode()),
    ]

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    guarded = gate(inner, Authorizer([("ingest", TOKEN, "bench")]), {"/log": "ingest"}, None,
                   ApiMetrics())  # fmt: skip

    async def per_request(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(n):
            scope = {"type": "http", "method": "POST", "path": "/log", "headers": headers}
            await app(scope, None, None)
        return (time.perf_counter() - start) / n * 1e6

    async def best() -> float:
        with_gate = min([await per_request(guarded) for _ in range(3)])
        without = min([await per_request(inner) for _ in range(3)])
        return with_gate - without

    return asyncio.run(best())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--users", type=int, default=100)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-auth-") as tmp:
        procs = Procs(Path(tmp))
        try:
            return _run(procs, Path(tmp), args)
        finally:
            procs.stop_all()


def _run(procs: Procs, tmp: Path, args: argparse.Namespace) -> int:
    redis_port = free_port()
    rproc = procs.start(
        "redis-server",
        [
            need("redis-server"),
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    wait_redis(redis_port, rproc)
    ports = {}
    for name, extra in (("no token", {}), ("token", {"LOGPIPE_AUTH_INGEST_TOKENS": TOKEN})):
        port = ports[name] = free_port()
        env = {**server_env(redis_port, port), **extra}
        proc = procs.start(
            f"serve-{name.replace(' ', '-')}",
            [sys.executable, "-m", "logpipe_cli", "serve"],
            cwd=tmp,
            env=env,
        )
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, f"logpipe serve ({name})")
    results: dict[str, list[float]] = {name: [] for name in ports}
    client = redis.Redis(port=redis_port)
    for run in range(args.runs):
        order = list(ports.items())
        if run % 2:  # alternate which goes first, so neither always gets the warmer machine
            order.reverse()
        for name, port in order:
            wrk_args = [str(args.users)] + ([TOKEN] if name == "token" else [])
            res = loadgen.wrk(
                procs,
                f"http://127.0.0.1:{port}/log",
                "post_log.lua",
                seconds=args.seconds,
                connections=args.connections,
                args=tuple(wrk_args),
            )
            client.flushall()
            if res.failed:
                print(f"run {run + 1} {name}: {res.errors}", file=sys.stderr)
                return 1
            results[name].append(res.rps)
            print(f"run {run + 1} {name:>8}: {res.rps:8,.0f} req/s  p99 {res.p99_ms:.2f} ms")
    client.close()
    base, tok = (statistics.median(results[n]) for n in ("no token", "token"))
    print(f"median: no token {base:,.0f} req/s, token {tok:,.0f} req/s ({tok / base:.1%})")
    cost = gate_cost_us()
    share = cost * base / 1e6
    print(f"gate CPU per request: {cost:.2f} us (~{share:.1%} of a request at {base:,.0f} req/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
