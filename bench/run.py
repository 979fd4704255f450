"""``python -m bench.run [--quick]``: logpipe's figures against ceilings from the same run.

One run starts its own redis-server as production would run it (free port, temp dir, AOF
on, ``appendfsync everysec``) and measures each figure ``--reps`` times (default 3),
each time right after its ceiling, so a change of load on a shared box hits both:

- ``single``: ``POST /log``, one event per request, 32 connections, 1,000 users, against
  a bare ASGI app on uvicorn (the HTTP ceiling) and the compiled Rust implementation of
  the original service (``/work/shared/peers/rust-original``, a same-run reference);
  with each server process's CPU time per request (logpipe's and the bare app's), which
  a shared machine moves far less than req/s;
- ``batch``: ``POST /logs``, 1,000 NDJSON events per request over 100 users, against
  ``redis-benchmark -P 64`` RPUSH (the Redis ceiling);
- ``batch100``: ``POST /logs``, 100-event NDJSON bodies over 1,000 users, against the
  Rust implementation with the same bodies;
- ``drain``: 1,000 keys x 1,000 events, ``drain_once()`` with fsync into new files and
  then into the files now there, against a raw LPOP + append + fsync loop (new, existing);
- ``drain_many``: 100,000 keys x 10 events into new files, against a plain 16-thread
  loop that makes the same directories and files, appends, fsyncs file and directory
  (the target's ceiling); and, for reference, the same loop made durable as the drainer
  makes a round of many files, one ``syncfs`` per 256; with the drainer's peak RSS;
- ``ids``: ``POST /log`` with a fresh ``event_id`` in every request against the same
  requests without one (the dedupe check's cost, issue 10), interleaved pairs of wrk runs,
  with the API's and Redis's CPU time per request over the same runs;
- ``auth``: ``POST /log`` with a bearer token, against a second API with no tokens
  configured (the gate not installed at all), interleaved pairs of wrk runs as for
  ``ids``, with each API's and Redis's CPU time per request (issue 9: no measurable
  cost; ``python -m bench.auth`` also times the gate in-process);
- the API's peak RSS (``VmHWM``) after ``single``, the batches and ``ids``;
- ``query``: one user's day of 100,000 events (``bench/query.py``, a fresh day each run):
  first page asc and desc, the full NDJSON export, and the export's peak RSS.

It prints the median of each figure with its spread (min-max), the ratio of the medians,
and which targets (issues 10 and 12) are met, and writes everything as JSON to
``bench/results/<date>.json``. ``--profile`` also saves a cProfile of one drain pass of
each shape there (``python -m pstats FILE``). Ratios within one run are what count:
absolute figures drift 20-40 % on a shared box, so the load average is recorded too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
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
FIGURES = ("single", "batch", "batch100", "ids", "auth", "drain", "drain_many", "query")
API_FIGURES = {"single", "batch", "batch100", "ids", "auth"}
PEER_SRC = Path(os.environ.get("LP_PEER_SRC", "/work/shared/peers/rust-original"))
PEER_BUILD = ROOT / ".logpipe" / "peer"

TARGET_SINGLE_RATIO = 0.6
TARGET_P99_MS = 10.0
TARGET_BATCH_RATIO = 0.5
TARGET_BATCH100_EPS = 150_000
TARGET_DRAIN_MANY_RATIO = 0.6
TARGET_DRAIN_RATIO = 0.8
TARGET_RSS_MB = 120.0
TARGET_DRAIN_RSS_MB = 200.0
#: single-event ingest with an event_id, against without: within 10 % (issue 10)
TARGET_IDS_RATIO = 0.9
#: POST /log with a bearer token, against the same API without tokens: no measurable
#: cost (issue 9)
TARGET_AUTH_RATIO = 0.95
#: the ingest token the ``auth`` figure's second API accepts
AUTH_TOKEN = "bench-token-0123456789abcdefghijklmnopqrstuvw"


@dataclass(frozen=True)
class Plan:
    reps: int
    seconds: float  # each measured wrk run
    warmup_s: float
    redis_events: int
    connections: int
    batch_connections: int
    users: int  # single events and 100-event batches
    batch_users: int  # 1,000-event batches
    drain_keys: int
    drain_per_key: int
    many_keys: int
    many_per_key: int
    workers: int
    id_reps: int  # pairs of runs, without ids and with, interleaved
    id_seconds: float
    query_events: int  # the day's drained events (bench/query.py adds 1,000 buffered)


def plan_for(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        reps=args.reps,
        seconds=args.seconds or (1.0 if quick else 5.0),
        warmup_s=0.0 if quick else 1.0,
        redis_events=100_000 if quick else 1_000_000,
        connections=args.connections,
        batch_connections=args.batch_connections,
        users=1000,
        batch_users=100,
        drain_keys=50 if quick else 1000,
        drain_per_key=1000,
        many_keys=args.many_keys or (2000 if quick else 100_000),
        many_per_key=10,
        workers=args.workers,
        # the ids' cost is a few % in figures that swing 20-40 % between runs on a shared
        # box: more, shorter pairs than the other figures' runs
        id_reps=min(args.reps, 2) if quick else max(args.reps, 5),
        id_seconds=args.seconds or (1.0 if quick else 4.0),
        query_events=9_000 if quick else 99_000,
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


def spread(values: list[float]) -> dict[str, Any]:
    """Median and min-max of one figure's runs."""
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "runs": [round(v, 1) for v in values],
    }


class Bench:
    def __init__(self, plan: Plan, figures: set[str], tmp: Path, profile: str) -> None:
        self.plan = plan
        self.figures = figures
        self.tmp = tmp
        self.procs = Procs(tmp)
        self.results: dict[str, Any] = {}
        self.redis_port = 0
        self.profile = profile  # a file name stem under bench/results, or ""
        self.load: list[float] = []
        self.trivial_pids: list[int] = []
        self.cpu_us = 0.0  # the last wrk() run's CPU time per request of its pids
        self.redis_cpu_us = 0.0  # and redis-server's, over the same run
        self.peer_pid = 0  # the Rust reference's process, once started

    # ---- processes -----------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis_port = free_port()
        data = self.tmp / "redis"
        data.mkdir()
        proc = self.procs.start(
            "redis-server",
            [
                need("redis-server"),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ],
        )
        wait_redis(self.redis_port, proc)
        say(f"redis-server on port {self.redis_port} (pid {proc.pid}), AOF everysec")

    def flush(self) -> None:
        client = redis.Redis(port=self.redis_port)
        try:
            client.flushall()
        finally:
            client.close()
        drain.wait_aof_rewrite(self.redis_port)

    def note_load(self) -> None:
        self.load.append(round(os.getloadavg()[0], 2))

    def wrk(
        self, port: int, path: str, script: str, conns: int, *args: str, pids: Sequence[int] = ()
    ) -> loadgen.WrkResult:
        """A warm-up, then the measured run; with ``pids``, their CPU time per request
        over the measured run goes into :attr:`cpu_us`."""
        url = f"http://127.0.0.1:{port}{path}"
        if self.plan.warmup_s:
            loadgen.wrk(
                self.procs, url, script, seconds=self.plan.warmup_s, connections=conns, args=args
            )
        cpu0 = process_cpu_s(pids)
        redis0 = self.redis_cpu_s() if pids else 0.0
        res = loadgen.wrk(
            self.procs, url, script, seconds=self.plan.seconds, connections=conns, args=args
        )
        per = 1e6 / max(res.requests, 1)
        self.cpu_us = (process_cpu_s(pids) - cpu0) * per
        self.redis_cpu_us = (self.redis_cpu_s() - redis0) * per if pids else 0.0
        return res

    def start_trivial(self) -> int:
        port = free_port()
        proc = self.procs.start(
            "trivial-app",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.trivial_app:app",
                "--app-dir",
                str(ROOT),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--no-server-header",
                "--no-date-header",
                "--lifespan",
                "off",
            ],
            cwd=self.tmp,
        )
        wait_http(f"http://127.0.0.1:{port}/", proc, "trivial app")
        self.trivial_pids = [proc.pid]
        return port

    def start_logpipe(
        self, name: str = "logpipe-serve", **env: str
    ) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        proc = self.procs.start(
            name,
            [sys.executable, "-m", "logpipe_cli", "serve"],
            cwd=self.tmp,
            env={**server_env(self.redis_port, port, self.plan.workers), **env},
        )
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, "logpipe serve")
        if self.plan.workers > 1:
            time.sleep(2)  # every worker up, not just the first to answer
        check_one(port, env.get("LOGPIPE_AUTH_INGEST_TOKENS"))
        return port, proc

    def start_peer(self) -> int | None:
        """The compiled implementation of the original, built by its own build.sh
        (cargo, Debian's vendored crates); ``None``, with the reason recorded, if it
        cannot be built or started here."""
        build = PEER_SRC / "build.sh"
        if not build.is_file():
            self.results["peer"] = {"error": f"{build} not found"}
            return None
        try:
            out = subprocess.run(
                ["bash", str(build), str(PEER_BUILD)],
                capture_output=True,
                text=True,
                timeout=900,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self.results["peer"] = {"error": "build.sh ran longer than 900 s"}
            return None
        binary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if out.returncode != 0 or not Path(binary).is_file():
            self.results["peer"] = {"error": f"build.sh failed: {out.stderr[-500:]}"}
            say(f"no Rust reference: build.sh exited {out.returncode}")
            return None
        port = free_port()
        env = {**os.environ, "PORT": str(port), "REDIS_PORT": str(self.redis_port)}
        proc = self.procs.start("rust-peer", [binary], cwd=self.tmp, env=env)
        self.peer_pid = proc.pid
        try:
            wait_http(f"http://127.0.0.1:{port}/", proc, "rust peer", accept_any=True)
            check_one(port)
        except (BenchError, OSError) as exc:
            self.results["peer"] = {"error": f"did not serve: {exc}"}
            return None
        self.results["peer"] = {"binary": binary}
        return port

    # ---- figures -------------------------------------------------------------------

    def interleaved(
        self, name: str, runs: dict[str, Callable[[], dict[str, Any]]], reps: int = 0
    ) -> None:
        """Each of ``runs`` (ceiling first) ``reps`` times (default the plan's), in turn:
        a b c a b c ..."""
        reps = reps or self.plan.reps
        collected: dict[str, list[dict[str, Any]]] = {k: [] for k in runs}
        for rep in range(reps):
            for label, fn in runs.items():
                say(f"  {name}: {label} ({rep + 1}/{reps})")
                self.note_load()
                collected[label].append(fn())
        self.results[name] = collected

    def wrk_run(
        self, port: int, path: str, script: str, conns: int, *args: str, pids: Sequence[int] = ()
    ) -> dict[str, Any]:
        res = self.wrk(port, path, script, conns, *args, pids=pids)
        out = res.as_dict()
        if pids:
            # the server process's own CPU (not Redis's): steadier than req/s when the
            # machine is shared
            out["process_cpu_us_per_request"] = round(self.cpu_us, 1)
            out["redis_cpu_us_per_request"] = round(self.redis_cpu_us, 1)
        out["accepted_in_redis"] = self.stats().get("accepted", 0)
        self.flush()
        return out

    def api_figures(self) -> None:
        p = self.plan
        trivial = self.start_trivial() if "single" in self.figures else 0
        port, proc = self.start_logpipe()
        peer = self.start_peer() if self.figures & {"single", "batch100"} else None
        self.flush()
        if "single" in self.figures:
            say(f"POST /log, one event per request, {p.connections} connections")
            api_pids = worker_pids(proc.pid) or [proc.pid]
            runs = {
                "trivial": lambda: self.wrk_run(
                    trivial, "/log", "post_log.lua", p.connections, str(p.users),
                    pids=self.trivial_pids,
                ),
                "logpipe": lambda: self.wrk_run(
                    port, "/log", "post_log.lua", p.connections, str(p.users), pids=api_pids
                ),
            }  # fmt: skip
            if peer:
                runs["rust"] = lambda: self.wrk_run(
                    peer, "/log", "post_log.lua", p.connections, str(p.users)
                )
            self.interleaved("single", runs)
        if "batch" in self.figures:
            say(f"POST /logs, 1,000 events per request, {p.batch_connections} connections")
            self.interleaved(
                "batch",
                {
                    "redis": self.redis_ceiling,
                    "logpipe": lambda: self.wrk_run(
                        port,
                        "/logs",
                        "post_logs.lua",
                        p.batch_connections,
                        "1000",
                        str(p.batch_users),
                    ),
                },
            )
        if "ids" in self.figures:
            self.ids(port, worker_pids(proc.pid) or [proc.pid])
        if "auth" in self.figures:
            self.auth(port, worker_pids(proc.pid) or [proc.pid])
        if "batch100" in self.figures:
            say(f"POST /logs, 100 events per request over {p.users} users")
            # with each server's and Redis's CPU time (steadier than events/s on a
            # shared machine, and it says which side a gap is on)
            api_pids = worker_pids(proc.pid) or [proc.pid]
            runs = {
                "logpipe": lambda: self.wrk_run(
                    port, "/logs", "post_logs.lua", p.batch_connections, "100", str(p.users),
                    pids=api_pids,
                )
            }  # fmt: skip
            if peer:
                runs["rust"] = lambda: self.wrk_run(
                    peer, "/logs", "post_logs.lua", p.batch_connections, "100", str(p.users),
                    pids=[self.peer_pid],
                )  # fmt: skip
            self.interleaved("batch100", dict(reversed(list(runs.items()))))
        # with --workers N the API is N worker processes under a supervisor: the
        # figure is the largest worker's
        pids = worker_pids(proc.pid) or [proc.pid]
        self.results["api_rss"] = {
            "peak_rss_mb": round(max(status_kb(q, "VmHWM") for q in pids) / 1024, 1),
            "rss_now_mb": round(max(status_kb(q, "VmRSS") for q in pids) / 1024, 1),
            "workers": p.workers,
        }

    def cpu_s(self, pids: list[int]) -> float:
        """CPU seconds used so far by ``pids`` (the API) and by redis-server."""
        return sum(self.cpu_split(pids))

    def redis_cpu_s(self) -> float:
        """CPU seconds redis-server has used so far."""
        return self.cpu_split([])[1]

    def cpu_split(self, pids: list[int]) -> tuple[float, float]:
        """CPU seconds used so far by ``pids`` (the API), and by redis-server."""
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
        return api, float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def ids(self, port: int, pids: list[int]) -> None:
        p = self.plan
        say(f"POST /log with event_id vs without: {p.id_reps} pairs of {p.id_seconds:g} s")
        url = f"http://127.0.0.1:{port}/log"
        stamp = str(int(time.time()))
        script = "post_log_ids.lua"
        if p.warmup_s:  # one warm-up for all pairs: the runs are short and many
            loadgen.wrk(
                self.procs,
                url,
                script,
                seconds=p.warmup_s,
                connections=p.connections,
                args=(str(p.users), "id", f"w{stamp}"),
            )
            self.flush()
        rep = {"none": 0, "id": 0}

        def run(mode: str) -> dict[str, Any]:
            # a tag of its own per run, so every id is new: the check runs and misses,
            # as for a client's first attempt
            tag = f"{mode}{rep[mode]}x{stamp}"
            rep[mode] += 1
            api0, redis0 = self.cpu_split(pids)
            res = loadgen.wrk(
                self.procs,
                url,
                script,
                seconds=p.id_seconds,
                connections=p.connections,
                args=(str(p.users), mode, tag),
            )
            out = res.as_dict()
            # API + Redis CPU per request: steadier than req/s on a shared box
            api1, redis1 = self.cpu_split(pids)
            per = 1e6 / max(res.requests, 1)
            out["cpu_us_per_request"] = round((api1 - api0 + redis1 - redis0) * per, 1)
            out["api_cpu_us_per_request"] = round((api1 - api0) * per, 1)
            out["redis_cpu_us_per_request"] = round((redis1 - redis0) * per, 1)
            out["accepted_in_redis"] = self.stats().get("accepted", 0)
            self.flush()
            return out

        self.interleaved(
            "ids",
            {"none": lambda: run("none"), "id": lambda: run("id")},
            reps=p.id_reps,
        )

    def auth(self, port: int, pids: list[int]) -> None:
        """``POST /log`` with a bearer token against the same API with no tokens: pairs
        of wrk runs, each with the CPU time per request of its API and Redis."""
        p = self.plan
        say(f"POST /log with a bearer token vs no tokens: {p.id_reps} pairs of {p.id_seconds:g} s")
        tport, tproc = self.start_logpipe(
            "logpipe-serve-token", LOGPIPE_AUTH_INGEST_TOKENS=AUTH_TOKEN
        )
        tpids = worker_pids(tproc.pid) or [tproc.pid]
        self.flush()

        def run(target: int, target_pids: list[int], *token: str) -> dict[str, Any]:
            url = f"http://127.0.0.1:{target}/log"
            wrk_args = (str(p.users), *token)
            if p.warmup_s:
                loadgen.wrk(self.procs, url, "post_log.lua", seconds=p.warmup_s,
                            connections=p.connections, args=wrk_args)  # fmt: skip
            cpu0 = self.cpu_s(target_pids)
            res = loadgen.wrk(self.procs, url, "post_log.lua", seconds=p.id_seconds,
                              connections=p.connections, args=wrk_args)  # fmt: skip
            out = res.as_dict()
            out["cpu_us_per_request"] = round(
                (self.cpu_s(target_pids) - cpu0) / max(res.requests, 1) * 1e6, 1
            )
            out["accepted_in_redis"] = self.stats().get("accepted", 0)
            self.flush()
            return out

        try:
            self.interleaved(
                "auth",
                {"none": lambda: run(port, pids), "token": lambda: run(tport, tpids, AUTH_TOKEN)},
                reps=p.id_reps,
            )
        finally:
            self.procs.stop(tproc)

    def redis_ceiling(self) -> dict[str, Any]:
        eps = loadgen.redis_rpush_ceiling(
            self.procs, self.redis_port, events=self.plan.redis_events
        )
        self.flush()
        return {"events_per_s": round(eps, 1)}

    def stats(self) -> dict[str, int]:
        client = redis.Redis(port=self.redis_port)
        try:
            raw = client.hgetall(keys.STATS)
            return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        finally:
            client.close()

    def profile_path(self, shape: str, rep: int) -> Path | None:
        if not self.profile or rep != 0:
            return None
        RESULTS.mkdir(exist_ok=True)
        return RESULTS / f"{self.profile}-{shape}.prof"

    def drain_big(self) -> None:
        p = self.plan
        nkeys, per_key = p.drain_keys, p.drain_per_key
        say(f"drain: {nkeys:,} keys x {per_key:,} events, fsync on")
        rep = {"n": 0}

        def fill() -> None:
            self.flush()
            drain.load(self.redis_port, nkeys=nkeys, per_key=per_key)
            drain.wait_aof_rewrite(self.redis_port)

        # each repetition in trees of its own, none deleted before the bench ends (see
        # bench.drain, "Fresh trees"): "raw" and "logs" of the first, "raw1" and "logs1" ...
        def tree(name: str) -> Path:
            return self.tmp / f"{name}{rep['n'] or ''}"

        def raw_new() -> dict[str, Any]:
            fill()
            return drain.raw_drain(self.redis_port, tree("raw"), nkeys=nkeys, per_key=per_key)

        def raw_existing() -> dict[str, Any]:
            fill()
            return drain.raw_drain(self.redis_port, tree("raw"), nkeys=nkeys, per_key=per_key)

        def new() -> dict[str, Any]:
            fill()
            prof = self.profile_path("drain-new", rep["n"])
            return drain.logpipe_drain(
                self.redis_port, tree("logs"), nkeys=nkeys, per_key=per_key, profile=prof
            )

        def existing() -> dict[str, Any]:
            fill()
            before = drain.tree_size(tree("logs"))[1]
            prof = self.profile_path("drain-existing", rep["n"])
            out = drain.logpipe_drain(
                self.redis_port,
                tree("logs"),
                nkeys=nkeys,
                per_key=per_key,
                on_disk=before,
                profile=prof,
            )
            rep["n"] += 1
            return out

        self.interleaved(
            "drain",
            {"raw_new": raw_new, "new": new, "raw_existing": raw_existing, "existing": existing},
        )
        self.flush()

    def drain_many(self) -> None:
        p = self.plan
        nkeys, per_key = p.many_keys, p.many_per_key
        say(f"drain_many: {nkeys:,} keys x {per_key} events into new files, fsync on")
        rep = {"n": 0}

        # each run in a tree of its own, none deleted before the bench ends (see
        # bench.drain, "Fresh trees")
        def raw() -> dict[str, Any]:
            where = self.tmp / f"many-raw{rep['n']}"
            return drain.raw_new_files(where, nkeys=nkeys, per_key=per_key)

        def raw_syncfs() -> dict[str, Any]:
            where = self.tmp / f"many-raw-syncfs{rep['n']}"
            return drain.raw_new_files_syncfs(where, nkeys=nkeys, per_key=per_key)

        def logpipe() -> dict[str, Any]:
            self.flush()
            drain.load(self.redis_port, nkeys=nkeys, per_key=per_key)
            drain.wait_aof_rewrite(self.redis_port)
            prof = self.profile_path("drain-many", rep["n"])
            where = self.tmp / f"many-logs{rep['n']}"
            rep["n"] += 1
            return drain.logpipe_drain(
                self.redis_port, where, nkeys=nkeys, per_key=per_key, profile=prof
            )

        self.interleaved("drain_many", {"raw": raw, "raw_syncfs": raw_syncfs, "logpipe": logpipe})
        self.flush()

    def query(self) -> None:
        p = self.plan
        day = p.query_events + query_bench.BUFFERED
        say(f"query: one user's day of {day:,} events, first page and full export")
        rep = {"n": 0}

        def run() -> dict[str, Any]:
            # a fresh day each run (bench/query.py loads it, then times each query in a
            # child process of its own, so each peak RSS is that query's)
            self.flush()
            where = self.tmp / f"query{rep['n']}"
            where.mkdir()
            rep["n"] += 1
            return query_bench.run(self.redis_port, where, p.query_events)

        # no ceiling to interleave with: the three queries run in turn within each run
        self.interleaved("query", {"logpipe": run})
        self.flush()

    def run(self) -> None:
        self.start_redis()
        self.note_load()
        if self.figures & API_FIGURES:
            self.api_figures()
        if "drain" in self.figures:
            self.drain_big()
        if "drain_many" in self.figures:
            self.drain_many()
        if "query" in self.figures:
            self.query()
        self.note_load()


def process_cpu_s(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def check_one(port: int, token: str | None = None) -> None:
    """One real request first: a bench of 4xx answers would measure nothing."""
    body = json.dumps({"user_id": "bench", "event": "check", "timestamp": int(time.time())})
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/log", data=body.encode(), headers=headers
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        status = resp.status
        resp.read()
    if status != 200:
        raise BenchError(f"POST /log answered {status}")


# ---- the table ---------------------------------------------------------------------


def _n(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 100 else f"{x:,.0f}"


def _med(runs: list[dict[str, Any]], field: str) -> dict[str, Any]:
    return spread([float(r[field]) for r in runs])


def _show(s: dict[str, Any]) -> str:
    return f"{_n(s['median'])} ({_n(s['min'])}-{_n(s['max'])})"


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """(figure, value, ceiling, ratio, target, met) rows; also stored in the JSON.

    ``value`` and ``ceiling`` are the median with the min-max of the runs; ``ratio`` is
    the ratio of the medians.
    """
    out: list[dict[str, Any]] = []

    def row(
        figure: str,
        value: str,
        ceiling: str = "",
        ratio: float | None = None,
        target: str = "",
        met: bool | None = None,
    ) -> None:
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

    def compare(
        figure: str,
        runs: list[dict[str, Any]],
        ceiling: list[dict[str, Any]] | None,
        field: str,
        target: str = "",
        goal: float | None = None,
        ok: bool = True,
    ) -> None:
        mine = _med(runs, field)
        if not ceiling:
            row(figure, _show(mine), target=target)
            return
        top = _med(ceiling, field)
        ratio = mine["median"] / top["median"]
        met = None if goal is None else (ratio >= goal and ok)
        row(figure, _show(mine), _show(top), ratio, target, met)

    single = r.get("single")
    if single:
        errors = any(x["errors"] for x in single["logpipe"])
        row("trivial ASGI app, POST /log (req/s)", _show(_med(single["trivial"], "req_per_s")))
        compare(
            "POST /log, 32 conns (req/s) vs trivial",
            single["logpipe"],
            single["trivial"],
            "req_per_s",
            f">= {TARGET_SINGLE_RATIO}x",
            TARGET_SINGLE_RATIO,
            not errors,
        )
        if all("process_cpu_us_per_request" in x for x in single["logpipe"] + single["trivial"]):
            cpu = _med(single["logpipe"], "process_cpu_us_per_request")
            top = _med(single["trivial"], "process_cpu_us_per_request")
            cpu_ratio = cpu["median"] / top["median"]
            row(
                "  server process CPU per request (us) vs trivial",
                _show(cpu),
                _show(top),
                cpu_ratio,
                f"<= {1 / TARGET_SINGLE_RATIO:.2f}x",
                cpu_ratio <= 1 / TARGET_SINGLE_RATIO,
            )
        p99 = spread([x["latency_ms"]["p99"] for x in single["logpipe"]])
        row(
            "POST /log p99 (ms)",
            f"{p99['median']:.2f} ({p99['min']:.2f}-{p99['max']:.2f})",
            target=f"< {TARGET_P99_MS:g} ms",
            met=p99["median"] < TARGET_P99_MS,
        )
        if "rust" in single:
            compare(
                "POST /log (req/s) vs Rust original",
                single["logpipe"],
                single["rust"],
                "req_per_s",
                "reference",
            )
    batch = r.get("batch")
    if batch:
        errors = any(x["errors"] for x in batch["logpipe"])
        for x in batch["logpipe"]:
            x.setdefault("events_per_s", round(x["req_per_s"] * 1000, 1))
        compare(
            "POST /logs, 1,000/request (events/s) vs Redis -P 64",
            batch["logpipe"],
            batch["redis"],
            "events_per_s",
            f">= {TARGET_BATCH_RATIO}x",
            TARGET_BATCH_RATIO,
            not errors,
        )
    b100 = r.get("batch100")
    if b100:
        for side in b100.values():
            for x in side:
                x.setdefault("events_per_s", round(x["req_per_s"] * 100, 1))
        eps = _med(b100["logpipe"], "events_per_s")
        errors = any(x["errors"] for x in b100["logpipe"])
        row(
            "POST /logs, 100/request, 1,000 users (events/s)",
            _show(eps),
            target=f">= {_n(TARGET_BATCH100_EPS)}/s",
            met=eps["median"] >= TARGET_BATCH100_EPS and not errors,
        )
        if "rust" in b100:
            compare(
                "POST /logs, 100/request vs Rust original",
                b100["logpipe"],
                b100["rust"],
                "events_per_s",
                "reference",
            )
            if all("redis_cpu_us_per_request" in x for side in b100.values() for x in side):
                for side in b100.values():
                    for x in side:
                        x["server_cpu_us_per_event"] = x["process_cpu_us_per_request"] / 100
                        x["redis_cpu_us_per_event"] = x["redis_cpu_us_per_request"] / 100
                for what in ("server", "redis"):
                    compare(
                        f"  {'Redis' if what == 'redis' else 'server'} CPU per event (us) "
                        "vs Rust's",
                        b100["logpipe"],
                        b100["rust"],
                        f"{what}_cpu_us_per_event",
                        "reference",
                    )
    ids = r.get("ids")
    if ids:
        errors = any(x["errors"] for x in ids["id"] + ids["none"])
        compare(
            f"POST /log with event_id (req/s) vs without, {len(ids['id'])} pairs",
            ids["id"],
            ids["none"],
            "req_per_s",
            f">= {TARGET_IDS_RATIO}x",
            TARGET_IDS_RATIO,
            not errors,
        )
        cpu_id = _med(ids["id"], "cpu_us_per_request")
        cpu_none = _med(ids["none"], "cpu_us_per_request")
        cpu_ratio = cpu_id["median"] / cpu_none["median"]
        row(
            "  API + Redis CPU per request (us) vs without",
            _show(cpu_id),
            _show(cpu_none),
            cpu_ratio,
            f"<= {1 / TARGET_IDS_RATIO:.2f}x",
            cpu_ratio <= 1 / TARGET_IDS_RATIO and not errors,
        )
        for part in ("api", "redis"):
            field = f"{part}_cpu_us_per_request"
            if all(field in x for x in ids["id"] + ids["none"]):
                mine, theirs = _med(ids["id"], field), _med(ids["none"], field)
                row(
                    f"    of which {'the API' if part == 'api' else 'Redis'}",
                    _show(mine),
                    _show(theirs),
                    mine["median"] / theirs["median"],
                )
    auth = r.get("auth")
    if auth:
        errors = any(x["errors"] for x in auth["token"] + auth["none"])
        compare(
            f"POST /log with a bearer token (req/s) vs no tokens, {len(auth['token'])} pairs",
            auth["token"],
            auth["none"],
            "req_per_s",
            f">= {TARGET_AUTH_RATIO}x",
            TARGET_AUTH_RATIO,
            not errors,
        )
        cpu_tok = _med(auth["token"], "cpu_us_per_request")
        cpu_none = _med(auth["none"], "cpu_us_per_request")
        cpu_ratio = cpu_tok["median"] / cpu_none["median"]
        row(
            "  API + Redis CPU per request (us) vs no tokens",
            _show(cpu_tok),
            _show(cpu_none),
            cpu_ratio,
            f"<= {1 / TARGET_AUTH_RATIO:.2f}x",
            cpu_ratio <= 1 / TARGET_AUTH_RATIO and not errors,
        )
    rss = r.get("api_rss")
    if rss:
        label = f"API peak RSS per worker, {rss.get('workers', 1)} worker(s) (MB)"
        row(
            label,
            f"{rss['peak_rss_mb']:.1f}",
            target=f"< {TARGET_RSS_MB:g} MB",
            met=rss["peak_rss_mb"] < TARGET_RSS_MB,
        )
    d = r.get("drain")
    if d:
        shape = f"{d['new'][0]['keys']:,} x {d['new'][0]['events'] // d['new'][0]['keys']:,}"
        compare(
            f"drain {shape}, new files (events/s) vs raw loop",
            d["new"],
            d["raw_new"],
            "events_per_s",
            f">= {TARGET_DRAIN_RATIO}x",
            TARGET_DRAIN_RATIO,
        )
        compare(
            f"drain {shape}, files exist (events/s) vs raw loop",
            d["existing"],
            d["raw_existing"],
            "events_per_s",
            f">= {TARGET_DRAIN_RATIO}x",
            TARGET_DRAIN_RATIO,
        )
    m = r.get("drain_many")
    if m:
        keys_n = m["logpipe"][0]["keys"]
        compare(
            f"drain {keys_n:,} keys x 10, new files (keys/s) vs raw loop",
            m["logpipe"],
            m["raw"],
            "keys_per_s",
            f">= {TARGET_DRAIN_MANY_RATIO}x",
            TARGET_DRAIN_MANY_RATIO,
        )
        if m.get("raw_syncfs"):
            compare(
                "  vs the raw loop with one syncfs per 256 files",
                m["logpipe"],
                m["raw_syncfs"],
                "keys_per_s",
                "reference",
            )
        secs = spread([x["seconds"] for x in m["logpipe"]])
        row("  that pass (s)", f"{secs['median']:.1f} ({secs['min']:.1f}-{secs['max']:.1f})")
        peak = max(x["peak_rss_mb"] for x in m["logpipe"])
        row(
            "  drainer peak RSS in that pass (MB)",
            f"{peak:.1f}",
            target=f"< {TARGET_DRAIN_RSS_MB:g} MB",
            met=peak < TARGET_DRAIN_RSS_MB,
        )
    q = r.get("query")
    if q:
        runs = q["logpipe"]
        day = f"{runs[0]['events']:,}-event day"
        for what, label in (("first", "asc"), ("first_desc", "desc")):
            ms = spread([x[what]["seconds"] * 1000 for x in runs])
            row(
                f"query first page of 100, {label}, {day} (ms)",
                f"{ms['median']:.1f} ({ms['min']:.1f}-{ms['max']:.1f})",
            )
        exports = [x["export"] for x in runs]
        row(
            f"query full NDJSON export, {day} (events/s)",
            _show(spread([m["events"] / m["seconds"] for m in exports])),
        )
        mb = spread([(m["rss_peak_kb"] - m["rss_base_kb"]) / 1024 for m in exports])
        row(
            "  export peak RSS over imports (MB)",
            f"{mb['median']:.1f} ({mb['min']:.1f}-{mb['max']:.1f})",
        )
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
    p.add_argument("--quick", action="store_true", help="development run, under a minute")
    p.add_argument("--reps", type=int, default=3, help="runs of each figure (default 3)")
    p.add_argument(
        "--seconds", type=float, default=0, help="each wrk run (default 5, ids 4, quick 1)"
    )
    p.add_argument("--connections", type=int, default=32, help="wrk connections for POST /log")
    p.add_argument(
        "--batch-connections", type=int, default=8, help="wrk connections for POST /logs"
    )
    p.add_argument("--many-keys", type=int, default=0, help="keys of drain_many (100,000)")
    p.add_argument(
        "--only",
        default=",".join(FIGURES),
        help=f"comma-separated figures to measure, of {','.join(FIGURES)} (default: all)",
    )
    p.add_argument("--workers", type=int, default=1, help="logpipe serve --workers N")
    p.add_argument("--profile", action="store_true", help="save a cProfile of each drain shape")
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
    # on the disk the repository is on (where a deployment's logs_dir would be), not a
    # tmpfs /tmp, where fsync costs nothing
    (ROOT / ".logpipe").mkdir(exist_ok=True)  # not there in a fresh checkout
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / ".logpipe"))
    stem = f"{started:%Y-%m-%dT%H%M%S}{'-quick' if args.quick else ''}"
    bench = Bench(plan, figures, tmp, stem if args.profile else "")
    finished = False
    try:
        bench.run()
        finished = True
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
        if not finished:
            _clean(tmp, args.keep)
    try:
        return _report(bench, args, plan, started, stem)
    finally:
        # after the table: deleting the runs' trees (600,000 inodes) takes minutes
        _clean(tmp, args.keep)


def _clean(tmp: Path, keep: bool) -> None:
    if keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        drain.remove(tmp)


def _report(
    bench: Bench, args: argparse.Namespace, plan: Plan, started: dt.datetime, stem: str
) -> int:
    table = rows(bench.results)
    info = machine()
    header = (
        f"logpipe bench {'(quick: smoke run, not comparable) ' if args.quick else ''}"
        f"{started:%Y-%m-%d %H:%M} UTC on {info['nproc']} x {info['cpu_model']}, "
        f"Python {info['python']}; {plan.reps} runs of each figure, median (min-max); "
        f"load average {min(bench.load, default=0):.1f}-{max(bench.load, default=0):.1f}"
    )
    print(header)
    print(render(table))
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        name = f"{stem}.json"
        doc = {
            "date": started.isoformat(timespec="seconds"),
            "seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
            "load_average": bench.load,
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
