"""Fault 1: the drainer is killed with SIGKILL at random instants while events stream in.

Half the trials kill at a uniformly random time after start (while importing, claiming,
writing, acknowledging or sleeping). The other half kill inside the write/ack window: the
drainer is frozen with SIGSTOP at random moments until Redis shows a pending offset under
its own lease (recorded before an append, cleared by the ack), then killed while frozen;
the file is then often longer than that offset (appended, never acknowledged). A clean
``drain --once`` afterwards must leave every accepted event in the files exactly once.

``LP_TEST_KILL_TRIALS`` sets the number of kills (default 32) and ``LP_TEST_SEED``
the random seed (default: a fresh one, printed; ``make test`` fixes it), so a failure can be
replayed.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.faults.report import record
from tests.processes import (
    Launcher,
    LoadGenerator,
    LogpipeProcess,
    Sent,
    check_files,
    make_event,
    post_batch,
    redis_drained,
    redis_hash,
    redis_leftovers,
    text,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.redis]

#: kills, half at random instants and half in the write/ack window
TRIALS = int(os.environ.get("LP_TEST_KILL_TRIALS") or 32)
#: further window kills allowed when none of the planned ones left an append behind
EXTRA_WINDOW_TRIALS = 16
#: short, so a killed drainer's keys are taken over soon (the lock timeout is twice this)
LEASE_S = 0.25
#: between one event and the next of each load thread: enough load to keep the drainer
#: writing, with CPU left for the drainers being started (the test's real cost)
LOAD_PAUSE_S = 0.05
REPAIR = re.compile(r"repairing .*: cutting \d+ unacknowledged bytes")


def file_for(logs: Path, key: str) -> Path:
    user, day = key.removeprefix("logs:user_").rsplit(":", 1)
    return logs / f"user_{user}" / f"{day}.jsonl"


def size_of(logs: Path, key: str) -> int:
    """The size of ``key``'s file; 0 while there is none (a key's file is made with its
    first append, after BEGIN recorded the offset)."""
    try:
        return file_for(logs, key).stat().st_size
    except FileNotFoundError:
        return 0


def pending_offsets(client: redis.Redis) -> dict[str, int]:
    """Every recorded offset: batches begun and not acknowledged, by event key."""
    out = {}
    for raw in client.scan_iter("logpipe:offset:*"):
        offset = client.get(raw)
        if offset is not None:
            out[text(raw).removeprefix("logpipe:offset:{").removesuffix("}")] = int(offset)
    return out


def own_appends(client: redis.Redis, pid: int, stale: dict[str, int]) -> list[tuple[str, int]]:
    """(key, offset) of each batch this drainer has itself begun and not acknowledged.

    An offset left by a killed drainer (in ``stale``) is not one: the new holder of the
    lease must first repair the file, and only its own next ``begin`` counts.
    """
    out = []
    for key, offset in pending_offsets(client).items():
        holder = client.get(f"logpipe:lease:{{{key}}}")
        if holder is not None and f":{pid}:" in text(holder) and stale.get(key) != offset:
            out.append((key, offset))
    return out


def kill_in_window(
    drain: LogpipeProcess, client: redis.Redis, stale: dict[str, int], rng: random.Random
) -> list[tuple[str, int]]:
    """Kill ``drain`` between recording an offset and acknowledging that batch.

    Returns the (key, offset) pairs of the batches it had begun.
    """
    skip = rng.randint(0, 4)  # not always the first window: later batches, other keys

    def frozen_in_window() -> list[tuple[str, int]] | None:
        nonlocal skip
        drain.signal(signal.SIGSTOP)
        pending = own_appends(client, drain.pid, stale)
        if pending and skip == 0:
            return pending
        skip -= bool(pending)
        drain.signal(signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.004))
        return None

    pending: list[tuple[str, int]] = wait_until(
        frozen_in_window, "the drainer to be inside a write/ack window", poll_s=0, procs=[drain]
    )
    drain.kill()
    return pending


def left_behind(client: redis.Redis, logs: Path, pending: list[tuple[str, int]]) -> int:
    """How many of ``pending`` were appended and never acknowledged (file past the offset)."""
    left = pending_offsets(client)
    return sum(
        1 for key, offset in pending if left.get(key) == offset and size_of(logs, key) > offset
    )


def test_drainer_killed_at_random_instants_loses_and_duplicates_nothing(
    launcher: Launcher, redis_url: str, tmp_path: Path, fault_report: Path
) -> None:
    seed = int(os.environ.get("LP_TEST_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    print(f"seed {seed}, {TRIALS} trials (LP_TEST_SEED={seed} replays it)")
    started = time.monotonic()
    logs = tmp_path / "logs"
    settings = {
        "drainer_lease_seconds": LEASE_S,
        "drainer_batch_events": 5,
        "drainer_interval_seconds": 0.05,
    }
    env = launcher.env(redis_url, logs, **settings)
    api = launcher.api(env)
    client = redis.Redis.from_url(redis_url)
    random_kills = window_kills = appended_unacked = 0
    drains: list[LogpipeProcess] = []
    users = [f"k{i}" for i in range(6)]
    with LoadGenerator(api.url, users, threads=3, tag="kill", pause_s=LOAD_PAUSE_S) as load:
        wait_until(lambda: load.counts()[200] >= 200, "the first events", procs=[api.proc])
        trial = 0
        # The planned trials; then, if no kill happened to land between an append and its
        # ack, more window kills until one does (bounded): the repair check below must
        # have something to check.
        while trial < TRIALS or (appended_unacked == 0 and trial < TRIALS + EXTRA_WINDOW_TRIALS):
            name = f"drain-{trial}"
            # a client name per drainer, to see when Redis has dropped its connections
            trial_env = {**env, "LOGPIPE_REDIS_URL": f"{redis_url}?client_name={name}"}
            stale = pending_offsets(client)
            drain = launcher.start(["drain"], trial_env, name=name)
            drains.append(drain)
            if trial % 2 or trial >= TRIALS:
                pending = kill_in_window(drain, client, stale, rng)
                window_kills += 1
            else:
                time.sleep(rng.uniform(0, 1.2))
                assert drain.popen.poll() is None, drain.output()
                drain.kill()
                random_kills += 1
                pending = []
            # Commands it sent before it died are executed before Redis drops the
            # connection: wait for that before looking at what it left behind.
            wait_until(
                lambda: not any(c.get("name") == name for c in client.client_list()),  # noqa: B023
                "Redis to drop the killed drainer's connections",
            )
            appended_unacked += left_behind(client, logs, pending)
            trial += 1
        wait_until(lambda: load.counts()[200] >= 1000, "1000 events accepted", procs=[api.proc])
    sent = load.stop()
    api.stop()

    final = launcher.run(["drain", "--once", "--json"], env)
    assert final.returncode == 0, final.stdout + final.stderr
    assert json.loads(final.stdout)["ok"] is True
    assert redis_drained(redis_url), redis_leftovers(redis_url)
    delivery = check_files(logs, sent)
    stats = {k: int(v) for k, v in redis_hash(client, "logpipe:stats").items()}
    client.close()
    repairs = sum(len(REPAIR.findall(d.stderr())) for d in drains) + len(
        REPAIR.findall(final.stderr)
    )
    row = record(
        fault_report,
        "drainer_killed",
        "1. Drainer killed (SIGKILL)",
        trials=trial,
        random_kills=random_kills,
        kills_in_write_ack_window=window_kills,
        appended_unacknowledged=appended_unacked,
        repairs=repairs,
        sent=len(sent.events),
        **delivery.figures(),
        seed=str(seed),
        seconds=round(time.monotonic() - started, 1),
    )
    assert sent.count() == {200: len(sent.events)}, "the API refused events: not this fault"
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    # each counted once: an append that was cut and rewritten is not counted twice
    assert stats["accepted"] == stats["drained_events"] == len(sent.events)
    assert stats["buffered"] == 0
    # every append left behind past its offset was cut back by whoever took the key over
    # (random kills may leave more behind, unseen: hence at least)
    assert appended_unacked >= 1, f"no kill in {trial} landed between an append and its ack"
    assert repairs >= appended_unacked


def test_a_drainer_paused_past_its_lease_is_taken_over_without_a_duplicate(
    launcher: Launcher, redis_url: str, tmp_path: Path, fault_report: Path
) -> None:
    """A stall (GC, swapped-out VM) is not a death: the stalled drainer wakes up after
    another has taken its keys over, with an append on disk that it never acknowledged.
    The file lock keeps the new holder from repairing the file until the old one lets go;
    the old one's ack is refused (lease lost), and the new holder cuts and rewrites."""
    started = time.monotonic()
    logs = tmp_path / "logs"
    env = launcher.env(
        redis_url,
        logs,
        drainer_lease_seconds=LEASE_S,
        drainer_batch_events=5,
        drainer_interval_seconds=0.05,
    )
    api = launcher.api(env)
    users = [f"p{i}" for i in range(4)]
    events = [make_event(u, seq, "pause") for seq in range(300) for u in users]
    post_batch(api.url, events)
    api.stop()
    sent = Sent()
    for ev in events:
        sent.add(ev, 200)
    client = redis.Redis.from_url(redis_url)

    stalled = launcher.start(["drain"], env, name="drain-stalled")

    def frozen_after_append() -> list[tuple[str, int]] | None:
        stalled.signal(signal.SIGSTOP)
        pending = own_appends(client, stalled.pid, {})
        if any(size_of(logs, k) > off for k, off in pending):
            return pending
        stalled.signal(signal.SIGCONT)
        time.sleep(0.001)
        return None

    pending = wait_until(
        frozen_after_append, "an append the drainer has not acknowledged", poll_s=0, procs=[stalled]
    )
    key = next(k for k, off in pending if size_of(logs, k) > off)
    wait_until(
        lambda: client.get(f"logpipe:lease:{{{key}}}") is None, "the stalled lease to expire"
    )
    taker = launcher.start(["drain", "--once", "--json"], env, name="drain-taker")
    wait_until(
        lambda: f":{taker.pid}:".encode() in (client.get(f"logpipe:lease:{{{key}}}") or b""),
        "the second drainer to take the key over",
        procs=[taker],
    )
    stalled.signal(signal.SIGCONT)
    assert taker.wait() == 0, taker.output()
    assert stalled.terminate() == 0, stalled.output()
    leftover = launcher.run(["drain", "--once", "--json"], env)  # whatever the race left
    assert leftover.returncode == 0, leftover.stderr
    assert redis_drained(redis_url), redis_leftovers(redis_url)
    client.close()

    delivery = check_files(logs, sent)
    # The taker cuts the unacknowledged append back; or, when the stalled drainer held
    # the file's lock past the taker's wait for it (the taker gives the key up, as it
    # should), whoever claims the key next does: the stalled drainer itself in its next
    # pass (as a new holder, from the offset its own BEGIN recorded), or the leftover pass
    repairs = len(REPAIR.findall(taker.stderr() + stalled.stderr() + leftover.stderr))
    row = record(
        fault_report,
        "drainer_paused",
        "1b. Drainer paused past its lease (SIGSTOP)",
        trials=1,
        sent=len(sent.events),
        **delivery.figures(),
        keys_taken_over=len(pending),
        repairs=repairs,
        seconds=round(time.monotonic() - started, 1),
    )
    delivery.assert_exactly_once()
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert "lost the lease" in stalled.stderr()
    assert repairs >= 1
