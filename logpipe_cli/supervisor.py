"""``logpipe run``: the whole pipeline on one machine, for trying it out.

Starts a ``redis-server`` (data under ``.logpipe/``, append-only file on) if none answers
at the configured URL, then ``logpipe serve`` and ``logpipe drain`` as child processes.
SIGINT/SIGTERM/SIGHUP stops them all: the API and drainer first, so they finish what they
hold, then Redis, which writes its append-only file on the way out.

The children run in their own process group, so a Ctrl-C or a closed terminal reaches only
this supervisor, which stops them in that order. On Linux each child also asks the kernel
for SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), so even a SIGKILL of
``logpipe run`` leaves no orphan Redis, API or drainer behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from logpipe_cli import redis_binary
from logpipe_cli.errors import LogpipeError
from logpipe_cli.listen import check_listen
from logpipe_cli.redis_conn import redis_client_kwargs
from logpipe_cli.settings import Settings, mask_url

log = logging.getLogger("logpipe.run")
STATE_DIR = Path(".logpipe")
PID_FILE = STATE_DIR / "run.pid"
_PR_SET_PDEATHSIG = 1


class RedisRefusedError(LogpipeError):
    """Something answers at the Redis URL but will not serve us (auth, ACL, protocol)."""


def redis_answers(url: str, timeout_s: float = 1.0, **client_options: Any) -> bool:
    """True if a Redis answers PING at ``url``; False if nothing does.

    Raises :class:`RedisRefusedError` when something answers but refuses us (a password
    or ACL we do not have, or not Redis at all): starting another Redis would only fail
    on the busy port, so the operator needs the real reason.
    """
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **client_options
    )
    try:
        return bool(client.ping())
    except (
        redis.AuthenticationError,
        redis.ResponseError,
        redis.exceptions.InvalidResponse,
    ) as exc:
        raise _refused(url, exc) from None
    except redis.ConnectionError as exc:
        # redis-py reports a non-Redis peer's bytes as a ConnectionError "Protocol error"
        if "protocol" in str(exc).lower():
            raise _refused(url, exc) from None
        return False
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _refused(url: str, exc: Exception) -> RedisRefusedError:
    detail = str(exc)
    if isinstance(exc, redis.AuthenticationError) or "auth" in detail.lower():
        detail += " (give the password in redis.url: redis://:PASSWORD@host:port)"
    return RedisRefusedError(f"Redis at {mask_url(url)} refused us: {detail}")


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: own process group, and SIGTERM when the parent dies (Linux).

    libc is loaded here, before the fork: the child must do as little as possible.
    """
    parent = os.getpid()
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None

    def preexec() -> None:
        os.setpgid(0, 0)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return preexec


#: the least memory a Redis that `logpipe run` starts may use
MIN_MAXMEMORY_BYTES = 256 * 1024 * 1024


def _maxmemory_for(max_buffered_bytes: int) -> int:
    """Room for the buffered bytes twice over (list and key overhead, claims, counters)."""
    return max(MIN_MAXMEMORY_BYTES, 2 * max_buffered_bytes) if max_buffered_bytes else 0


def _refuse_older_redis_on_newer_data(server: Path, data: Path) -> None:
    """Redis 7 keeps its AOF in ``appendonlydir/``; Redis 6 reads only ``appendonly.aof``
    and would start empty beside it, hiding every buffered event until a Redis 7 runs
    again. (Redis 7 upgrades a 6 file by itself, so the other way is safe.)"""
    if not (data / "appendonlydir").is_dir():
        return
    major = redis_binary.major_version(server)
    if major is not None and major < 7:
        raise LogpipeError(
            f"{data} holds data written by Redis 7 (appendonlydir/), which {server} "
            f"(Redis {major}) cannot read: it would start empty and hide the buffered "
            "events. Start with --redis-server pointing at Redis 7 or newer"
        )


def start_redis(
    url: str, state_dir: Path = STATE_DIR, binary: str | None = None, maxmemory_bytes: int = 0
) -> subprocess.Popen[bytes]:
    """Start a local redis-server for ``url`` with AOF on; wait until it answers.

    ``binary`` is the ``--redis-server`` path if given; else see :func:`redis_binary.find`.
    ``maxmemory_bytes`` (0 = none) caps it with ``noeviction``: a full Redis refuses
    writes (the API answers 503) rather than dropping buffered events.
    """
    server = redis_binary.find(binary)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise LogpipeError(f"no Redis answers at {host}, and logpipe only starts one locally")
    data = (state_dir / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    _refuse_older_redis_on_newer_data(server, data)
    # A password in the URL is given to the new Redis on its stdin ("-" reads the config
    # from there), never as an argument that `ps` shows to every user.
    secret = _auth_config(
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password is not None else None,
    )
    proc = subprocess.Popen(
        [
            server,
            *(["-"] if secret else []),
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
            *(
                ["--maxmemory", str(maxmemory_bytes), "--maxmemory-policy", "noeviction"]
                if maxmemory_bytes
                else []
            ),
            "--logfile",
            str(data / "redis.log"),
        ],
        stdin=subprocess.PIPE if secret else subprocess.DEVNULL,
        preexec_fn=_die_with_parent(),
    )
    if proc.stdin is not None:
        proc.stdin.write(secret.encode())
        proc.stdin.close()
    deadline = time.monotonic() + 10
    try:
        while not redis_answers(url, 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LogpipeError(f"{server} did not start; see {data / 'redis.log'}")
            time.sleep(0.1)
    except LogpipeError:
        proc.kill()
        proc.wait()
        raise
    return proc


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _auth_config(username: str | None, password: str | None) -> str:
    """redis.conf lines that make a new Redis accept the URL's user and password."""
    if password is None:
        return ""
    if username in (None, "", "default"):
        return f"requirepass {_quote(password)}\n"
    # a named user gets all rights; the passwordless default user is turned off
    return f"user {_quote(username)} on {_quote('>' + password)} ~* &* +@all\nuser default off\n"


def run(
    settings: Settings,
    notify: Callable[[str], None] = log.info,
    redis_server: str | None = None,
) -> int:
    """Run Redis (if needed), the API and the drainer until a signal; returns an exit code.

    ``redis_server`` is the redis-server binary to start if none answers (default: see
    :func:`redis_binary.find`).
    """
    STATE_DIR.mkdir(exist_ok=True)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Installed before anything starts, so a signal during start-up stops what did start.
    # SIGHUP: the terminal running `make run` was closed; stop as cleanly as on Ctrl-C.
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, on_signal) for s in stop_signals}
    redis_proc = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    code = 0
    try:
        # before Redis is started: a taken port stops `run` with one line, not after
        # "API on ..." was printed and the API failed behind it
        check_listen(settings.server.host, settings.server.port)
        url = mask_url(settings.redis.url)
        if settings.redis.mode == "sentinel":
            # the master lives where the Sentinels say: nothing local to start
            notify(f"using the master the Sentinels name {settings.redis.sentinel_master!r}")
        # the same TLS options as every other client (rediss:// with a private CA)
        elif not redis_answers(settings.redis.url, **redis_client_kwargs(settings.redis)):
            binary = redis_binary.find(redis_server)
            notify(f"no Redis at {url}: starting redis-server {binary} (data in {STATE_DIR}/redis)")
            redis_proc = start_redis(
                settings.redis.url,
                binary=str(binary),
                maxmemory_bytes=_maxmemory_for(settings.redis.max_buffered_bytes),
            )
        else:
            notify(f"using the Redis that answers at {url}")
        base = [sys.executable, "-m", "logpipe_cli"]
        if settings.path is not None:
            base += ["--config", str(settings.path)]
        for name, command in (("api", "serve"), ("drainer", "drain")):
            children[name] = subprocess.Popen(
                [*base, command], stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent()
            )
        PID_FILE.write_text(str(os.getpid()))
        notify(
            f"API on http://{settings.server.host}:{settings.server.port}, drainer every "
            f"{settings.drainer.interval_seconds:g} s into {settings.drainer.logs_dir}/; "
            "Ctrl-C stops"
        )
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
        with contextlib.suppress(OSError):
            if PID_FILE.read_text() == str(os.getpid()):  # not another run's
                PID_FILE.unlink()
        if children:
            notify("stopped")
    return code
