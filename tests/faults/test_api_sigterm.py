"""Fault 5: the API is stopped with SIGTERM under load.

Redis is frozen (SIGSTOP) first, so requests pile up inside the API: the load
generator's, and eight sent by hand whose bytes the API has provably read (their
sockets' receive queues are empty) before the signal. After SIGTERM the API must refuse
new connections while it waits for them; once Redis thaws, every one of them is
answered 200 and stored, the API exits, and nothing that got a 200 is lost.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.report import record
from tests.processes import (
    DEADLINE_S,
    Launcher,
    LoadGenerator,
    check_files,
    make_event,
    redis_drained,
    redis_leftovers,
    tcp_sockets,
    wait_until,
)
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.redis]

IN_FLIGHT = 8


def raw_post(port: int, ev: dict[str, Any]) -> socket.socket:
    """Send one whole ``POST /log`` on a new connection; the answer is read later."""
    body = json.dumps(ev).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    s.sendall(
        b"POST /log HTTP/1.1\r\nHost: logpipe\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return s


def read_status(s: socket.socket) -> int:
    """The status of the one answer on ``s`` (read to the end: the server closes it)."""
    data = b""
    with s:
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 "), data
    return int(data.split(b" ", 2)[1])


def read_by_server(port: int, clients: list[socket.socket]) -> bool:
    """Whether the server has accepted each client's connection and read all it sent."""
    mine = {s.getsockname()[1] for s in clients}
    server_side = {
        t["remote_port"]: t["rx_queue"] for t in tcp_sockets() if t["local_port"] == port
    }
    return all(server_side.get(p) == 0 for p in mine)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_api_sigterm_finishes_in_flight_requests_refuses_new_ones_and_loses_nothing(
    launcher: Launcher, own_redis: RedisServer, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    # Requests wait for the frozen Redis: give them far longer than the test can take
    env = launcher.env(own_redis.url, logs, redis_timeout_seconds=120)
    api = launcher.api(env)
    assert own_redis.proc is not None
    in_flight: list[socket.socket] = []
    statuses: list[int] = []
    with LoadGenerator(
        api.url, [f"t{i}" for i in range(8)], threads=4, tag="term", timeout_s=120
    ) as load:
        wait_until(lambda: load.counts()[200] >= 500, "500 events accepted", procs=[api.proc])
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            events = [make_event("inflight", 2 * i, "term") for i in range(IN_FLIGHT)]
            in_flight = [raw_post(api.port, ev) for ev in events]
            wait_until(
                lambda: read_by_server(api.port, in_flight),
                "the API to read every in-flight request",
                procs=[api.proc],
            )
            api.proc.signal(signal.SIGTERM)
            wait_until(
                lambda: refuses_connections(api.port),
                "the API to stop accepting connections",
                procs=[api.proc],
            )
            assert api.proc.popen.poll() is None, "the API exited with requests in flight"
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        statuses = [read_status(s) for s in in_flight]
        code = api.proc.wait()
        after_exit = load.counts()
        wait_until(
            lambda: sum(load.counts().values()) > sum(after_exit.values()) + 20,
            "the load generator to keep trying after the API is gone",
        )
    sent = load.stop()
    for ev in events:
        sent.add(ev, statuses[events.index(ev)])

    drain = launcher.run(["drain", "--once", "--json"], env)
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert redis_drained(own_redis.url), redis_leftovers(own_redis.url)
    delivery = check_files(logs, sent)
    counts = sent.count()
    row = record(
        fault_report,
        "api_sigterm",
        "5. API stopped (SIGTERM) under load",
        trials=1,
        sent=len(sent.events),
        **delivery.figures(),
        in_flight_at_sigterm=IN_FLIGHT,
        refused_after_sigterm=sum(n for k, n in counts.items() if k != 200),
        seconds=round(time.monotonic() - started, 1),
    )
    assert code == -signal.SIGTERM, api.proc.output()  # uvicorn re-raises the signal
    assert "Application shutdown complete" in api.proc.stderr()
    assert statuses == [200] * IN_FLIGHT
    # after the signal, clients are turned away before anything is read: never a 5xx
    assert set(counts) <= {200, "ConnectError", "RemoteProtocolError", "ReadError"}, counts
    assert counts["ConnectError"] > 0
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
