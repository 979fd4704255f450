"""`logpipe run` (what `make run` runs): Redis started for us, API and drainer, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.redis_server import free_port

pytestmark = pytest.mark.e2e


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_starts_redis_api_and_drainer_and_stops_them(tmp_path: Path) -> None:
    redis_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "LOGPIPE_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "LOGPIPE_SERVER_PORT": str(api_port),
        "LOGPIPE_DRAINER_INTERVAL_SECONDS": "0.2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "logpipe_cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{api_port}"
        _wait(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the API")
        resp = httpx.post(
            f"{base}/log", json={"user_id": "123", "event": "clicked", "timestamp": 1712345678}
        )
        assert resp.status_code == 200
        target = tmp_path / "logs" / "user_123" / "19818.jsonl"
        _wait(target.exists, 30, "the drained file")
        assert target.read_text() == (
            '{"user_id":"123","event":"clicked","timestamp":1712345678}\n'
        )
        assert (tmp_path / ".logpipe" / "redis" / "appendonlydir").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "starting redis-server" in out
    assert not (tmp_path / ".logpipe" / "run.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz")
    # the Redis it started is gone too
    import socket

    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", redis_port))
