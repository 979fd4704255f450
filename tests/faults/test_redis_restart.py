"""Fault 3: Redis goes away and comes back (AOF on) while a load generator sends.

Twice: once stopped cleanly (SIGTERM), once killed (SIGKILL). Every request must be
answered 200 or 503; each 200 must reach a file exactly once; the API and a looping
drainer must carry on by themselves, without being restarted. Then ``logpipe send
--retries`` must get an event through an outage that starts before it and ends after
its first attempt was refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.faults.report import record
from tests.processes import (
    BASE_TS,
    DAY_S,
    CountingProxy,
    Launcher,
    LoadGenerator,
    check_files,
    redis_drained,
    redis_hash,
    redis_leftovers,
    wait_until,
)
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.faults, pytest.mark.redis]


def gained(load: LoadGenerator, outcome: int, n: int) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``n`` more answers ``outcome`` than so far."""
    start = load.counts()[outcome]
    return lambda: load.counts()[outcome] >= start + n


def test_redis_restarted_under_load_every_answer_is_200_or_503_and_every_200_is_kept(
    launcher: Launcher, own_redis: RedisServer, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    env = launcher.env(
        own_redis.url,
        logs,
        drainer_lease_seconds=1,
        drainer_batch_events=50,
        drainer_interval_seconds=0.1,
        redis_timeout_seconds=5,
        # each write is retried this long before its 503: short, so the outage shows in
        # seconds (the default 2 s made each outage ~25 s on a 2-core box)
        redis_write_retry_seconds=0.5,
    )
    api = launcher.api(env)
    drain = launcher.start(["drain"], env, name="drain-loop")
    alive = [api.proc, drain]
    outages: list[tuple[str, Callable[[], None]]] = [
        ("stop", own_redis.stop),
        ("kill", own_redis.kill),
    ]
    with LoadGenerator(api.url, [f"r{i}" for i in range(6)], threads=3, tag="restart") as load:
        for _, end in outages:
            wait_until(
                gained(load, 200, 300),
                "events accepted before the outage",
                procs=alive,
            )
            end()
            wait_until(
                gained(load, 503, 20),
                "the API to answer 503 while Redis is down",
                procs=alive,
            )
            own_redis.start()
            wait_until(
                gained(load, 200, 300),
                "the API to accept events again by itself",
                procs=alive,
            )
    sent = load.stop()

    # `send --retries` through an outage: the proxy counts the 503s it was answered
    proxy = CountingProxy(api.port)
    own_redis.stop()
    retried = launcher.start(
        [
            "send",
            "--user",
            "retry",
            "--event",
            "through-outage",
            "--timestamp",
            str(BASE_TS),
            "--url",
            f"http://127.0.0.1:{proxy.port}",
            "--retries",
            "12",
            "--json",
        ],
        env,
        name="send-retry",
    )
    wait_until(
        lambda: proxy.refused >= 1, "send's first attempt to be refused", procs=[retried, *alive]
    )
    own_redis.start()
    assert retried.wait() == 0, retried.output()
    proxy.close()
    answer = json.loads(retried.stdout())

    wait_until(lambda: redis_drained(own_redis.url), "the drainer to empty Redis", procs=alive)
    assert drain.terminate() == 0, drain.output()
    api.stop()
    client = redis.Redis.from_url(own_redis.url)
    stats = {k: int(v) for k, v in redis_hash(client, "logpipe:stats").items()}
    client.close()

    delivery = check_files(logs, sent, skip_users=["retry"])
    retry_lines = (logs / "user_retry" / f"{BASE_TS // DAY_S}.jsonl").read_text().splitlines()
    counts = sent.count()
    row = record(
        fault_report,
        "redis_restart",
        "3. Redis restarted (SIGTERM, then SIGKILL)",
        trials=len(outages),
        sent=len(sent.events),
        **delivery.figures(),
        answered_503=counts[503],
        send_attempts=answer["attempts"],
        drainer_errors_reported=drain.stderr().count("error: "),
        seconds=round(time.monotonic() - started, 1),
    )
    assert set(counts) <= {200, 503}, f"answers other than 200 and 503: {counts}"
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert answer["status"] == 200
    assert answer["attempts"] >= 2
    assert [json.loads(line)["event"] for line in retry_lines] == ["through-outage"]
    # what Redis took in (including any 503 whose write had in fact landed) was drained once
    assert stats["drained_events"] == stats["accepted"] == delivery.lines + 1
    assert redis_leftovers(own_redis.url)["buffered"] == 0
