"""``logpipe run``: the whole pipeline on one machine, for trying it out.

Starts a ``redis-server`` (data under ``.logpipe/``, append-only file on) if none answers
at the configured URL, then ``logpipe serve`` and ``logpipe drain`` as child processes.
SIGINT/SIGTERM stops them all: the API and drainer first, so they finish what they hold,
then Redis, which writes its append-only file on the way out.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import redis

from logpipe_cli.errors import LogpipeError
from logpipe_cli.settings import Settings

log = logging.getLogger("logpipe.run")
STATE_DIR = Path(".logpipe")
PID_FILE = STATE_DIR / "run.pid"
INSTALL_HINT = (
    "redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install redis-server; "
    "macOS: brew install redis) or point redis.url at a running Redis"
)


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_redis(url: str, state_dir: Path = STATE_DIR) -> subprocess.Popen[bytes]:
    """Start a local redis-server for ``url`` with AOF on; wait until it answers."""
    server = shutil.which("redis-server")
    if server is None:
        raise LogpipeError(INSTALL_HINT)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise LogpipeError(f"no Redis answers at {host}, and logpipe only starts one locally")
    data = (state_dir / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(parts.port or 6379),
            "--bind",
            host,
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(data / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers(url, 0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise LogpipeError(f"redis-server did not start; see {data / 'redis.log'}")
        time.sleep(0.1)
    return proc


def run(settings: Settings, notify: Callable[[str], None] = log.info) -> int:
    """Run Redis (if needed), the API and the drainer until a signal; returns an exit code."""
    STATE_DIR.mkdir(exist_ok=True)
    redis_proc = None
    if not redis_answers(settings.redis.url):
        notify(
            f"no Redis at {settings.redis.url}: starting redis-server (data in {STATE_DIR}/redis)"
        )
        redis_proc = start_redis(settings.redis.url)
    else:
        notify(f"using the Redis that answers at {settings.redis.url}")
    base = [sys.executable, "-m", "logpipe_cli"]
    if settings.path is not None:
        base += ["--config", str(settings.path)]
    children = {
        "api": subprocess.Popen([*base, "serve"], stdin=subprocess.DEVNULL),
        "drainer": subprocess.Popen([*base, "drain"], stdin=subprocess.DEVNULL),
    }
    PID_FILE.write_text(str(os.getpid()))
    notify(
        f"API on http://{settings.server.host}:{settings.server.port}, drainer every "
        f"{settings.drainer.interval_seconds:g} s into {settings.drainer.logs_dir}/; Ctrl-C stops"
    )
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    notify(f"{name} exited with code {proc.returncode}; stopping the rest")
                    stopping, code = True, 1
            time.sleep(0.2)
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
        for s, handler in old.items():
            signal.signal(s, handler)
        PID_FILE.unlink(missing_ok=True)
        notify("stopped")
    return code
