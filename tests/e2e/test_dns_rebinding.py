"""``logpipe serve`` without tokens answers only Host names it recognizes.

DNS rebinding: a web page on ``evil.example`` that gets its name to resolve to 127.0.0.1
is the same origin as an API there, so the browser lets it read ``GET /logs`` of every
user. Its requests carry ``Host: evil.example:<port>``, which ``serve`` refuses (421).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.processes import Launcher
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

EVENT = {"user_id": "u1", "event": "secret", "timestamp": 1712345678}


def test_an_api_without_tokens_refuses_a_rebound_host_name(
    launcher: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.flush()
    env = launcher.env(redis_server.url, tmp_path / "logs", server_allowed_hosts="logs.internal")
    api = launcher.api(env)  # on 127.0.0.1, no tokens
    assert httpx.post(api.url + "/log", json=EVENT).status_code == 200
    rebound = {"host": f"evil.example:{api.port}"}
    read = httpx.get(api.url + "/logs?user_id=u1&since=0", headers=rebound)
    assert read.status_code == 421, read.text
    assert "secret" not in read.text
    assert "server.allowed_hosts" in read.json()["detail"]
    assert httpx.post(api.url + "/log", json=EVENT, headers=rebound).status_code == 421
    # the names it is reached by are fine: its address, localhost, allowed_hosts
    for host in (f"127.0.0.1:{api.port}", f"localhost:{api.port}", "logs.internal"):
        got = httpx.get(api.url + "/logs?user_id=u1&since=0", headers={"host": host})
        assert got.status_code == 200, (host, got.text)
        assert [e["event"] for e in got.json()["events"]] == ["secret"]
    api.stop()
