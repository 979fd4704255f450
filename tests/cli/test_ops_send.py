"""``logpipe send``: one event, the load generator (``--count``) and replay (``--file``),
against the real API and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from logpipe_cli.settings import Settings
from tests.cli.ops_support import DEADLINE_S, ApiServer, RunCli, one_error_line, start_api
from tests.conftest import MakeSettings
from tests.redis_server import RedisServer, free_port

TS = 19723 * 86400


def stored(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every buffered event, by key."""
    client = redis.Redis.from_url(url)
    try:
        return {
            k.decode(): [json.loads(v) for v in client.lrange(k, 0, -1)]
            for k in client.scan_iter("logs:*")
        }
    finally:
        client.close()


# ---- one event -----------------------------------------------------------------------


def test_one_event_is_stored(api: ApiServer, logpipe: RunCli, settings: Settings) -> None:
    result = logpipe(
        "send", "--url", api.url, "--user", "42", "--event", "login", "--timestamp", str(TS)
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("stored (200): key logs:user_42:19723, event_id ")
    event_id = result.stdout.split()[-1]
    assert stored(settings.redis.url) == {
        "logs:user_42:19723": [
            {"user_id": "42", "event": "login", "timestamp": TS, "event_id": event_id}
        ]
    }


def test_one_event_json(api: ApiServer, logpipe: RunCli) -> None:
    result = logpipe("send", "--url", api.url, "-u", "42", "-e", "login", "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["status"], answer["stored"]) == (200, True)
    assert answer["attempts"] == 1
    assert answer["duplicate"] is False
    assert answer["key"].startswith("logs:user_42:")


def test_sending_the_same_event_id_again_stores_it_once(
    api: ApiServer, logpipe: RunCli, settings: Settings
) -> None:
    args = ("send", "--url", api.url, "-u", "42", "-e", "paid", "--event-id", "order-17")
    first = logpipe(*args, "--timestamp", str(TS))
    assert first.exit_code == 0, first.stderr
    again = logpipe(*args, "--timestamp", str(TS), "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["duplicate"] is True
    text = logpipe(*args, "--timestamp", str(TS))
    assert text.stdout.startswith("already stored (200, a duplicate): key logs:user_42:19723")
    assert len(stored(settings.redis.url)["logs:user_42:19723"]) == 1


def test_one_refused_event_exits_1(api: ApiServer, logpipe: RunCli, settings: Settings) -> None:
    result = logpipe("send", "--url", api.url, "--user", ".hidden", "--event", "login")
    assert result.exit_code == 1
    assert one_error_line(result).startswith("error: refused with 400:")
    assert stored(settings.redis.url) == {}


def test_one_event_needs_user_and_event(logpipe: RunCli) -> None:
    result = logpipe("send", "--user", "42")
    assert result.exit_code == 2
    assert "give --user and --event" in one_error_line(result)


def test_one_event_unreachable_exits_1(logpipe: RunCli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = logpipe("send", "--url", url, "--user", "42", "--event", "login")
    assert result.exit_code == 1
    assert one_error_line(result).startswith(f"error: cannot reach {url}/log")


# ---- load generator ------------------------------------------------------------------


def test_count_spreads_generated_events_over_users(
    api: ApiServer, logpipe: RunCli, settings: Settings
) -> None:
    result = logpipe(
        "send", "--url", api.url, "--count", "50", "--users", "5", "--concurrency", "4", "--json"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # --json: nothing but the summary on stdout
    assert summary["target"] == api.url + "/log"
    assert (summary["sent"], summary["accepted"], summary["refused"], summary["failed"]) == (
        50,
        50,
        0,
        0,
    )
    assert summary["requests"] == 50
    assert summary["statuses"] == {"200": 50}
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert summary["events_per_s"] > 0
    assert summary["ok"] is True
    keys = stored(settings.redis.url)
    users = Counter(e["user_id"] for evs in keys.values() for e in evs)
    assert users == {f"u{i}": 10 for i in range(5)}
    seqs = sorted(e["seq"] for evs in keys.values() for e in evs)
    assert seqs == list(range(50))  # each generated event stored exactly once
    assert {e["event"] for evs in keys.values() for e in evs} == {"load"}


def test_count_with_user_event_and_timestamp(
    api: ApiServer, logpipe: RunCli, settings: Settings
) -> None:
    result = logpipe(
        "send", "--url", api.url, "--count", "3", "-u", "7", "-e", "ping", "--timestamp", str(TS)
    )
    assert result.exit_code == 0, result.stderr
    assert "accepted" in result.stdout
    assert "latency p99" in result.stdout
    keys = stored(settings.redis.url)
    assert list(keys) == ["logs:user_7:19723"]
    assert [(e["event"], e["timestamp"]) for e in keys["logs:user_7:19723"]] == [("ping", TS)] * 3


def test_count_with_batch_posts_ndjson_batches(
    api: ApiServer, logpipe: RunCli, settings: Settings
) -> None:
    result = logpipe("send", "--url", api.url, "--count", "45", "--batch", "10", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["target"] == api.url + "/logs"
    assert summary["requests"] == 5
    assert summary["accepted"] == 45
    assert sum(len(v) for v in stored(settings.redis.url).values()) == 45


def test_count_refused_events_exit_1(api: ApiServer, logpipe: RunCli) -> None:
    # a timestamp far in the future is refused (400) by the API
    future = str(int(time.time()) + 10 * 86400)
    result = logpipe("send", "--url", api.url, "--count", "4", "--timestamp", future, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["refused"], summary["failed"]) == (0, 4, 0)
    assert summary["first_refusal"].startswith("400: ")
    assert one_error_line(result).startswith("error: of 4 events, 4 refused (first: 400: ")


def test_count_against_no_server_counts_failures_and_exits_1(logpipe: RunCli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = logpipe("send", "--url", url, "--count", "6", "--batch", "4", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["accepted"], summary["failed"]) == (6, 0, 6)
    assert summary["requests"] == 2
    assert summary["p50_ms"] is None
    assert f"got no answer (first: cannot reach {url}/logs" in one_error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "5", "--user", "a", "--users", "3"], "give --user (one user) or --users K"),
        (["--batch", "5"], "--concurrency, --users and --batch need --count N or --file F"),
        (["--users", "2", "-u", "a", "-e", "b"], "need --count N or --file F"),
    ],
)
def test_load_usage_errors_exit_2(logpipe: RunCli, args: list[str], message: str) -> None:
    result = logpipe("send", *args)
    assert result.exit_code == 2
    assert message in one_error_line(result)


@pytest.mark.parametrize("url", ["foo", "ftp://example.com", "http://127.0.0.1:99999"])
@pytest.mark.parametrize(
    "args", [["send", "-u", "a", "-e", "b"], ["send", "--count", "2"], ["stats"]]
)
def test_a_bad_api_url_is_a_usage_error(logpipe: RunCli, url: str, args: list[str]) -> None:
    result = logpipe(*args, "--url", url)
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"error: API URL {url!r}")
    assert result.stdout == ""


def test_count_must_be_positive(logpipe: RunCli) -> None:
    assert logpipe("send", "--count", "0").exit_code == 2


# ---- replay --------------------------------------------------------------------------


def write_events(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n\n")  # blank lines are skipped
    return path


@pytest.mark.parametrize("batch", [None, "2"])
def test_file_replays_every_event_in_order(
    api: ApiServer, logpipe: RunCli, settings: Settings, tmp_path: Path, batch: str | None
) -> None:
    events = [{"user_id": "r", "event": f"e{i}", "timestamp": TS, "extra": [i]} for i in range(5)]
    path = write_events(tmp_path / "events.jsonl", [json.dumps(e) for e in events])
    args = ["send", "--url", api.url, "--file", str(path), "--concurrency", "1", "--json"]
    result = logpipe(*args, *(["--batch", batch] if batch else []))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["accepted"]) == (5, 5)
    assert summary["requests"] == (5 if batch is None else 3)
    got = stored(settings.redis.url)["logs:user_r:19723"]
    ids = [e.pop("event_id") for e in got]  # each line got an id, so retries are safe
    assert got == events
    assert len(set(ids)) == 5


def test_file_with_a_bad_line_refuses_it_and_exits_1(
    api: ApiServer, logpipe: RunCli, settings: Settings, tmp_path: Path
) -> None:
    good = json.dumps({"user_id": "r", "event": "ok", "timestamp": TS})
    path = write_events(tmp_path / "events.jsonl", [good, "{not json", good])
    result = logpipe("send", "--url", api.url, "--file", str(path), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["accepted"], summary["refused"]) == (3, 2, 1)
    assert "refused (first: 400: body is not valid JSON" in one_error_line(result)
    assert len(stored(settings.redis.url)["logs:user_r:19723"]) == 2


def test_file_batch_with_a_bad_line_refuses_the_batch(
    api: ApiServer, logpipe: RunCli, settings: Settings, tmp_path: Path
) -> None:
    good = json.dumps({"user_id": "r", "event": "ok", "timestamp": TS})
    # a blank line: skipped, but counted in the line numbers the message gives
    path = write_events(tmp_path / "events.jsonl", [good, "", good, good, '{"user_id": 1}'])
    result = logpipe("send", "--url", api.url, "--file", str(path), "--batch", "2", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["refused"]) == (2, 2)
    assert "(first: event 1, line 5 of the file:" in summary["first_refusal"]
    assert len(stored(settings.redis.url)["logs:user_r:19723"]) == 2


def test_file_missing_exits_2(logpipe: RunCli, tmp_path: Path) -> None:
    result = logpipe("send", "--file", str(tmp_path / "none.jsonl"))
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {tmp_path / 'none.jsonl'} does not exist"


def test_file_does_not_mix_with_generated_events(logpipe: RunCli, tmp_path: Path) -> None:
    path = write_events(tmp_path / "events.jsonl", ["{}"])
    result = logpipe("send", "--file", str(path), "--count", "3", "--user", "u")
    assert result.exit_code == 2
    assert "--file replays events as they are: drop --count, --user" in one_error_line(result)


# ---- retries -------------------------------------------------------------------------


@pytest.fixture
def api_on_own_redis(own_redis: RedisServer, make_settings: MakeSettings) -> Iterator[ApiServer]:
    server = start_api(make_settings(own_redis.url))
    yield server
    server.stop()


def refused_for_redis(url: str) -> float:
    """How many events the API refused because Redis was down (from /metrics)."""
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith('logpipe_events_refused_total{reason="redis_unavailable"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    ("mode", "expect_stored"),
    [(["--user", "42", "--event", "retry"], 1), (["--count", "3", "--concurrency", "1"], 3)],
)
def test_retries_ride_out_a_redis_outage(
    api_on_own_redis: ApiServer,
    own_redis: RedisServer,
    tmp_path: Path,
    mode: list[str],
    expect_stored: int,
) -> None:
    own_redis.stop()  # the API now answers 503
    env = {
        **os.environ,
        "LOGPIPE_REDIS_URL": own_redis.url,
    }
    env.pop("LOGPIPE_CONFIG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logpipe_cli",
            "send",
            "--url",
            api_on_own_redis.url,
            "--retries",
            "12",
            "--json",
            *mode,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while refused_for_redis(api_on_own_redis.url) < 1:  # a 503 went back to `send`
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "send was never refused"
            time.sleep(0.02)
        own_redis.start()
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    answer = json.loads(out)
    if "attempts" in answer:
        assert answer["status"] == 200
        assert answer["attempts"] >= 2
    else:
        assert (answer["accepted"], answer["refused"], answer["failed"]) == (3, 0, 0)
    assert sum(len(v) for v in stored(own_redis.url).values()) == expect_stored
