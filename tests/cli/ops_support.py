"""Helpers for the operator-CLI tests (``test_ops_*``): the real API in a thread, seeding.

Their fixtures (``settings``, ``api``, ``cli_env``, ``logpipe``) are in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import Result

from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.settings import RedisSettings, Settings
from tests.redis_server import free_port

DEADLINE_S = 30.0

RunCli = Callable[..., Result]


@dataclass
class ApiServer:
    """``create_app`` under uvicorn in a thread, on a free port."""

    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=DEADLINE_S)
        assert not self.thread.is_alive(), "the API thread did not stop"


def start_api(settings: Settings) -> ApiServer:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        http="h11",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"api-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"the API did not start on port {port}", pytrace=False)
        time.sleep(0.01)
    return ApiServer(server, thread, port)


def seed(url: str, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Buffer events through the library, as the API would: ``(key, event)`` pairs."""

    async def go() -> None:
        cfg = RedisSettings(url=url)
        client = connect(cfg)
        try:
            await Buffer(client, cfg).append(
                [(key, json.dumps(ev, separators=(",", ":")).encode()) for key, ev in items]
            )
        finally:
            await client.aclose()

    asyncio.run(go())


def post_events(url: str, events: Sequence[dict[str, Any]]) -> None:
    """Store events through the API's ``POST /logs``; fails the test unless all are stored."""
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    resp = httpx.post(
        url + "/logs", content=body, headers={"content-type": "application/x-ndjson"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": len(events)}


def one_error_line(result: Result) -> str:
    """The single ``error: ...`` line a failed command must print on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
