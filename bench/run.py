"""``python -m bench.run [--quick]``: logpipe's figures against ceilings from the same run.

One run starts its own redis-server (free port, temp dir, no persistence) and measures:

(a) Redis's ceiling: ``redis-benchmark -P 64``, RPUSH of a 63-byte value into 1,000 lists
    (best of three runs);
(b) the HTTP ceiling: a bare ASGI app on uvicorn (1 worker, uvloop, httptools), by wrk;
(c) ``POST /log``, one event per request, 32 connections, 100 users: req/s, p50, p99;
(d) ``POST /logs``, 1,000 NDJSON events per request over 100 users: events/s;
(e) drain: 1M events over 1,000 lists, ``Drainer.drain_once()`` with fsync, into new
    files (a day's first pass: 1,000 directories and files made durably), then once
    more into the files now there, against a raw LPOP + append + fsync loop into 1,000
    new files;
(f) the API's peak RSS (``VmHWM``) after (c) and (d);
(g) query: one user's day of 100,000 events (bench/query.py): first page asc and desc, the
    full NDJSON export, and the export's peak RSS;
(h) ``POST /log`` with a fresh ``event_id`` per request against the same without one
    (the dedupe check's cost): 4-second wrk runs, the two interleaved, medians compared.

It prints one table and writes the figures as JSON to ``bench/results/<date>.json``.
Ratios within one run are what count: absolute figures drift 20-40 % on a shared box.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import drain, loadgen
from bench import query as query_bench
from bench.procs import (
    BenchError,
    Procs,
    free_port,
    need,
    status_kb,
    wait_http,
    wait_redis,
    worker_pids,
)
from logpipe_cli import keys

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = ("redis", "trivial", "single", "batch", "drain", "query", "ids")

TARGET_SINGLE_RATIO = 0.6
TARGET_P99_MS = 10.0
TARGET_BATCH_RATIO = 0.35
TARGET_DRAIN_EPS = 1_000_000
TARGET_RSS_MB = 120.0
#: single-event ingest with an event_id, against without: within 10 %
TARGET_IDS_RATIO = 0.9


@dataclass(frozen=True)
class Plan:
    seconds: float  # each measured wrk run
    warmup_s: float
    redis_events: int
    drain_events: int
    drain_keys: int
    connections: int
    batch_connections: int
    batch_events: int
    users: int
    workers: int
    id_rounds: int  # (h): pairs of runs, one without ids and one with, interleaved
    id_seconds: float


def plan_for(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        seconds=args.seconds or (3.0 if quick else 10.0),
        warmup_s=1.0 if quick else 2.0,
        redis_events=200_000 if quick else 1_000_000,
        drain_events=200_000 if quick else 1_000_000,
        drain_keys=1000,
        connections=args.connections,
        batch_connections=args.batch_connections,
        batch_events=1000,
        users=100,
        workers=args.workers,
        id_rounds=2 if quick else 5,
        id_seconds=2.0 if quick else 4.0,
    )


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def tool_version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return ""
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else ""

    def git(*argv: str) -> str:
        try:
            out = subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10
            )
        except OSError:
            return ""
        return out.stdout.strip()

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": tool_version(["redis-server", "--version"]),
        "wrk": tool_version(["wrk", "--version"]),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def server_env(redis_port: int, http_port: int, workers: int = 1) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    env.update(
        LOGPIPE_REDIS_URL=f"redis://127.0.0.1:{redis_port}",
        LOGPIPE_SERVER_PORT=str(http_port),
        LOGPIPE_SERVER_HOST="127.0.0.1",
        LOGPIPE_LOGGING_LEVEL="warning",
        LOGPIPE_SERVER_WORKERS=str(workers),
    )
    return env


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, plan: Plan, figures: set[str], tmp: Path) -> None:
        self.plan = plan
        self.figures = figures
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.results: dict[str, Any] = {}
        self.redis_port = 0

    # ---- processes -----------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis_port = free_port()
        data = self.tmp / "redis"
        data.mkdir()
        proc = self.procs.start(
            "redis-server",
            [
                need("redis-server"),
                "--port", str(self.redis_port),
                "--bind", "127.0.0.1",
                "--dir", str(data),
                "--save", "",
                "--appendonly", "no",
            ],
        )  # fmt: skip
        wait_redis(self.redis_port, proc)
        say(f"redis-server on port {self.redis_port} (pid {proc.pid})")

    def flush(self) -> None:
        client = redis.Redis(port=self.redis_port)
        try:
            client.flushall()
        finally:
            client.close()

    def wrk(self, port: int, path: str, script: str, conns: int, *args: str) -> loadgen.WrkResult:
        url = f"http://127.0.0.1:{port}{path}"
        if self.plan.warmup_s:
            loadgen.wrk(
                self.procs, url, script, seconds=self.plan.warmup_s, connections=conns, args=args
            )
        return loadgen.wrk(
            self.procs, url, script, seconds=self.plan.seconds, connections=conns, args=args
        )

    # ---- figures -------------------------------------------------------------------

    def redis_ceiling(self) -> None:
        say("(a) redis-benchmark: pipelined RPUSH ceiling (best of 3)")
        runs = [
            loadgen.redis_rpush_ceiling(self.procs, self.redis_port, events=self.plan.redis_events)
            for _ in range(3)
        ]
        self.flush()
        self.results["redis_rpush"] = {
            "events_per_s": round(max(runs), 1),
            "runs": [round(x, 1) for x in runs],
        }

    def trivial(self) -> None:
        say("(b) trivial ASGI app on uvicorn: HTTP ceiling")
        port = free_port()
        proc = self.procs.start(
            "trivial-app",
            [
                sys.executable, "-m", "uvicorn", "bench.trivial_app:app",
                "--app-dir", str(ROOT),
                "--host", "127.0.0.1", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning",
                "--no-server-header", "--no-date-header", "--lifespan", "off",
            ],
            cwd=self.tmp,
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/", proc, "trivial app")
            res = self.wrk(
                port, "/log", "post_log.lua", self.plan.connections, str(self.plan.users)
            )
        finally:
            self.procs.stop(proc)
        self.results["trivial"] = res.as_dict()

    def logpipe_api(self) -> None:
        port = free_port()
        proc = self.procs.start(
            "logpipe-serve",
            [sys.executable, "-m", "logpipe_cli", "serve"],
            cwd=self.tmp,
            env=server_env(self.redis_port, port, self.plan.workers),
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc, "logpipe serve")
            if self.plan.workers > 1:
                time.sleep(2)  # every worker up, not just the first to answer
            self.check_one(port)
            self.flush()
            if "single" in self.figures:
                self.single(port)
            if "batch" in self.figures:
                self.batch(port)
            if "ids" in self.figures:
                self.ids(port, worker_pids(proc.pid) or [proc.pid])
            # with --workers N the API is N worker processes under a supervisor: the
            # figure is the largest worker's
            pids = worker_pids(proc.pid) or [proc.pid]
            rss = {"peak_rss_mb": round(max(status_kb(p, "VmHWM") for p in pids) / 1024, 1)}
            rss["rss_now_mb"] = round(max(status_kb(p, "VmRSS") for p in pids) / 1024, 1)
            rss["workers"] = self.plan.workers
            self.results["api_rss"] = rss
        finally:
            self.procs.stop(proc)
            self.flush()

    def check_one(self, port: int) -> None:
        """One real request first: a bench of 4xx answers would measure nothing."""
        body = json.dumps({"user_id": "bench", "event": "check", "timestamp": int(time.time())})
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/log",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            answer = json.loads(resp.read())
        if resp.status != 200 or answer.get("stored") is not True:
            raise BenchError(f"POST /log answered {resp.status}: {answer}")

    def stats(self) -> dict[str, int]:
        client = redis.Redis(port=self.redis_port)
        try:
            raw = client.hgetall(keys.STATS)
            return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        finally:
            client.close()

    def single(self, port: int) -> None:
        say(f"(c) POST /log, one event per request, {self.plan.connections} connections")
        res = self.wrk(port, "/log", "post_log.lua", self.plan.connections, str(self.plan.users))
        out = res.as_dict()
        out["accepted_in_redis"] = self.stats().get("accepted", 0)
        self.results["single"] = out
        self.flush()

    def batch(self, port: int) -> None:
        n = self.plan.batch_events
        say(f"(d) POST /logs, {n} NDJSON events per request, {self.plan.batch_connections} conns")
        res = self.wrk(
            port,
            "/logs",
            "post_logs.lua",
            self.plan.batch_connections,
            str(n),
            str(self.plan.users),
        )
        out = res.as_dict()
        out["events_per_request"] = n
        out["events_per_s"] = round(res.rps * n, 1)
        out["accepted_in_redis"] = self.stats().get("accepted", 0)
        self.results["batch"] = out
        self.flush()

    def cpu_s(self, pids: list[int]) -> float:
        """CPU seconds used so far by ``pids`` (the API) and by redis-server."""
        tick = os.sysconf("SC_CLK_TCK")
        api = 0.0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            api += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        client = redis.Redis(port=self.redis_port)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        return api + float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def ids(self, port: int, pids: list[int]) -> None:
        p = self.plan
        say(f"(h) POST /log with event_id vs without: {p.id_rounds} pairs of {p.id_seconds:g} s")
        url = f"http://127.0.0.1:{port}/log"
        conns = p.connections
        users = str(p.users)
        stamp = str(int(time.time()))
        script = "post_log_ids.lua"
        loadgen.wrk(
            self.procs, url, script, seconds=p.warmup_s or 1, connections=conns,
            args=(users, "id", f"w{stamp}"),
        )  # fmt: skip
        runs: dict[str, list[float]] = {"none": [], "id": []}
        #: API + Redis CPU microseconds per request: steadier than req/s on a shared box
        cpu_us: dict[str, list[float]] = {"none": [], "id": []}
        errors = 0
        for r in range(p.id_rounds):
            # alternate which goes first, so a drift in the machine's load hits both
            for mode in ("none", "id") if r % 2 == 0 else ("id", "none"):
                cpu0 = self.cpu_s(pids)
                res = loadgen.wrk(
                    self.procs, url, script, seconds=p.id_seconds, connections=conns,
                    args=(users, mode, f"{mode}{r}x{stamp}"),
                )  # fmt: skip
                cpu_us[mode].append(round((self.cpu_s(pids) - cpu0) / res.requests * 1e6, 1))
                runs[mode].append(round(res.rps, 1))
                errors += res.failed
            self.flush()
        without, with_id = statistics.median(runs["none"]), statistics.median(runs["id"])
        self.results["ids"] = {
            "without_id_req_per_s": round(without, 1),
            "with_id_req_per_s": round(with_id, 1),
            "ratio": round(with_id / without, 3),
            "runs": runs,
            "cpu_us_per_request": cpu_us,
            "cpu_ratio": round(
                statistics.median(cpu_us["id"]) / statistics.median(cpu_us["none"]), 3
            ),
            "errors": errors,
        }

    def drain(self) -> None:
        p = self.plan
        say(f"(e) drain: {p.drain_events:,} events over {p.drain_keys:,} keys, fsync on")
        self.flush()
        load_s = drain.load(self.redis_port, events=p.drain_events, nkeys=p.drain_keys)
        logs = self.tmp / "logs"
        result = asyncio.run(drain.logpipe_drain(self.redis_port, logs, events=p.drain_events))
        result["load_seconds"] = round(load_s, 3)
        self.flush()
        # the usual case after a day's first pass: the same keys, their files already there
        drain.load(self.redis_port, events=p.drain_events, nkeys=p.drain_keys)
        again = asyncio.run(
            drain.logpipe_drain(
                self.redis_port, logs, events=p.drain_events, on_disk=p.drain_events
            )
        )
        shutil.rmtree(logs)
        self.flush()
        drain.load(self.redis_port, events=p.drain_events, nkeys=p.drain_keys)
        raw_dir = self.tmp / "raw"
        raw = drain.raw_drain(self.redis_port, raw_dir, events=p.drain_events, nkeys=p.drain_keys)
        shutil.rmtree(raw_dir)
        self.flush()
        self.results["drain"] = result
        self.results["drain_existing_files"] = again
        self.results["raw_drain"] = raw

    def query(self) -> None:
        say("(g) query: one user's day of 100,000 events, first page and full export")
        self.flush()
        self.results["query"] = query_bench.run(self.redis_port, self.tmp, 99_000)
        self.flush()

    def run(self) -> None:
        self.start_redis()
        if "redis" in self.figures:
            self.redis_ceiling()
        if "trivial" in self.figures:
            self.trivial()
        if self.figures & {"single", "batch", "ids"}:
            self.logpipe_api()
        if "drain" in self.figures:
            self.drain()
        if "query" in self.figures:
            self.query()


# ---- the table ---------------------------------------------------------------------


def _n(x: float) -> str:
    return f"{x:,.0f}"


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """(figure, value, ceiling, ratio, target, met) rows; also stored in the JSON."""
    out: list[dict[str, Any]] = []

    def row(figure: str, value: str, ceiling: str = "", ratio: float | None = None,
            target: str = "", met: bool | None = None) -> None:  # fmt: skip
        out.append(
            {
                "figure": figure,
                "value": value,
                "ceiling": ceiling,
                "ratio": None if ratio is None else round(ratio, 3),
                "target": target,
                "met": met,
            }
        )

    redis_eps = r.get("redis_rpush", {}).get("events_per_s")
    trivial = r.get("trivial")
    if redis_eps:
        row("Redis RPUSH -P 64 (events/s)", _n(redis_eps))
    if trivial:
        row("trivial ASGI app (req/s)", _n(trivial["req_per_s"]))
        lat = trivial["latency_ms"]
        row("trivial ASGI app p50 / p99 (ms)", f"{lat['p50']:.2f} / {lat['p99']:.2f}")
    single = r.get("single")
    if single:
        ratio = single["req_per_s"] / trivial["req_per_s"] if trivial else None
        row(
            "POST /log, 32 conns (req/s)",
            _n(single["req_per_s"]),
            _n(trivial["req_per_s"]) if trivial else "",
            ratio,
            f">= {TARGET_SINGLE_RATIO}x trivial",
            None if ratio is None else ratio >= TARGET_SINGLE_RATIO and not single["errors"],
        )
        lat = single["latency_ms"]
        row("POST /log p50 (ms)", f"{lat['p50']:.2f}")
        row("POST /log p99 (ms)", f"{lat['p99']:.2f}", target=f"< {TARGET_P99_MS:g} ms",
            met=lat["p99"] < TARGET_P99_MS)  # fmt: skip
    batch = r.get("batch")
    if batch:
        ratio = batch["events_per_s"] / redis_eps if redis_eps else None
        row(
            "POST /logs, 1,000/request (events/s)",
            _n(batch["events_per_s"]),
            _n(redis_eps) if redis_eps else "",
            ratio,
            f">= {TARGET_BATCH_RATIO}x Redis",
            None if ratio is None else ratio >= TARGET_BATCH_RATIO and not batch["errors"],
        )
    drained = r.get("drain")
    if drained:
        raw = r["raw_drain"]["events_per_s"]
        row("raw LPOP + append + fsync (events/s)", _n(raw))
        row(
            "drain_once, new files (events/s)",
            _n(drained["events_per_s"]),
            _n(raw),
            drained["events_per_s"] / raw,
            ">= 1M/s (~0.5x raw)",
            drained["events_per_s"] >= TARGET_DRAIN_EPS,
        )
        again = r.get("drain_existing_files")
        if again:
            row(
                "drain_once, files exist (events/s)",
                _n(again["events_per_s"]),
                _n(raw),
                again["events_per_s"] / raw,
                ">= 1M/s (~0.5x raw)",
                again["events_per_s"] >= TARGET_DRAIN_EPS,
            )
    queried = r.get("query")
    if queried:
        for what, label in (("first", "asc"), ("first_desc", "desc")):
            m = queried[what]
            row(f"query first page of 100, {label}, 100k-event day (ms)",
                f"{m['seconds'] * 1000:.1f}")  # fmt: skip
        m = queried["export"]
        row("query full export, 100k-event day (events/s)", _n(m["events"] / m["seconds"]))
        row("query export peak RSS over imports (MB)",
            f"{(m['rss_peak_kb'] - m['rss_base_kb']) / 1024:.1f}")  # fmt: skip
    ids = r.get("ids")
    if ids:
        n = len(ids["runs"]["id"])
        row(
            f"POST /log with event_id, median of {n} (req/s)",
            _n(ids["with_id_req_per_s"]),
            _n(ids["without_id_req_per_s"]),
            ids["ratio"],
            f">= {TARGET_IDS_RATIO}x without",
            ids["ratio"] >= TARGET_IDS_RATIO and not ids["errors"],
        )
        cpu = ids["cpu_us_per_request"]
        row(
            "API + Redis CPU per POST /log with event_id (us)",
            f"{statistics.median(cpu['id']):.0f}",
            f"{statistics.median(cpu['none']):.0f}",
            ids["cpu_ratio"],
            f"<= {1 / TARGET_IDS_RATIO:.2f}x without",
            ids["cpu_ratio"] <= 1 / TARGET_IDS_RATIO,
        )
    rss = r.get("api_rss")
    if rss:
        label = f"API peak RSS per worker, {rss.get('workers', 1)} worker(s) (MB)"
        row(label, f"{rss['peak_rss_mb']:.1f}",
            target=f"< {TARGET_RSS_MB:g} MB", met=rss["peak_rss_mb"] < TARGET_RSS_MB)  # fmt: skip
    return out


def render(table: list[dict[str, Any]]) -> str:
    head = ("figure", "value", "ceiling", "ratio", "target", "met?")
    cells = [
        (
            t["figure"],
            t["value"],
            t["ceiling"],
            "" if t["ratio"] is None else f"{t['ratio']:.2f}x",
            t["target"],
            "" if t["met"] is None else ("yes" if t["met"] else "NO"),
        )
        for t in table
    ]
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    right = {1, 2, 3}

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(
            str(v).rjust(w) if i in right else str(v).ljust(w)
            for i, (v, w) in enumerate(zip(c, widths, strict=True))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(c) for c in cells)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: a few seconds per figure")
    p.add_argument("--seconds", type=float, default=0, help="each wrk run (default 10, quick 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections for POST /log")
    p.add_argument(
        "--batch-connections", type=int, default=8, help="wrk connections for POST /logs"
    )
    p.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated figures to measure, of {','.join(FIGURES)} (default: all)",
    )
    p.add_argument("--workers", type=int, default=1, help="logpipe serve --workers N")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    return p.parse_args(argv)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = {f.strip() for f in args.only.split(",") if f.strip()}
    unknown = figures - set(FIGURES)
    if unknown:
        print(f"error: unknown figures {sorted(unknown)}; choose from {FIGURES}", file=sys.stderr)
        return 2
    plan = plan_for(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    started = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="logpipe-bench-"))
    bench = Bench(plan, figures, tmp)
    try:
        bench.run()
    except KeyboardInterrupt:
        print("interrupted: stopping what the bench started", file=sys.stderr)
        return 130
    except (BenchError, RuntimeError, OSError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C must not cut the cleanup short and orphan a server
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        bench.procs.stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    table = rows(bench.results)
    info = machine()
    header = (
        f"logpipe bench {'(quick: smoke run, not comparable) ' if args.quick else ''}"
        f"{started:%Y-%m-%d %H:%M} UTC on {info['nproc']} x {info['cpu_model']}, "
        f"Python {info['python']}"
    )
    print(header)
    print(render(table))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        name = f"{started:%Y-%m-%dT%H%M%S}{'-quick' if args.quick else ''}.json"
        doc = {
            "date": started.isoformat(timespec="seconds"),
            "quick": args.quick,
            "machine": info,
            "plan": plan.__dict__,
            "table": table,
            "results": bench.results,
        }
        (RESULTS / name).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {(RESULTS / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
