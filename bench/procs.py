"""The processes a bench run starts, and the guarantee that it stops every one of them.

Each child runs in a session of its own, so a Ctrl-C at the terminal reaches only the
harness, which then stops its children in order (SIGTERM, then SIGKILL), by process
group id. Nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class BenchError(Exception):
    """The bench cannot go on (a tool is missing, a server did not start)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BenchError(f"{tool} is not installed (apt-get install {tool.split('-')[0]})")
    return path


class Procs:
    """A registry of started children; :meth:`stop_all` runs in the harness's ``finally``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._live: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._live[proc.pid] = (name, proc)
        return proc

    def run(self, name: str, argv: list[str], *, timeout_s: float) -> str:
        """Run a load tool to completion; returns its stdout (stderr goes to the log)."""
        log = (self.logs / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        self._live[proc.pid] = (name, proc)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} ran longer than {timeout_s:.0f} s") from None
        finally:
            self.stop(proc)
        if proc.returncode != 0:
            raise BenchError(f"{name} exited with {proc.returncode}; see {self.logs / name}.log")
        return out.decode("utf-8", "replace")

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it if it lingers."""
        self._live.pop(proc.pid, None)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        # a worker the child forked may outlive it in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for _, proc in reversed(list(self._live.values())):
            self.stop(proc, timeout_s=5.0)


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    name: str,
    timeout_s: float = 20.0,
    *,
    accept_any: bool = False,
) -> None:
    """Wait until ``url`` answers 200, or anything with ``accept_any`` (or fail if
    ``proc`` exits first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError:
            if accept_any:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} before answering {url}")
        if time.monotonic() > deadline:
            raise BenchError(f"{name} did not answer {url} within {timeout_s:.0f} s")
        time.sleep(0.1)


def wait_redis(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def worker_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (uvicorn's workers under its supervisor)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmHWM = peak RSS, VmRSS = RSS now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")
