"""Fault 2: four drainer processes in loop mode at once while events stream in.

They race for the same keys every 50 ms; each event must be written exactly once, in the
order its key received it, and counted by exactly one drainer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.report import record
from tests.processes import (
    Launcher,
    LoadGenerator,
    check_files,
    json_documents,
    redis_drained,
    stat,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.redis]

DRAINERS = 4
EVENTS = 4000


def test_four_drainers_at_once_write_every_event_exactly_once_in_order(
    launcher: Launcher, redis_url: str, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    env = launcher.env(
        redis_url,
        logs,
        drainer_lease_seconds=1,
        drainer_batch_events=20,
        drainer_interval_seconds=0.05,
    )
    api = launcher.api(env)
    drains = [launcher.start(["drain", "--json"], env, name=f"drain-{i}") for i in range(DRAINERS)]
    users = [f"c{i}" for i in range(12)]
    with LoadGenerator(api.url, users, threads=4, tag="conc") as load:
        wait_until(
            lambda: load.counts()[200] >= EVENTS,
            f"{EVENTS} events accepted",
            procs=[api.proc, *drains],
        )
    sent = load.stop()
    wait_until(
        lambda: redis_drained(redis_url), "the drainers to empty Redis", procs=[api.proc, *drains]
    )
    codes = [d.terminate() for d in drains]
    api.stop()

    reports = [json_documents(d.stdout()) for d in drains]
    per_drainer = [sum(r["events"] for r in rs) for rs in reports]
    errors = [e for rs in reports for r in rs for e in r["errors"]]
    busy = sum(len(r["busy"]) for rs in reports for r in rs)
    delivery = check_files(logs, sent)
    row = record(
        fault_report,
        "concurrent_drainers",
        "2. Four drainers at once",
        drainers=DRAINERS,
        sent=len(sent.events),
        **delivery.figures(),
        events_per_drainer="/".join(str(n) for n in per_drainer),
        keys_found_busy=busy,
        seconds=round(time.monotonic() - started, 1),
    )
    assert codes == [0] * DRAINERS, [d.output() for d in drains]
    assert errors == []
    assert sent.count() == {200: len(sent.events)}
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == row["out_of_order"] == 0
    # every event was acknowledged by exactly one drainer
    assert sum(per_drainer) == len(sent.events) == stat(redis_url, "drained_events")
