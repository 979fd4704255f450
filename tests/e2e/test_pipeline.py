"""End to end: ``logpipe serve``, ``drain`` and ``send`` as processes, a real redis-server.

Events go in over HTTP and are read back from the files, byte for byte where it matters.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    BASE_TS,
    DAY_S,
    Launcher,
    LogpipeProcess,
    Sent,
    check_files,
    json_documents,
    make_event,
    post_batch,
    redis_drained,
    redis_leftovers,
    stat,
    wait_until,
)
from tests.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def lines_of(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def test_events_travel_from_http_to_files(
    launcher: Launcher, redis_url: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    env = launcher.env(redis_url, logs, drainer_interval_seconds=0.2)
    api = launcher.api(env)
    drain = launcher.start(["drain"], env, name="drain-loop")
    sent = Sent()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for seq in range(40):
            ev = make_event(f"u{seq % 3}", seq, "single")
            ev["extra"] = {"kept": [1, "two"]}  # fields beyond the three are stored verbatim
            sent.add(ev, http.post("/log", json=ev).status_code)
        refused = http.post("/log", json={"user_id": ".hidden", "event": "x", "timestamp": 1})
        assert refused.status_code == 400
        assert refused.json()["field"] == "user_id"
    batch = [make_event("batch@example.com", seq, "batch") for seq in range(25)]
    post_batch(api.url, batch)
    for ev in batch:
        sent.add(ev, 200)
    assert sent.count() == {200: 65}

    wait_until(lambda: redis_drained(redis_url), "the drainer to empty Redis", procs=[drain])
    delivery = check_files(logs, sent)
    delivery.assert_exactly_once()
    assert delivery.lines == 65
    day = BASE_TS // DAY_S
    assert sorted(str(p.relative_to(logs)) for p in logs.rglob("*.jsonl")) == sorted(
        f"user_{u}/{d}.jsonl"
        for u in ("u0", "u1", "u2", "batch@example.com")
        for d in (day, day - 1)
    )
    first = lines_of(logs / "user_u0" / f"{day}.jsonl")[0]
    assert first == {**make_event("u0", 0, "single"), "extra": {"kept": [1, "two"]}}

    assert drain.terminate() == 0
    api.stop()


def test_send_then_drain_once_prints_a_summary(
    launcher: Launcher, redis_url: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    env = launcher.env(redis_url, logs)
    api = launcher.api(env)

    ok = launcher.run(
        [
            "send",
            "--user",
            "123",
            "--event",
            "login",
            "--timestamp",
            str(BASE_TS),
            "--event-id",
            "login-1",
            "--url",
            api.url,
        ],
        env,
    )
    assert ok.returncode == 0, ok.stderr
    assert "stored (200)" in ok.stdout
    assert ok.stderr == ""

    bad = launcher.run(["send", "--user", ".x", "--event", "login", "--url", api.url], env)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: refused with 400: user_id:")

    down = launcher.run(
        ["send", "--user", "123", "--event", "login", "--url", f"http://127.0.0.1:{free_port()}"],
        env,
    )
    assert down.returncode == 1
    assert down.stderr.startswith("error: cannot reach")
    assert "Traceback" not in down.stderr

    summary = launcher.run(["drain", "--once"], env)
    assert summary.returncode == 0, summary.stderr
    # the rich table: a title, its headers, and one row of figures
    assert "drain" in summary.stdout
    for header in ("keys", "events", "files", "bytes", "seconds"):
        assert header in summary.stdout
    row = next(line for line in summary.stdout.splitlines() if "B" in line and "│" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[:3] == ["1", "1", "1"], summary.stdout

    path = logs / "user_123" / f"{BASE_TS // DAY_S}.jsonl"
    assert lines_of(path) == [
        {"user_id": "123", "event": "login", "timestamp": BASE_TS, "event_id": "login-1"}
    ]

    again = launcher.run(["drain", "--once", "--json"], env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["keys"], report["events"], report["ok"]) == (0, 0, True)
    api.stop()


def test_drain_once_without_redis_says_so_and_exits_1(launcher: Launcher, tmp_path: Path) -> None:
    env = launcher.env(
        f"redis://127.0.0.1:{free_port()}", tmp_path / "logs", redis_timeout_seconds=2
    )
    result = launcher.run(["drain", "--once"], env)
    assert result.returncode == 1
    assert "error: redis unavailable" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_exits_3_when_its_port_is_taken(launcher: Launcher, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = launcher.env("redis://127.0.0.1:1", tmp_path / "logs", server_port=port)
        result = launcher.run(["serve"], env)
    assert result.returncode == 3, result.stderr
    # one line, as every other refusal, before uvicorn starts (and logs its own)
    errors = [x for x in result.stderr.splitlines() if "error" in x.lower()]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "Traceback" not in result.stderr


def preload(
    launcher: Launcher, redis_url: str, tmp_path: Path, n: int
) -> tuple[Sent, dict[str, str]]:
    """One key with ``n`` events, and an env whose drainer needs many batches for it."""
    env = launcher.env(
        redis_url,
        tmp_path / "logs",
        drainer_batch_events=5,
        drainer_lease_seconds=1,
        drainer_interval_seconds=600,
    )
    api = launcher.api(env)
    events = [make_event("slow", 2 * i, "pre") for i in range(n)]  # even seqs: one day
    for i in range(0, n, 1000):
        post_batch(api.url, events[i : i + 1000])
    api.stop()
    sent = Sent()
    for ev in events:
        sent.add(ev, 200)
    return sent, env


def stop_mid_pass(drain: LogpipeProcess, redis_url: str, total: int) -> int:
    """Freeze the drainer once it has written some but not all events; returns how many."""

    def frozen_mid_pass() -> int:
        if stat(redis_url, "drained_events") == 0:
            return 0
        drain.signal(signal.SIGSTOP)
        done = stat(redis_url, "drained_events")
        assert done < total, "the pass ended before the test could signal it: make it longer"
        return done

    return int(
        wait_until(frozen_mid_pass, "the drainer to start its pass", poll_s=0.005, procs=[drain])
    )


def test_sigterm_lets_the_drain_loop_finish_its_pass_then_exit_0(
    launcher: Launcher, redis_url: str, tmp_path: Path
) -> None:
    total = 3000
    sent, env = preload(launcher, redis_url, tmp_path, total)
    drain = launcher.start(["drain", "--json"], env, name="drain-loop")
    done_at_signal = stop_mid_pass(drain, redis_url, total)
    drain.signal(signal.SIGTERM)
    drain.signal(signal.SIGCONT)
    assert drain.wait() == 0, drain.output()

    # the pass in hand was finished: everything is on disk, nothing is held in Redis
    assert 0 < done_at_signal < total
    assert redis_leftovers(redis_url) == {
        "logs:*": [],
        "logpipe:claim:*": [],
        "logpipe:lease:*": [],
        "logpipe:offset:*": [],
        "buffered": 0,
    }
    reports = json_documents(drain.stdout())
    assert [r["events"] for r in reports] == [total]
    delivery = check_files(tmp_path / "logs", sent)
    delivery.assert_exactly_once()
    assert delivery.lines == total


def test_a_second_sigterm_stops_at_once_and_the_next_drain_completes_exactly_once(
    launcher: Launcher, redis_url: str, tmp_path: Path
) -> None:
    total = 3000
    sent, env = preload(launcher, redis_url, tmp_path, total)
    drain = launcher.start(["drain"], env, name="drain-loop")
    stop_mid_pass(drain, redis_url, total)
    # two different signals, as the same one sent twice to a stopped process is seen once
    drain.signal(signal.SIGINT)
    drain.signal(signal.SIGTERM)
    drain.signal(signal.SIGCONT)
    assert drain.wait() == 0, drain.output()
    assert stat(redis_url, "drained_events") < total, "the second signal did not stop the pass"

    # the claim it dropped is taken over once its lease runs out, and finished once
    result = launcher.run(["drain", "--once", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert redis_drained(redis_url), redis_leftovers(redis_url)
    delivery = check_files(tmp_path / "logs", sent)
    delivery.assert_exactly_once()
    assert delivery.lines == total
