"""``logpipe inspect keys|file|files`` against a real Redis and real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from logpipe_cli.settings import Settings
from tests.cli.ops_support import RunCli, one_error_line, seed

DAY = 19723  # 2024-01-01
TS = DAY * 86400  # 2024-01-01T00:00:00Z


def ev(user: str, event: str = "login", ts: int = TS, **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "event": event, "timestamp": ts, **extra}


@pytest.fixture
def buffered(settings: Settings) -> None:
    """alice: 3 events on 2024-01-02, 1 on 2024-01-01; bob: 2 on 2023-12-31."""
    seed(
        settings.redis.url,
        [(f"logs:user_alice:{DAY + 1}", ev("alice", ts=TS + 86400)) for _ in range(3)]
        + [(f"logs:user_alice:{DAY}", ev("alice"))]
        + [(f"logs:user_bob:{DAY - 1}", ev("bob", ts=TS - 86400)) for _ in range(2)],
    )


# ---- inspect keys --------------------------------------------------------------------


@pytest.mark.usefixtures("buffered")
def test_keys_table_shows_dates_events_and_a_totals_row(logpipe: RunCli) -> None:
    result = logpipe("inspect", "keys")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("logs:user_alice:19724", "2024-01-02", "2024-01-01", "2023-12-31"):
        assert text in out
    assert "total: 3 keys" in out
    total_row = next(line for line in out.splitlines() if "total: 3 keys" in line)
    assert "6" in total_row.split("│")[5]  # the events column of the totals row
    assert result.stderr == ""


@pytest.mark.usefixtures("buffered")
def test_keys_json_has_user_day_date_events_bytes_ttl(logpipe: RunCli) -> None:
    result = logpipe("inspect", "keys", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    by_key = {r["key"]: r for r in rows}
    assert set(by_key) == {"logs:user_alice:19724", "logs:user_alice:19723", "logs:user_bob:19722"}
    row = by_key["logs:user_alice:19724"]
    assert row["user"] == "alice"
    assert row["day"] == DAY + 1
    assert row["date"] == "2024-01-02"
    assert row["events"] == 3
    assert row["bytes"] > 0
    assert row["ttl_s"] == -1
    assert row["kind"] == "events"


@pytest.mark.usefixtures("buffered")
@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("key", ["logs:user_alice:19723", "logs:user_alice:19724", "logs:user_bob:19722"]),
        ("events", ["logs:user_alice:19724", "logs:user_bob:19722", "logs:user_alice:19723"]),
        ("age", ["logs:user_bob:19722", "logs:user_alice:19723", "logs:user_alice:19724"]),
    ],
)
def test_keys_sort(logpipe: RunCli, sort: str, expected: list[str]) -> None:
    result = logpipe("inspect", "keys", "--sort", sort, "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["key"] for r in json.loads(result.stdout)] == expected


@pytest.mark.usefixtures("buffered")
def test_keys_user_and_limit(logpipe: RunCli) -> None:
    result = logpipe(
        "inspect", "keys", "--user", "alice", "--sort", "events", "--limit", "1", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert [r["key"] for r in json.loads(result.stdout)] == ["logs:user_alice:19724"]


@pytest.mark.usefixtures("buffered")
def test_keys_limit_keeps_totals_for_all_matching_keys(logpipe: RunCli) -> None:
    result = logpipe("inspect", "keys", "--user", "alice", "--limit", "1")
    assert result.exit_code == 0, result.stderr
    assert "total: 2 keys" in result.stdout
    assert "showing 1 of 2 keys" in result.stdout
    assert "bob" not in result.stdout


def test_keys_show_a_ttl(logpipe: RunCli, settings: Settings) -> None:
    seed(settings.redis.url, [(f"logs:user_carol:{DAY}", ev("carol"))])
    client = redis.Redis.from_url(settings.redis.url)
    try:
        client.expire(f"logs:user_carol:{DAY}", 7200)
    finally:
        client.close()
    rows = json.loads(logpipe("inspect", "keys", "--json").stdout)
    assert 7000 < rows[0]["ttl_s"] <= 7200
    table = logpipe("inspect", "keys").stdout
    assert "2h 00m" in table or "1h 59m" in table


def test_keys_empty_redis_is_an_empty_list(logpipe: RunCli) -> None:
    result = logpipe("inspect", "keys", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_keys_bad_sort_is_a_usage_error(logpipe: RunCli) -> None:
    result = logpipe("inspect", "keys", "--sort", "size")
    assert result.exit_code == 2
    assert "--sort must be one of events, key, age" in one_error_line(result)
    assert result.stdout == ""


def test_keys_redis_down_exits_1_with_one_line(logpipe: RunCli) -> None:
    result = logpipe("inspect", "keys", "--json", LOGPIPE_REDIS_URL="redis://127.0.0.1:1")
    assert result.exit_code == 1
    assert "redis unavailable" in one_error_line(result)
    assert result.stdout == ""


# ---- inspect file --------------------------------------------------------------------


@pytest.fixture
def log_file(settings: Settings) -> Path:
    """alice's 2024-01-01 file: 5 events over the day, and 3 lines that are not events."""
    path = Path(settings.drainer.logs_dir) / "user_alice" / f"{DAY}.jsonl"
    path.parent.mkdir(parents=True)
    lines = [
        json.dumps(ev("alice", "login", TS + 0)),
        json.dumps(ev("alice", "click", TS + 3600, button="ok")),
        "this is not json",
        json.dumps(ev("alice", "click", TS + 7200)),
        json.dumps([1, 2, 3]),
        json.dumps(ev("alice", "logout", TS + 10800)),
        json.dumps(ev("alice", "login", TS + 14400)),
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe broken tail")
    return path


def test_file_table_has_readable_times_and_counts_bad_lines(
    logpipe: RunCli, log_file: Path
) -> None:
    result = logpipe("inspect", "file", str(log_file))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "2024-01-01 01:00:00" in out
    assert "click" in out
    assert "logout" in out
    assert '"button": "ok"' in out
    assert out.count("not a JSON object") == 3
    assert "8 lines in the file, 3 not JSON objects" in " ".join(out.split())
    assert result.stderr.strip() == f"warning: 3 lines of {log_file} are not JSON objects"


def test_file_json_gives_iso_times_and_raw_bad_lines(logpipe: RunCli, log_file: Path) -> None:
    result = logpipe("inspect", "file", str(log_file), "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[1]["time"] == "2024-01-01T01:00:00+00:00"
    assert rows[1]["event"]["button"] == "ok"
    assert rows[2] == {"line": 3, "time": None, "event": None, "raw": "this is not json"}
    assert rows[7]["event"] is None
    assert "broken tail" in rows[7]["raw"]


@pytest.mark.parametrize("day", [str(DAY), "2024-01-01"])
def test_file_by_user_and_day_is_found_under_logs_dir(
    logpipe: RunCli, log_file: Path, day: str
) -> None:
    result = logpipe("inspect", "file", "--user", "alice", "--day", day, "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 8


def test_file_filters_by_event_and_keeps_bad_lines(logpipe: RunCli, log_file: Path) -> None:
    rows = json.loads(
        logpipe("inspect", "file", str(log_file), "--event", "click", "--json").stdout
    )
    events = [r["event"]["event"] for r in rows if r["event"] is not None]
    assert events == ["click", "click"]
    assert sum(1 for r in rows if r["event"] is None) == 3


@pytest.mark.parametrize(
    ("since", "until", "lines"),
    [
        ("2024-01-01T01:00", "2024-01-01T03:00", [2, 4]),  # since inclusive, until exclusive
        (str(TS + 7200), None, [4, 6, 7]),
        (None, "2024-01-01 01:00:00+00:00", [1]),
        ("2024-01-01T03:00+02:00", "2024-01-01T02:00:01", [2, 4]),  # 01:00Z..02:00:01Z
        ("2024-01-02", None, []),
    ],
)
def test_file_time_window(
    logpipe: RunCli, log_file: Path, since: str | None, until: str | None, lines: list[int]
) -> None:
    args = ["inspect", "file", str(log_file), "--json"]
    if since is not None:
        args += ["--since", since]
    if until is not None:
        args += ["--until", until]
    result = logpipe(*args)
    assert result.exit_code == 0, result.stderr
    assert [r["line"] for r in json.loads(result.stdout) if r["event"] is not None] == lines


def test_file_limit_and_tail(logpipe: RunCli, log_file: Path) -> None:
    first = json.loads(logpipe("inspect", "file", str(log_file), "--limit", "2", "--json").stdout)
    last = json.loads(logpipe("inspect", "file", str(log_file), "--tail", "2", "--json").stdout)
    assert [r["line"] for r in first] == [1, 2]
    assert [r["line"] for r in last] == [7, 8]
    table = logpipe("inspect", "file", str(log_file), "--event", "login", "--tail", "1").stdout
    assert "1 shown of 5 matching" in " ".join(table.split())


def test_file_missing_path_exits_2(logpipe: RunCli, tmp_path: Path) -> None:
    result = logpipe("inspect", "file", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {tmp_path / 'nope.jsonl'} does not exist"
    assert result.stdout == ""


def test_file_given_a_directory_says_so(logpipe: RunCli, tmp_path: Path) -> None:
    result = logpipe("inspect", "file", str(tmp_path))
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {tmp_path} is a directory, not a file"


@pytest.mark.usefixtures("log_file")
def test_file_missing_day_exits_2_naming_the_path(logpipe: RunCli, settings: Settings) -> None:
    result = logpipe("inspect", "file", "--user", "alice", "--day", "2024-01-05")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "no file for user 'alice' on day 2024-01-05" in line
    assert str(Path(settings.drainer.logs_dir).resolve() / "user_alice" / "19727.jsonl") in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is neither Unix seconds nor an ISO date"),
        (["--until", "2024-13-01"], "--until: '2024-13-01' is neither"),
        (["--limit", "1", "--tail", "1"], "give --limit or --tail, not both"),
        (["--user", "alice"], "give a PATH or --user and --day, not both"),
    ],
)
def test_file_usage_errors_exit_2(
    logpipe: RunCli, log_file: Path, args: list[str], message: str
) -> None:
    result = logpipe("inspect", "file", str(log_file), *args)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "alice"], "give a PATH, or --user and --day"),
        (["--user", "../etc", "--day", "1"], "'../etc' is not a valid user id"),
        (["--user", "alice", "--day", "monday"], "'monday' is neither a day number"),
    ],
)
def test_file_user_day_usage_errors_exit_2(logpipe: RunCli, args: list[str], message: str) -> None:
    result = logpipe("inspect", "file", *args)
    assert result.exit_code == 2
    assert message in one_error_line(result)


# ---- inspect files -------------------------------------------------------------------


def _write(logs_dir: Path, user: str, day: int, n: int) -> None:
    path = logs_dir / f"user_{user}" / f"{day}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(ev(user)) + "\n" for _ in range(n)))


def test_files_counts_events_and_filters_by_user(logpipe: RunCli, settings: Settings) -> None:
    logs = Path(settings.drainer.logs_dir)
    _write(logs, "alice", DAY, 3)
    _write(logs, "alice", DAY + 1, 1)
    _write(logs, "bob", DAY, 2)
    every = json.loads(logpipe("inspect", "files", "--json").stdout)
    assert sorted((f["user"], f["day"], f["events"]) for f in every) == [
        ("alice", DAY, 3),
        ("alice", DAY + 1, 1),
        ("bob", DAY, 2),
    ]
    alice = json.loads(logpipe("inspect", "files", "--user", "alice", "--json").stdout)
    assert {f["user"] for f in alice} == {"alice"}
    assert alice[0]["date"] == "2024-01-01"
    table = logpipe("inspect", "files", "--user", "bob")
    assert table.exit_code == 0, table.stderr
    assert "total: 1 file " in table.stdout
    assert "alice" not in table.stdout
