"""Where the API's time goes under load: py-spy samples ``logpipe serve`` while wrk drives
one shape of traffic.

    python -m bench.profile_api [--shape single|token|ids|noids|batch|batch100] [--seconds 8]
        [--tag T]

Starts its own redis-server (AOF on, ``appendfsync everysec``, as ``bench.run``) and a
1-worker ``logpipe serve``, runs wrk for ``--seconds`` while ``py-spy record`` samples
the API process (``--native`` off: Python frames only), and writes under
``bench/results/``: ``profile-<tag>-<shape>.txt`` (collapsed stacks, py-spy's ``raw``
format) and ``profile-<tag>-<shape>.top.txt``, the functions with the most samples, self
and inclusive, as shares of the samples. Its first line gives the CPU time per request of the API,
of Redis and of wrk over the same run (with ``--no-spy``, only that line): on these 2 cores
the three share the machine, and which one is busy says what bounds the throughput.
Needs ``py-spy`` (``pip install py-spy``) and ``wrk``.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen
from bench.procs import Procs, free_port, need, wait_http, wait_redis
from bench.run import AUTH_TOKEN, RESULTS, ROOT, check_one, server_env

#: shape -> (path, wrk script, its arguments)
SHAPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "single": ("/log", "post_log.lua", ("1000",)),
    # single events with a bearer token, to an API with tokens configured
    "token": ("/log", "post_log.lua", ("1000", AUTH_TOKEN)),
    "ids": ("/log", "post_log_ids.lua", ("1000", "id", "prof")),
    "noids": ("/log", "post_log_ids.lua", ("1000", "none", "prof")),
    "batch": ("/logs", "post_logs.lua", ("1000", "100")),
    "batch100": ("/logs", "post_logs.lua", ("100", "1000")),
}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds the waited-for children (wrk's runs) have used so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def pyspy() -> str:
    """py-spy beside this Python (the venv's), else on the PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else need("py-spy")


def top(collapsed: str, n: int = 40) -> str:
    """The ``n`` functions with the most samples in py-spy's collapsed stacks: self
    share, inclusive share (a function counted once per stack however deep it recurs)."""
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        total += k
        frames = stack.split(";")
        self_[frames[-1]] += k
        for frame in set(frames):
            incl[frame] += k
    if not total:
        return "no samples\n"
    out = [f"{total} samples\n", "self%   incl%   function (file:line)"]
    for name, k in incl.most_common(n):
        out.append(f"{self_[name] / total * 100:5.1f}  {k / total * 100:6.1f}   {name}")
    out += ["", "by self samples:"]
    for name, k in self_.most_common(n):
        out.append(f"{k / total * 100:5.1f}   {name}")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="single")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=0, help="default 32 (/log), 8 (/logs)")
    p.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    p.add_argument(
        "--no-spy", action="store_true", help="only the CPU time per request, no profile"
    )
    p.add_argument("--trivial", action="store_true", help="the trivial ASGI app instead")
    args = p.parse_args()
    path, script, wrk_args = SHAPES[args.shape]
    tokens = {"LOGPIPE_AUTH_INGEST_TOKENS": AUTH_TOKEN} if args.shape == "token" else {}
    conns = args.connections or (32 if path == "/log" else 8)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"profile-{args.tag}-{args.shape}"
    with tempfile.TemporaryDirectory(prefix="logpipe-prof-") as tmp_s:
        tmp = Path(tmp_s)
        procs = Procs(tmp)
        try:
            rport = free_port()
            (tmp / "redis").mkdir()
            redis_proc = procs.start(
                "redis-server",
                [need("redis-server"), "--port", str(rport), "--bind", "127.0.0.1",
                 "--dir", str(tmp / "redis"), "--save", "", "--appendonly", "yes",
                 "--appendfsync", "everysec"],
            )  # fmt: skip
            wait_redis(rport, redis_proc)
            port = free_port()
            if args.trivial:
                api = procs.start(
                    "trivial-app",
                    [sys.executable, "-m", "uvicorn", "bench.trivial_app:app", "--app-dir",
                     str(ROOT), "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                     "--no-access-log", "--log-level", "warning", "--no-server-header",
                     "--no-date-header", "--lifespan", "off"],
                    cwd=tmp,
                )  # fmt: skip
                wait_http(f"http://127.0.0.1:{port}/", api, "trivial app")
            else:
                api = procs.start(
                    "logpipe-serve",
                    [sys.executable, "-m", "logpipe_cli", "serve"],
                    cwd=tmp,
                    env=server_env(rport, port) | tokens,
                )
                wait_http(f"http://127.0.0.1:{port}/readyz", api, "logpipe serve")
                check_one(port, AUTH_TOKEN if tokens else None)
            url = f"http://127.0.0.1:{port}{path}"
            loadgen.wrk(procs, url, script, seconds=1, connections=conns, args=wrk_args)
            spy = None if args.no_spy else subprocess.Popen(
                [pyspy(), "record", "--pid", str(api.pid), "--format", "raw",
                 "--rate", "250", "--function", "--duration", str(round(args.seconds)), "--output",
                 str(stem) + ".txt", "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if spy is not None:
                time.sleep(0.5)  # py-spy attached before the load starts
            cpu0, rcpu0, wcpu0 = cpu_s(api.pid), cpu_s(redis_proc.pid), children_cpu_s()
            res = loadgen.wrk(
                procs, url, script, seconds=args.seconds - 1, connections=conns, args=wrk_args
            )
            per = 1e6 / max(res.requests, 1)
            cpu_us = (cpu_s(api.pid) - cpu0) * per
            redis_us = (cpu_s(redis_proc.pid) - rcpu0) * per
            wrk_us = (children_cpu_s() - wcpu0) * per
            if spy is not None:
                spy.wait(timeout=args.seconds + 30)
        finally:
            procs.stop_all()
    header = (
        f"{'trivial' if args.trivial else 'logpipe'} {args.shape}: {res.rps:,.0f} req/s, "
        f"API CPU {cpu_us:.1f} us/request (Redis {redis_us:.1f}, wrk {wrk_us:.1f}), "
        f"p99 {res.p99_ms} ms, {conns} conns, "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    if args.no_spy:
        print(header, end="")
        return 0
    summary = top(Path(str(stem) + ".txt").read_text())
    Path(str(stem) + ".top.txt").write_text(header + summary)
    print(header + summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
