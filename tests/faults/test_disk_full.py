"""Fault 4: the disk fills up under the drainer.

The drainer runs with its file size limit (RLIMIT_FSIZE) lowered, and SIGXFSZ ignored so
that ``write()`` fails with EFBIG as it would with ENOSPC. A batch that crosses the limit is
written in part, then fails: the drainer must cut that partial tail off, report the error,
keep the events in Redis (and, looping, retry without dying), and deliver everything
exactly once when the limit is lifted.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.faults.report import record
from tests.processes import (
    BASE_TS,
    DAY_S,
    DEADLINE_S,
    Launcher,
    Sent,
    check_files,
    make_event,
    post_batch,
    redis_drained,
    redis_hash,
    redis_leftovers,
    stat,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.redis]

LIMIT = 8192
BATCH = 7


def file_size_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn``: files of the child cannot grow past ``limit`` bytes."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not death
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def line(ev: dict[str, object]) -> bytes:
    """The line the server stores for ``ev``: compact JSON, fields in the order sent."""
    return json.dumps(ev, separators=(",", ":")).encode() + b"\n"


def last_drain(client: redis.Redis) -> dict[str, str]:
    return redis_hash(client, "logpipe:last_drain")


def test_disk_full_is_reported_events_stay_in_redis_and_are_delivered_once_space_returns(
    launcher: Launcher, redis_url: str, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "logs"
    env = launcher.env(
        redis_url,
        logs,
        drainer_batch_events=BATCH,
        drainer_lease_seconds=1,
        drainer_interval_seconds=0.1,
    )
    api = launcher.api(env)
    big = [make_event("big", 2 * i, "disk", pad=80) for i in range(300)]  # ~45 KiB
    small = [make_event("small", 2 * i, "disk") for i in range(20)]  # ~2 KiB
    post_batch(api.url, big + small)
    api.stop()
    sent = Sent()
    for ev in big + small:
        sent.add(ev, 200)

    # Whole batches that fit under the limit, and the one that straddles it
    big_lines = [line(ev) for ev in big]
    sizes = [sum(len(x) for x in big_lines[: BATCH * (m + 1)]) for m in range(len(big) // BATCH)]
    fitting = sum(1 for size in sizes if size <= LIMIT)
    kept = BATCH * fitting
    assert sizes[fitting - 1] < LIMIT < sizes[fitting], "the next batch must be cut mid-write"
    big_file = logs / "user_big" / f"{BASE_TS // DAY_S}.jsonl"
    small_file = logs / "user_small" / f"{BASE_TS // DAY_S}.jsonl"

    # 1. drain --once with the disk "full"
    full = launcher.run(["drain", "--once", "--json"], env, preexec_fn=file_size_limit(LIMIT))
    report = json.loads(full.stdout)
    assert full.returncode == 1, full.stdout + full.stderr
    assert report["ok"] is False
    assert len(report["errors"]) == 1
    assert "File too large" in report["errors"][0]
    assert "error: cannot write" in full.stderr
    assert "Traceback" not in full.stderr
    assert report["events"] == kept + len(small)
    # the partial batch was cut off: exactly the acknowledged lines, nothing after them
    assert big_file.read_bytes() == b"".join(big_lines[:kept])
    assert small_file.read_bytes() == b"".join(line(ev) for ev in small)
    # the rest stays in Redis, under the claim that the next drain resumes
    client = redis.Redis.from_url(redis_url)
    claim = f"logpipe:claim:{{logs:user_big:{BASE_TS // DAY_S}}}"
    assert client.lrange(claim, 0, 0) == [big_lines[kept].rstrip(b"\n")]
    assert client.llen(claim) == len(big) - kept
    assert stat(redis_url, "buffered") == len(big) - kept

    # 2. looping with the disk still full: reports, backs off, retries, never dies
    before = last_drain(client).get("at")
    failures: set[str] = set()

    def failed_again() -> bool:
        last = last_drain(client)
        if last.get("at") != before and last.get("ok") == "0":
            assert "File too large" in last["error"]
            failures.add(last["at"])
        return len(failures) >= 2

    loop = launcher.start(
        ["drain"], env, name="drain-full", pipes=True, preexec_fn=file_size_limit(LIMIT)
    )
    wait_until(failed_again, "two failed passes of the looping drainer", procs=[loop])
    loop.signal(signal.SIGTERM)
    try:
        _, err = loop.popen.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the looping drainer did not stop on SIGTERM")
    assert loop.popen.returncode == 0, err
    loop_errors = err.decode().count("error: cannot write")
    assert loop_errors >= 2, err.decode()
    assert big_file.read_bytes() == b"".join(big_lines[:kept]), "a failed pass left a tail"

    # 3. space is back: everything left is delivered, once
    freed = launcher.run(["drain", "--once", "--json"], env)
    assert freed.returncode == 0, freed.stdout + freed.stderr
    assert json.loads(freed.stdout)["events"] == len(big) - kept
    assert redis_drained(redis_url), redis_leftovers(redis_url)
    client.close()
    delivery = check_files(logs, sent)
    row = record(
        fault_report,
        "disk_full",
        "4. Disk full (RLIMIT_FSIZE)",
        trials=1 + len(failures),
        sent=len(sent.events),
        **delivery.figures(),
        events_kept_in_redis=len(big) - kept,
        errors_reported=1 + loop_errors,
        seconds=round(time.monotonic() - started, 1),
    )
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert big_file.read_bytes() == b"".join(big_lines)


def test_a_directory_that_cannot_be_created_is_reported_and_the_events_wait_in_redis(
    launcher: Launcher, redis_url: str, tmp_path: Path, fault_report: Path
) -> None:
    """Not writable: ``user_<id>`` exists as a plain file, so the directory for that user
    cannot be made (as root, permissions would not stop the drainer: this does)."""
    logs = tmp_path / "logs"
    env = launcher.env(redis_url, logs)
    api = launcher.api(env)
    blocked = [make_event("blocked", 2 * i, "rofs") for i in range(30)]
    fine = [make_event("fine", 2 * i, "rofs") for i in range(30)]
    post_batch(api.url, blocked + fine)
    api.stop()
    sent = Sent()
    for ev in blocked + fine:
        sent.add(ev, 200)
    logs.mkdir()
    (logs / "user_blocked").write_bytes(b"in the way\n")

    refused = launcher.run(["drain", "--once", "--json"], env)
    report = json.loads(refused.stdout)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert report["events"] == len(fine)
    assert len(report["errors"]) == 1
    assert "cannot open" in report["errors"][0]
    assert f"error: {report['errors'][0]}" in refused.stderr
    assert stat(redis_url, "buffered") == len(blocked)
    assert (logs / "user_blocked").read_bytes() == b"in the way\n"

    (logs / "user_blocked").unlink()
    freed = launcher.run(["drain", "--once", "--json"], env)
    assert freed.returncode == 0, freed.stdout + freed.stderr
    assert json.loads(freed.stdout)["events"] == len(blocked)
    assert redis_drained(redis_url), redis_leftovers(redis_url)
    delivery = check_files(logs, sent)
    record(
        fault_report,
        "not_writable",
        "4b. logs_dir not writable (a file where a directory goes)",
        trials=2,
        sent=len(sent.events),
        **delivery.figures(),
        events_kept_in_redis=len(blocked),
        errors_reported=len(report["errors"]),
    )
    delivery.assert_exactly_once()
