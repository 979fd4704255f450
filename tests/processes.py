"""logpipe as real processes, load generators, and the checks that count what reached the files.

Used by tests/e2e and tests/faults. Every process is started with ``python -m logpipe_cli``
in a scratch working directory (so no ``config.toml`` is picked up by accident), configured
only through ``LOGPIPE_*`` variables, with its output in files that a failing test prints.
Every wait polls for a condition until a generous deadline; none sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import redis

from tests.redis_server import free_port

LOGPIPE = [sys.executable, "-m", "logpipe_cli"]
DAY_S = 86400
#: an event time well in the past (backfill is accepted), so the day never moves mid-test
BASE_TS = 1_700_000_000
#: how long any wait may take before the test fails: generous for a loaded 2-core machine
DEADLINE_S = 60.0
#: for every plain-HTTP call a test makes in a loop: httpx builds a new TLS context for each
#: client it makes otherwise, loading the CA bundle (~20 ms of CPU a call, most of a
#: poller's cost), even for an http:// URL
VERIFY = ssl.create_default_context()


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    *,
    timeout_s: float = DEADLINE_S,
    poll_s: float = 0.02,
    procs: Sequence[LogpipeProcess] = (),
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``.

    A process in ``procs`` that exits meanwhile fails the wait at once, with its output.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        for p in procs:
            if p.popen.poll() is not None:
                pytest.fail(
                    f"{p.name} exited with {p.popen.returncode} while waiting for "
                    f"{what}\n{p.output()}",
                    pytrace=False,
                )
        if time.monotonic() > deadline:
            detail = "\n".join(p.output() for p in procs)
            pytest.fail(
                f"timed out after {timeout_s:g} s waiting for {what}\n{detail}", pytrace=False
            )
        time.sleep(poll_s)


# ---- processes ----------------------------------------------------------------------


@dataclass
class LogpipeProcess:
    """One ``logpipe`` child; stdout and stderr go to files (or pipes, see ``start``)."""

    name: str
    popen: subprocess.Popen[bytes]
    out_path: Path | None
    err_path: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path else ""

    def output(self) -> str:
        return (
            f"--- {self.name} (pid {self.pid}) stdout ---\n{self.stdout()[-4000:]}"
            f"\n--- {self.name} stderr ---\n{self.stderr()[-4000:]}"
        )

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(
                f"{self.name} did not exit within {timeout_s:g} s\n{self.output()}", pytrace=False
            )

    def terminate(self, timeout_s: float = DEADLINE_S) -> int:
        """SIGTERM, then wait for the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL (also works on a stopped process) and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


@dataclass
class Api:
    proc: LogpipeProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM: uvicorn finishes in-flight requests and the lifespan, then re-raises the
        signal so the parent sees how it ended: the exit status is -SIGTERM, not 0."""
        code = self.proc.terminate()
        assert code == -signal.SIGTERM, self.proc.output()
        assert "Application shutdown complete" in self.proc.stderr(), self.proc.output()


class Launcher:
    """Starts logpipe processes for one test and kills whatever is left at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[LogpipeProcess] = []
        self._ids = itertools.count(1)

    def env(self, redis_url: str, logs_dir: Path, **settings: Any) -> dict[str, str]:
        """The environment for a child: ``drainer_lease_seconds=0.5`` sets
        ``LOGPIPE_DRAINER_LEASE_SECONDS``; inherited ``LOGPIPE_*`` variables are dropped."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
        env.update(
            PYTHONUNBUFFERED="1",
            LOGPIPE_REDIS_URL=redis_url,
            LOGPIPE_DRAINER_LOGS_DIR=str(logs_dir),
        )
        for key, value in settings.items():
            env[f"LOGPIPE_{key.upper()}"] = str(value)
        return env

    def start(
        self,
        args: Sequence[str],
        env: dict[str, str],
        *,
        name: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
        pipes: bool = False,
    ) -> LogpipeProcess:
        """Start ``logpipe <args>``. ``pipes`` sends output to pipes instead of files (for a
        process whose file size limit would also apply to its own log files)."""
        n = next(self._ids)
        name = name or f"{args[0]}-{n}"
        out: int | BinaryIO = subprocess.PIPE
        err: int | BinaryIO = subprocess.PIPE
        out_path = err_path = None
        if not pipes:
            out_path = self.workdir / f"{n:03d}-{name}.out"
            err_path = self.workdir / f"{n:03d}-{name}.err"
            out, err = out_path.open("wb"), err_path.open("wb")
        try:
            popen = subprocess.Popen(
                [*LOGPIPE, *args],
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=preexec_fn,
            )
        finally:
            for f in (out, err):
                if not isinstance(f, int):
                    f.close()
        proc = LogpipeProcess(name, popen, out_path, err_path)
        self.procs.append(proc)
        return proc

    def run(
        self,
        args: Sequence[str],
        env: dict[str, str],
        *,
        timeout_s: float = DEADLINE_S,
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``logpipe <args>`` to the end and capture its output."""
        return subprocess.run(
            [*LOGPIPE, *args],
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            preexec_fn=preexec_fn,
            check=False,
        )

    def api(self, env: dict[str, str], *, name: str = "serve") -> Api:
        """Start ``logpipe serve`` on a free port and wait until ``/healthz`` answers."""
        port = free_port()
        proc = self.start(["serve"], {**env, "LOGPIPE_SERVER_PORT": str(port)}, name=name)
        api = Api(proc, port)
        wait_until(lambda: healthy(api.url), f"{name} to answer /healthz", procs=[proc])
        return api

    def cleanup(self) -> None:
        for p in self.procs:
            p.kill()
            if p.popen.stdout:
                p.popen.stdout.close()
            if p.popen.stderr:
                p.popen.stderr.close()


def text(value: bytes | str) -> str:
    """A Redis reply as text (redis-py types replies as ``bytes | str``)."""
    return value.decode() if isinstance(value, bytes) else value


def redis_hash(client: redis.Redis, name: str) -> dict[str, str]:
    """A Redis hash (``logpipe:stats``, ...) as text."""
    return {text(k): text(v) for k, v in client.hgetall(name).items()}


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2.0, verify=VERIFY).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Start logpipe processes; any still running when the test ends is killed."""
    lau = Launcher(tmp_path / "procs")
    try:
        yield lau
    finally:
        lau.cleanup()


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (``drain --json`` in loop mode)."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


# ---- events and load ----------------------------------------------------------------


def make_event(user: str, seq: int, tag: str, *, pad: int = 0) -> dict[str, Any]:
    """Event ``seq`` of ``user``; odd events fall on the day before, so each user has two
    keys. ``id`` is unique in the test and ``seq`` gives the order it was sent in."""
    ev: dict[str, Any] = {
        "user_id": user,
        "event": "tick",
        "timestamp": BASE_TS - (seq % 2) * DAY_S,
        "id": f"{tag}:{user}:{seq}",
        "seq": seq,
    }
    if pad:
        ev["pad"] = "x" * pad
    return ev


@dataclass
class Sent:
    """Everything a load generator sent, by event id."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: id -> HTTP status, or the name of the transport error ("ConnectError", ...)
    outcome: dict[str, int | str] = field(default_factory=dict)

    def add(self, ev: dict[str, Any], outcome: int | str) -> None:
        self.events[ev["id"]] = ev
        self.outcome[ev["id"]] = outcome

    def merge(self, other: Sent) -> None:
        self.events.update(other.events)
        self.outcome.update(other.outcome)

    @property
    def accepted(self) -> set[str]:
        return {i for i, o in self.outcome.items() if o == 200}

    def count(self) -> Counter[int | str]:
        return Counter(self.outcome.values())


class LoadGenerator:
    """Threads that POST events one at a time until stopped.

    Each thread owns its users, so the order of each user's events (and so of each
    Redis key and file) is the order that thread sent them in. A refused event (503, a
    closed connection) is not sent again: the next one gets a new ``seq``.
    """

    def __init__(
        self,
        url: str,
        users: Sequence[str],
        *,
        threads: int = 2,
        tag: str = "load",
        pause_s: float = 0.0,
        timeout_s: float = 30.0,
        pad: int = 0,
    ) -> None:
        self.url = url
        self.tag = tag
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.pad = pad
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = Sent()
        self._counts: Counter[int | str] = Counter()
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(list(users[i::threads]),), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> LoadGenerator:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, users: list[str]) -> None:
        seqs = dict.fromkeys(users, 0)
        try:
            with httpx.Client(timeout=self.timeout_s, verify=VERIFY) as http:
                for user in itertools.cycle(users):
                    if self._stop.is_set():
                        return
                    ev = make_event(user, seqs[user], self.tag, pad=self.pad)
                    seqs[user] += 1
                    outcome: int | str
                    try:
                        outcome = http.post(self.url + "/log", json=ev).status_code
                    except httpx.TransportError as exc:
                        outcome = type(exc).__name__
                    with self._lock:
                        self._sent.add(ev, outcome)
                        self._counts[outcome] += 1
                    if outcome != 200:
                        self._stop.wait(0.01)  # the server is down or refusing: no busy loop
                    elif self.pause_s:
                        self._stop.wait(self.pause_s)
        except BaseException as exc:  # reported by stop(): a broken generator fails the test
            self._errors.append(exc)

    def counts(self) -> Counter[int | str]:
        with self._lock:
            return Counter(self._counts)

    def stop(self) -> Sent:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=DEADLINE_S)
            assert not t.is_alive(), "a load generator thread did not stop"
        assert not self._errors, f"load generator failed: {self._errors!r}"
        return self._sent


def post_batch(url: str, events: Sequence[dict[str, Any]]) -> None:
    """Store events through ``POST /logs`` (NDJSON), failing the test unless all are stored."""
    body = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
    resp = httpx.post(
        url + "/logs",
        content=body,
        headers={"content-type": "application/x-ndjson"},
        timeout=DEADLINE_S,
        verify=VERIFY,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": len(events)}


# ---- what reached the files ---------------------------------------------------------


@dataclass
class Delivery:
    """What the files under ``logs_dir`` hold, checked against what was sent."""

    files: int = 0
    lines: int = 0
    accepted: int = 0
    #: accepted (200) events found in no file
    lost: int = 0
    #: extra copies of an event (an event found 3 times counts 2)
    duplicated: int = 0
    #: lines that are not one whole JSON object, including a last line without newline
    torn: int = 0
    #: events in a file other than user_<their user>/<their day>.jsonl, or files not so named
    misplaced: int = 0
    #: places where a user's events are not in the order they were sent
    out_of_order: int = 0
    #: events in the files that were never sent
    unknown: int = 0
    #: events refused or unanswered (not 200) that were stored anyway: allowed, not lost
    stored_without_200: int = 0
    ids: Counter[str] = field(default_factory=Counter)

    def figures(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "torn": self.torn,
            "misplaced": self.misplaced,
            "out_of_order": self.out_of_order,
            "stored_without_200": self.stored_without_200,
        }

    def assert_exactly_once(self) -> None:
        """Every accepted event once, whole, in its file, in order; nothing invented."""
        bad = {
            k: v
            for k, v in self.figures().items()
            if k in ("lost", "duplicated", "torn", "misplaced", "out_of_order") and v
        }
        assert not bad, f"delivery broken: {self.figures()}"
        assert not self.unknown, f"{self.unknown} events in the files were never sent"


def check_files(logs_dir: Path, sent: Sent, *, skip_users: Sequence[str] = ()) -> Delivery:
    """Read every file under ``logs_dir`` and compare it with ``sent``.

    ``skip_users``: users whose files the test checks by itself (events not from ``sent``).
    """
    d = Delivery(accepted=len(sent.accepted))
    last_seq: dict[str, int] = {}
    for path in sorted(p for p in logs_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(logs_dir)
        user_dir, name = rel.parts if len(rel.parts) == 2 else ("", "")
        if user_dir in {f"user_{u}" for u in skip_users}:
            continue
        d.files += 1
        if not (user_dir.startswith("user_") and name.endswith(".jsonl") and name[:-6].isdigit()):
            d.misplaced += 1
            continue
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            d.torn += 1  # a partial last line
            data = data[: data.rfind(b"\n") + 1]
        # seq order is per user and per key (file): both hold, as odd/even seqs map to days
        for raw in data.splitlines():
            d.lines += 1
            try:
                ev = json.loads(raw)
            except ValueError:
                d.torn += 1
                continue
            if not isinstance(ev, dict) or "id" not in ev:
                d.torn += 1
                continue
            d.ids[ev["id"]] += 1
            if ev["id"] not in sent.events:
                d.unknown += 1
                continue
            if f"user_{ev['user_id']}" != user_dir or ev["timestamp"] // DAY_S != int(name[:-6]):
                d.misplaced += 1
            key = str(rel)
            if ev["seq"] <= last_seq.get(key, -1):
                d.out_of_order += 1
            last_seq[key] = ev["seq"]
    accepted = sent.accepted
    d.lost = sum(1 for i in accepted if d.ids[i] == 0)
    d.duplicated = sum(n - 1 for n in d.ids.values() if n > 1)
    d.stored_without_200 = sum(1 for i in d.ids if i in sent.events and i not in accepted)
    return d


def redis_leftovers(url: str) -> dict[str, Any]:
    """Event lists, claims, leases and pending offsets still in Redis, and the counter."""
    client = redis.Redis.from_url(url)
    try:
        left: dict[str, Any] = {
            pattern: sorted(k.decode(errors="replace") for k in client.scan_iter(pattern))
            for pattern in ("logs:*", "logpipe:claim:*", "logpipe:lease:*", "logpipe:offset:*")
        }
        left["buffered"] = int(client.hget("logpipe:stats", "buffered") or 0)
        return left
    finally:
        client.close()


def redis_drained(url: str) -> bool:
    """Nothing left to drain: no event list, no claim, no lease, counter at zero."""
    left = redis_leftovers(url)
    return not any(left.values())


def stat(url: str, name: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.hget("logpipe:stats", name) or 0)
    finally:
        client.close()


def tcp_sockets() -> list[dict[str, int]]:
    """Established IPv4 TCP sockets on this host (from /proc/net/tcp)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] != "01":
            continue
        tx, rx = (int(x, 16) for x in f[4].split(":"))
        out.append(
            {
                "local_port": int(f[1].split(":")[1], 16),
                "remote_port": int(f[2].split(":")[1], 16),
                "tx_queue": tx,
                "rx_queue": rx,
            }
        )
    return out


class CountingProxy:
    """A TCP forwarder that counts the ``503`` answers passing through it.

    Lets a test wait, without guessing at timings, until a client has really been
    refused before it ends an outage.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refused = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        tail = b""
        try:
            while chunk := src.recv(65536):
                if count:
                    seen = tail + chunk
                    with self._lock:
                        self.refused += seen.count(b"HTTP/1.1 503 ")
                    tail = seen[-12:]
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
