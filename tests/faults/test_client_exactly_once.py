"""Fault 7: the client library sends 20,000 events with ids through an API that is killed
(SIGKILL) and restarted, and a Redis that is restarted, while a drainer runs.

``Client.sender()`` retries every batch whose answer it did not get (a reset connection,
a refused connection, a 503) with the same bytes, so the same ``event_id`` s; the API's
dedupe (``redis.dedupe_seconds``) must store each event once. To make sure retries of
batches that *were* stored happen (an API killed at a random instant rarely dies between
the write and the answer), the client's transport also drops every 7th answer after it
arrived, as a reset connection would.

Redis is stopped with SIGTERM (AOF on, ``appendfsync always``; a SIGTERM also flushes
it): with ``appendfsync everysec`` a Redis *crash* loses up to a second of acknowledged
writes, events and remembered ids alike, which no dedupe can make up for (see README,
Guarantees). Afterwards every event is in its file exactly once, counted by event_id.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from logpipe_cli.appclient import Client, RetryPolicy
from tests.faults.report import record
from tests.processes import (
    BASE_TS,
    DAY_S,
    Launcher,
    LogpipeProcess,
    healthy,
    redis_drained,
    stat,
    wait_until,
)
from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.faults, pytest.mark.redis]

EVENTS = 20_000
USERS = 8
DROP_EVERY = 7


class LosingTransport(httpx.HTTPTransport):
    """Sends each request; drops every ``DROP_EVERY``-th answer after it arrived (the
    client sees a reset connection) and counts the duplicates the server reported."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0
        self.dropped = 0
        self.duplicates_reported = 0
        self.statuses: Counter[int] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = super().handle_request(request)
        resp.read()
        self.statuses[resp.status_code] += 1
        if resp.status_code == 200:
            self.duplicates_reported += int(json.loads(resp.content).get("duplicates", 0))
            self.answers += 1
            if self.answers % DROP_EVERY == 0:
                self.dropped += 1
                raise httpx.ReadError("answer dropped by the test", request=request)
        return resp


def test_client_retries_through_api_kills_and_redis_restart_store_each_event_once(
    launcher: Launcher, own_redis: RedisServer, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    env = launcher.env(
        own_redis.url,
        logs,
        drainer_interval_seconds=0.1,
        drainer_lease_seconds=1,
        redis_write_retry_seconds=0.5,
    )
    port = free_port()
    api_env = {**env, "LOGPIPE_SERVER_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"

    def start_api(n: int) -> LogpipeProcess:
        proc = launcher.start(["serve"], api_env, name=f"serve-{n}")
        wait_until(lambda: healthy(url), f"serve-{n} to answer /healthz", procs=[proc])
        return proc

    api = start_api(1)
    drain = launcher.start(["drain"], env, name="drain-loop")

    transport = LosingTransport()
    errors: list[BaseException] = []
    sent_ids: list[str] = []

    def send() -> None:
        policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, max_total_s=45.0)
        try:
            with (
                Client(url, timeout=5.0, retry=policy, transport=transport) as client,
                client.sender(batch_size=50, flush_seconds=0.05) as sender,
            ):
                for i in range(EVENTS):
                    sent_ids.append(sender.log(f"c{i % USERS}", "tick", timestamp=BASE_TS, seq=i))
        except BaseException as exc:  # reported below: a failed sender fails the test
            errors.append(exc)

    sender_thread = threading.Thread(target=send, daemon=True)
    sender_thread.start()

    def accepted_at_least(n: int) -> bool:
        try:
            return stat(own_redis.url, "accepted") >= n
        except redis.RedisError:
            return False

    faults: list[str] = []
    for n, (at, fault) in enumerate([(3_000, "api"), (8_000, "redis"), (13_000, "api")], start=2):
        wait_until(partial(accepted_at_least, at), f"{at} events stored", procs=[drain])
        if fault == "api":
            api.kill()  # SIGKILL: in-flight batches lose their answers
            api = start_api(n)
        else:
            own_redis.stop()  # SIGTERM: AOF flushed; the API answers 503 meanwhile
            own_redis.start()
        faults.append(fault)

    sender_thread.join(timeout=60)
    assert not sender_thread.is_alive(), "the sender did not finish"
    assert not errors, f"the sender failed: {errors!r}"
    wait_until(lambda: redis_drained(own_redis.url), "the drainer to empty Redis", procs=[drain])
    assert drain.terminate() == 0, drain.output()
    accepted = stat(own_redis.url, "accepted")
    api.kill()

    by_id: Counter[str] = Counter()
    lines = 0
    for path in sorted(logs.rglob("*.jsonl")):
        assert path.name == f"{BASE_TS // DAY_S}.jsonl", path
        for raw in path.read_bytes().splitlines():
            ev: dict[str, Any] = json.loads(raw)
            assert path.parent.name == f"user_{ev['user_id']}"
            by_id[ev["event_id"]] += 1
            lines += 1
    lost = sum(1 for i in sent_ids if by_id[i] == 0)
    duplicated = sum(n - 1 for n in by_id.values() if n > 1)
    row = record(
        fault_report,
        "client_exactly_once",
        "8. Client library through API kills and a Redis restart",
        trials=len(faults),
        sent=len(sent_ids),
        accepted=lines,
        lost=lost,
        duplicated=duplicated,
        torn=0,
        answers_dropped=transport.dropped,
        duplicates_reported=transport.duplicates_reported,
        answered_503=transport.statuses[503],
        seconds=round(time.monotonic() - started, 1),
    )
    assert len(set(sent_ids)) == EVENTS
    assert row["lost"] == row["duplicated"] == 0
    assert set(by_id) == set(sent_ids)
    assert lines == accepted == EVENTS  # Redis counted each event once too
    # the retries of batches whose answer was lost were answered as duplicates
    assert transport.dropped > 0
    assert transport.duplicates_reported >= transport.dropped * 50 // 2
