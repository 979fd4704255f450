"""A WebSocket upgrade request, which logpipe serves on no route, must not cost a
connection slot past its own connection.

uvicorn hands an upgraded connection to its WebSocket protocol, so the guarded HTTP
protocol never heard that it closed: its slot in the connection cap stayed taken, as
busy, until the body timeout (30 s by default) fired on a connection long gone. As many
upgrade requests as ``server.max_connections`` (each answered at once and closed) then
turned every client away with 503 for that long, no token needed: 2048 tiny requests
per 30 s kept the default API unreachable.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx
import pytest

from tests.processes import DEADLINE_S, Launcher
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

MAX_CONNECTIONS = 8
UPGRADE = (
    b"GET /logs HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_upgrade_requests_leave_no_connection_slot_taken(
    launcher: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = launcher.env(redis_server.url, tmp_path / "logs", server_max_connections=MAX_CONNECTIONS)
    api = launcher.api(env)  # the default body timeout: 30 s
    for _ in range(3 * MAX_CONNECTIONS):
        with contextlib.closing(
            socket.create_connection(("127.0.0.1", api.port), timeout=DEADLINE_S)
        ) as sock:
            sock.sendall(UPGRADE)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 4"), answer  # refused: no WebSocket here
            assert b"101" not in answer.split(b"\r\n", 1)[0]
    resp = httpx.get(api.url + "/healthz", timeout=DEADLINE_S)
    assert resp.status_code == 200, resp.text
