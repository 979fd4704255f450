"""`logpipe serve --workers 2`: flags reach the worker processes, and every event is stored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis

from tests.processes import VERIFY
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e


def test_two_workers_store_every_event(redis_url: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    env["LOGPIPE_REDIS_URL"] = redis_url
    # the port comes as a flag: the workers must get it although they re-read settings
    proc = subprocess.Popen(
        [sys.executable, "-m", "logpipe_cli", "serve", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", verify=VERIFY).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the API did not come up"
            time.sleep(0.1)
        with httpx.Client() as client:
            for n in range(40):
                event = {"user_id": "w", "event": "e", "timestamp": 86400 * 3 + n}
                assert client.post(f"http://127.0.0.1:{port}/log", json=event).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert out.count("Started server process") >= 2, out
    raw = redis.Redis.from_url(redis_url)
    stored = raw.lrange("logs:user_w:3", 0, -1)
    raw.close()
    assert len(stored) == 40
