"""The redis-server fixture itself (tests/redis_server.py): its ports, under pytest-xdist
workers and other programs that may take a port between its pick and the server's bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, _ephemeral_low, _worker_ports, free_port

pytestmark = [pytest.mark.redis]


def own_pid(server: RedisServer) -> bool:
    """The server answering on ``server.port`` is the process this fixture started."""
    assert server.proc is not None
    with server.client() as c:
        return int(c.info("server")["process_id"]) == server.proc.pid


def test_a_port_taken_before_the_first_start_is_picked_again(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        picks = iter([busy, free_port()])
        server = RedisServer(tmp_path / "r", pick=lambda: next(picks))
        assert server.port == busy
        server.start()
        try:
            assert server.port != busy
            assert own_pid(server)
        finally:
            server.kill()


def test_another_redis_answering_on_the_port_is_not_taken_for_ours(tmp_path: Path) -> None:
    """The dangerous race: the port's owner answers PING, so only the log tells."""
    other = RedisServer(tmp_path / "other")
    other.start()
    try:
        picks = iter([other.port, free_port()])
        server = RedisServer(tmp_path / "r", pick=lambda: next(picks))
        server.start()
        try:
            assert server.port != other.port
            assert own_pid(server)
            assert own_pid(other)
        finally:
            server.kill()
    finally:
        other.kill()


def test_a_restarted_server_keeps_its_port(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r")
    server.start()
    port = server.port
    server.stop()
    server.start()
    try:
        assert server.port == port
        assert own_pid(server)
    finally:
        server.kill()


def test_ports_are_below_the_ephemeral_range_and_each_worker_has_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(p in _worker_ports() for p in ports)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        shares.append(_worker_ports())
    assert all(shares), "no room below the ephemeral range on this machine"
    assert shares[0].stop <= shares[1].start
    assert shares[1].stop <= _ephemeral_low()
