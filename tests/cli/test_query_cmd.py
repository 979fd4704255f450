"""``logpipe query`` and ``logpipe tail``: files and Redis read directly, hostile text inert."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from logpipe_cli.cli import query_cmd
from tests.cli.conftest import Invoke, assert_clean_error

ESC = "\x1b"
HOSTILE = "\x1b]52;c;aGFja2Vk\x07\x1b[2K[red]boom[/red]\r"
NOW = int(time.time())
TODAY = NOW // 86400


def ev(n: int, name: str | None = None, day: int = TODAY, **extra: Any) -> bytes:
    body = {"user_id": "u", "event": name or f"e{n}", "timestamp": day * 86400 + n, **extra}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def env(redis_url: str, workdir: Path) -> dict[str, str]:
    return {"LOGPIPE_REDIS_URL": redis_url, "LOGPIPE_DRAINER_LOGS_DIR": str(workdir / "logs")}


@pytest.fixture
def stored(store: redis.Redis, workdir: Path) -> list[bytes]:
    """Two events drained into yesterday's file, two still buffered today."""
    old = [ev(1, day=TODAY - 1), ev(2, day=TODAY - 1)]
    path = workdir / "logs" / "user_u" / f"{TODAY - 1}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(x + b"\n" for x in old))
    new = [ev(3), ev(4, note="hi")]
    store.rpush(f"logs:user_u:{TODAY}", *new)
    return old + new


def test_query_prints_a_table_with_readable_times(
    invoke: Invoke, env: dict[str, str], stored: list[bytes]
) -> None:
    result = invoke("query", "--user", "u", env={**env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "4 events of user u" in result.stdout
    for n in (1, 2, 3, 4):
        assert f" e{n} " in result.stdout
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(TODAY * 86400 + 4))
    assert stamp in result.stdout
    assert '{"note":"hi"}' in result.stdout


def test_query_json_pages_with_the_cursor(
    invoke: Invoke, env: dict[str, str], stored: list[bytes]
) -> None:
    first = json.loads(invoke("query", "-u", "u", "--limit", "3", "--json", env=env).stdout)
    assert [e["event"] for e in first["events"]] == ["e1", "e2", "e3"]
    args = ["query", "-u", "u", "--json", "--cursor", first["next_cursor"]]
    rest = json.loads(invoke(*args, env=env).stdout)
    assert rest == {"events": [json.loads(stored[3])], "next_cursor": None}


def test_query_ndjson_filters_by_event_and_time(
    invoke: Invoke, env: dict[str, str], stored: list[bytes]
) -> None:
    since = time.strftime("%Y-%m-%d", time.gmtime(TODAY * 86400))
    args = ["query", "-u", "u", "-e", "e1", "-e", "e4", "--since", since, "--ndjson"]
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines == [json.loads(stored[3]), {"next_cursor": None}]


def test_query_refuses_a_bad_since(invoke: Invoke, env: dict[str, str]) -> None:
    result = invoke("query", "-u", "u", "--since", "last tuesday", env=env)
    assert_clean_error(result, 2, "since must be Unix seconds or an ISO 8601")


def test_query_limit_over_a_page_points_to_ndjson(invoke: Invoke, env: dict[str, str]) -> None:
    result = invoke("query", "-u", "u", "--limit", "20000", env=env)
    assert_clean_error(result, 2, "--limit 20,000", "at most 10,000", "--ndjson", "1,000,000")


def test_query_and_tail_print_hostile_text_inert(
    invoke: Invoke, env: dict[str, str], store: redis.Redis
) -> None:
    store.rpush(f"logs:user_u:{TODAY}", ev(1, name=HOSTILE, note=HOSTILE))
    for args in (["query", "-u", "u"], ["tail", "-u", "u"], ["query", "-u", "u", "--ndjson"]):
        result = invoke(*args, env={**env, "COLUMNS": "300"})
        assert result.exit_code == 0, result.stderr
        assert ESC not in result.stdout
        assert "\x07" not in result.stdout
        assert "\r" not in result.stdout
    assert "\\x1b]52" in invoke("query", "-u", "u", env={**env, "COLUMNS": "300"}).stdout


def test_tail_prints_the_last_events_oldest_first(
    invoke: Invoke, env: dict[str, str], stored: list[bytes]
) -> None:
    result = invoke("tail", "-u", "u", "-n", "3", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(x)["event"] for x in result.stdout.splitlines()] == ["e2", "e3", "e4"]


def test_tail_follow_prints_new_events_until_ctrl_c(
    invoke: Invoke,
    env: dict[str, str],
    stored: list[bytes],
    store: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls = 0

    async def fake_sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 1:  # a new event arrives between two polls
            store.rpush(f"logs:user_u:{TODAY}", ev(5))
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(query_cmd, "sleep", fake_sleep)
    result = invoke("tail", "-u", "u", "-n", "1", "-f", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(x)["event"] for x in result.stdout.splitlines()] == ["e4", "e5"]
    assert "Traceback" not in result.stderr


def test_query_prints_the_next_cursor_whole_on_a_narrow_terminal(
    invoke: Invoke, env: dict[str, str], stored: list[bytes]
) -> None:
    page = json.loads(invoke("query", "-u", "u", "--limit", "2", "--json", env=env).stdout)
    cursor = page["next_cursor"]
    assert len(cursor) > 40
    # the line is there to be copied: wrapped at 40 columns it would paste as two
    result = invoke("query", "-u", "u", "--limit", "2", env={**env, "COLUMNS": "40"})
    assert result.exit_code == 0, result.stderr
    assert f"more: --cursor {cursor}\n" in result.stdout


def test_tail_prints_one_line_per_event_on_a_narrow_terminal(
    invoke: Invoke, env: dict[str, str], stored: list[bytes], store: redis.Redis
) -> None:
    store.rpush(f"logs:user_u:{TODAY}", ev(5, logger="billing", note="x" * 60))
    result = invoke("tail", "-u", "u", "-n", "3", env={**env, "COLUMNS": "40"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    # wrapped at 40 columns, the last event's fields would spill onto lines of their own
    assert [x.split()[3] for x in lines] == ["e3", "e4", "e5"]  # date, time, UTC, event
    assert lines[2].endswith('"' + "x" * 60 + '"}')
