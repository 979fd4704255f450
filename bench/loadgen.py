"""The load tools: ``wrk`` against an HTTP server, ``redis-benchmark`` against Redis."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import BenchError, Procs, need

WRK_DIR = Path(__file__).parent / "wrk"
#: the 63-byte value redis-benchmark pushes; the same shape the wrk scripts send
EVENT_63 = '{"user_id":"user_042","event":"visited","timestamp":1754000000}'


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "req_per_s": round(self.rps, 1),
            "errors": self.errors,
            "latency_ms": {
                "p50": self.p50_ms,
                "p90": self.p90_ms,
                "p99": self.p99_ms,
                "max": self.max_ms,
            },
        }


def wrk(
    procs: Procs,
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    args: tuple[str, ...] = (),
) -> WrkResult:
    """Run ``wrk`` with one of the scripts in ``bench/wrk``; parse its ``BENCHJSON`` line."""
    argv = [
        need("wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_DIR / script),
        url,
    ]
    if args:
        argv += ["--", *args]
    out = procs.run("wrk", argv, timeout_s=seconds + 30)
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line[len("BENCHJSON ") :])
            lat = data["latency_us"]
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors={k: int(v) for k, v in data["errors"].items() if v},
                p50_ms=lat["p50"] / 1000,
                p90_ms=lat["p90"] / 1000,
                p99_ms=lat["p99"] / 1000,
                max_ms=lat["max"] / 1000,
            )
    raise BenchError(f"wrk printed no result:\n{out[-2000:]}")


def redis_rpush_ceiling(procs: Procs, port: int, *, events: int, keys: int = 1000) -> float:
    """Events/s of ``redis-benchmark -P 64``: RPUSH of a 63-byte value into ``keys`` lists."""
    argv = [
        need("redis-benchmark"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-P",
        "64",
        "-c",
        "50",
        "-r",
        str(keys),
        "-n",
        str(events),
        "--csv",
        "RPUSH",
        "logs:user___rand_int__:20000",
        EVENT_63,
    ]
    out = procs.run("redis-benchmark", argv, timeout_s=120)
    # the test name holds the value's quotes unescaped: take the numbers from the right
    last = [ln for ln in out.strip().splitlines() if ln.startswith('"RPUSH')][-1]
    return float(last.rsplit('","', 7)[-7])
