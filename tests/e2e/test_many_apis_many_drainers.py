"""The scale-out topology (README "Many APIs, many drainers"): two ``logpipe serve``
processes behind no shared state but Redis, and two ``logpipe drain`` loops on one
``logs_dir``. Load goes through both APIs at once, to the same users (so the same keys);
every event answered ``200`` must be in its file exactly once, whole, and in the order
each sender sent it, and counted by exactly one drainer.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.processes import (
    Launcher,
    LoadGenerator,
    Sent,
    check_files,
    json_documents,
    redis_drained,
    stat,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

APIS = 2
DRAINERS = 2
#: accepted events per API before the load stops
EVENTS_PER_API = 600


def order_breaks_per_sender(logs: Path) -> int:
    """Places where one sender's (tag's) events for a file are not in the order it sent
    them. Two senders write to the same keys, so order holds per sender, not per file."""
    breaks = 0
    for path in logs.rglob("*.jsonl"):
        last: dict[str, int] = defaultdict(lambda: -1)
        for raw in path.read_bytes().splitlines():
            ev = json.loads(raw)
            tag = ev["id"].split(":", 1)[0]
            if ev["seq"] <= last[tag]:
                breaks += 1
            last[tag] = ev["seq"]
    return breaks


def test_two_apis_and_two_drainers_on_one_logs_dir_write_every_event_once(
    launcher: Launcher, redis_url: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    env = launcher.env(
        redis_url,
        logs,
        drainer_lease_seconds=1,
        drainer_batch_events=20,
        drainer_interval_seconds=0.05,
    )
    apis = [launcher.api(env, name=f"serve-{i}") for i in range(APIS)]
    drains = [launcher.start(["drain", "--json"], env, name=f"drain-{i}") for i in range(DRAINERS)]
    procs = [*(a.proc for a in apis), *drains]
    # both loops running (signal handlers in place, a pass printed) before the load: on a
    # loaded machine a drainer still importing when the test stopped it died of the SIGTERM
    wait_until(
        lambda: all("\n" in d.stdout() for d in drains), "each drainer's first pass", procs=procs
    )
    users = [f"m{i}" for i in range(8)]  # the same users through both APIs: shared keys
    with contextlib.ExitStack() as stack:
        loads = [
            stack.enter_context(LoadGenerator(a.url, users, threads=2, tag=f"api{i}"))
            for i, a in enumerate(apis)
        ]
        wait_until(
            lambda: all(load.counts()[200] >= EVENTS_PER_API for load in loads),
            f"{EVENTS_PER_API} events accepted by each API",
            procs=procs,
        )
    sents = [load.stop() for load in loads]
    sent = Sent()
    for s in sents:
        sent.merge(s)
    wait_until(lambda: redis_drained(redis_url), "the drainers to empty Redis", procs=procs)
    codes = [d.terminate() for d in drains]
    for api in apis:
        api.stop()

    assert codes == [0] * DRAINERS, [d.output() for d in drains]
    assert sent.count() == {200: len(sent.events)}, "every request answered 200"
    delivery = check_files(logs, sent)
    figures = delivery.figures()
    assert figures["lost"] == figures["duplicated"] == figures["torn"] == 0, figures
    assert figures["misplaced"] == 0, figures
    assert delivery.unknown == 0
    assert order_breaks_per_sender(logs) == 0
    # each event acknowledged by exactly one drainer
    reports = [json_documents(d.stdout()) for d in drains]
    per_drainer = [sum(r["events"] for r in rs) for rs in reports]
    assert [e for rs in reports for r in rs for e in r["errors"]] == []
    assert sum(per_drainer) == len(sent.events) == stat(redis_url, "drained_events")
    # both ran passes all along; how the keys split between them is the leases' call (one
    # drainer may win every key of a pass), so it is not asserted
    assert all(len(rs) > 0 for rs in reports), per_drainer
    # both APIs counted into the one set of counters
    assert stat(redis_url, "accepted") == len(sent.events)
