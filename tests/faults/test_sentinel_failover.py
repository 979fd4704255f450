"""Fault 7: the Redis master SIGKILLed under load, Sentinel promotes a replica.

With ``redis.min_replicas = 1`` every ``200`` waited until a replica had the events, and
the drainer's claims and acks were copied the same way, so the promoted replica holds
every acknowledged event and every pending offset. A real ``logpipe serve`` and a looping
``logpipe drain`` follow the failover by themselves (no restart). 7b kills the drainer
too, while the failover is under way, and lets a second drainer finish its claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.report import record
from tests.processes import (
    Launcher,
    LoadGenerator,
    LogpipeProcess,
    check_files,
    redis_drained,
    redis_leftovers,
    wait_until,
)
from tests.redis_sentinel import SentinelSetup

pytestmark = [pytest.mark.faults, pytest.mark.redis]


def gained(load: LoadGenerator, n: int) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``n`` more events answered ``200`` than so far."""
    start = load.counts()[200]
    return lambda: load.counts()[200] >= start + n


def env_for(launcher: Launcher, setup: SentinelSetup, logs: Path) -> dict[str, str]:
    return launcher.env(
        "redis://127.0.0.1:1",  # sentinel mode: only credentials and db come from the url
        logs,
        **setup.settings(
            redis_min_replicas=1,
            redis_replica_timeout_seconds=1,
            # a write is sent again under its flush id while the master is being replaced
            # (a few seconds), so most requests ride through the failover with a 200
            redis_write_retry_seconds=10,
            redis_timeout_seconds=2,
        ),
        drainer_lease_seconds=1,
        drainer_batch_events=50,
        drainer_interval_seconds=0.1,
    )


@pytest.mark.parametrize("kill_drainer", [False, True], ids=["master", "master+drainer"])
def test_master_killed_under_load_loses_and_duplicates_nothing(
    launcher: Launcher,
    sentinel_setup: SentinelSetup,
    tmp_path: Path,
    fault_report: Path,
    kill_drainer: bool,
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    env = env_for(launcher, sentinel_setup, logs)
    api = launcher.api(env)
    drain = launcher.start(["drain"], env, name="drain-a")
    drainers: list[LogpipeProcess] = [drain]
    users = [f"s{i}" for i in range(6)]
    with LoadGenerator(api.url, users, threads=3, tag="failover") as load:
        wait_until(gained(load, 300), "events accepted before the failover", procs=[api.proc])
        old = sentinel_setup.kill_master()
        if kill_drainer:
            drain.kill()  # mid-pass or between passes: its claims wait for drain-b
            drain = launcher.start(["drain"], env, name="drain-b")
            drainers.append(drain)
        new = sentinel_setup.wait_failover(old.port)
        wait_until(
            gained(load, 300),
            "the API to accept events on the new master",
            procs=[api.proc, drain],
        )
    sent = load.stop()
    wait_until(lambda: redis_drained(new.url), "the drainer to empty the new master", procs=[drain])
    assert drain.terminate() == 0, drain.output()
    api.stop()

    delivery = check_files(logs, sent)
    counts = sent.count()
    name = "7b. Master and drainer killed" if kill_drainer else "7. Redis master killed"
    row = record(
        fault_report,
        "sentinel_master_and_drainer" if kill_drainer else "sentinel_master",
        f"{name} (Sentinel, min_replicas 1)",
        trials=1,
        sent=len(sent.events),
        **delivery.figures(),
        answered_503=counts[503],
        failover_to=f"port {new.port}",
        seconds=round(time.monotonic() - started, 1),
    )
    assert set(counts) <= {200, 503}, f"answers other than 200 and 503: {counts}"
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert redis_leftovers(new.url)["buffered"] == 0
