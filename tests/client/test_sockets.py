"""Retries over real sockets: a server that resets the connection, then one that hangs.

A MockTransport raises the errors httpx documents; this checks that what a real dropped
or silent connection raises is among the errors the client retries.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from logpipe_cli.appclient import Client, RetryPolicy

OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
    b'{"stored":true}'
)


class RudeServer:
    """Plays ``script`` on one connection each: "reset" closes at once with RST, "hang"
    reads and never answers (until the test ends), "ok" answers 200."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held: list[socket.socket] = []
        for step in self.script:
            conn, _ = self.sock.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(body)
            if step == "reset":
                # linger on, 0 s: close() sends RST, as a crashed server would
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif step == "hang":
                held.append(conn)
            else:
                conn.sendall(OK)
                conn.close()
        self.done.wait()
        for conn in held:
            conn.close()

    def close(self) -> None:
        self.done.set()
        self.sock.close()


@pytest.fixture
def rude() -> Iterator[list[RudeServer]]:
    servers: list[RudeServer] = []
    yield servers
    for s in servers:
        s.close()


def test_a_reset_and_a_timeout_are_retried_with_the_same_bytes(rude: list[RudeServer]) -> None:
    server = RudeServer("reset", "hang", "ok")
    rude.append(server)
    waits: list[float] = []
    policy = RetryPolicy(initial_backoff_s=0.01, jitter=0.0)
    with Client(
        f"http://127.0.0.1:{server.port}", timeout=0.5, retry=policy, sleep=waits.append
    ) as c:
        receipt = c.log("u1", "clicked")
    assert receipt.attempts == 3
    assert len(server.requests) == 3
    assert len(set(server.requests)) == 1
    assert receipt.event_id.encode() in server.requests[0]
    assert waits == [0.01, 0.02]
