"""Commands that talk to Redis: redis-check, drain --once, inspect keys, against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cli.conftest import Invoke, assert_clean_error
from tests.redis_server import free_port

DAY = 19675


def lines(user: str, n: int) -> list[bytes]:
    return [
        json.dumps(
            {"user_id": user, "event": f"e{i}", "timestamp": DAY * 86400 + i}, separators=(",", ":")
        ).encode()
        for i in range(n)
    ]


@pytest.fixture
def env(redis_url: str, workdir: Path) -> dict[str, str]:
    return {"LOGPIPE_REDIS_URL": redis_url, "LOGPIPE_DRAINER_LOGS_DIR": str(workdir / "logs")}


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}"


# ---- redis-check ----------------------------------------------------------------------


def test_redis_check_ok(invoke: Invoke, env: dict[str, str], raw: redis.Redis) -> None:
    result = invoke("redis-check", env=env)
    assert result.exit_code == 0, result.stderr
    assert raw.info()["redis_version"] in result.stdout
    assert "reachable" in result.stdout


def test_redis_check_json(invoke: Invoke, env: dict[str, str], raw: redis.Redis) -> None:
    raw.rpush(f"logs:user_a:{DAY}", *lines("a", 2))
    raw.hset("logpipe:stats", "buffered", 2)
    result = invoke("redis-check", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["version"] == raw.info()["redis_version"]
    assert data["aof_enabled"] is True  # the fixture's server runs with appendonly yes
    assert data["buffered_keys"] == 1
    assert data["buffered_events"] == 2
    assert data["rtt_ms"] >= 0


def test_redis_check_url_flag_wins(invoke: Invoke, redis_url: str) -> None:
    result = invoke(
        "redis-check", "--url", redis_url, "--json", env={"LOGPIPE_REDIS_URL": closed_url()}
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["url"] == redis_url


def test_redis_check_down(invoke: Invoke) -> None:
    url = closed_url()
    result = invoke(
        "redis-check", env={"LOGPIPE_REDIS_URL": url, "LOGPIPE_REDIS_TIMEOUT_SECONDS": "1"}
    )
    assert_clean_error(result, 1, "redis unavailable", url.rsplit(":", 1)[1])
    assert result.stdout == ""


def test_redis_check_does_not_print_the_password(invoke: Invoke, redis_server: object) -> None:
    url = closed_url().replace("redis://", "redis://:hunter2@")
    result = invoke(
        "redis-check", env={"LOGPIPE_REDIS_URL": url, "LOGPIPE_REDIS_TIMEOUT_SECONDS": "1"}
    )
    assert result.exit_code == 1
    assert "hunter2" not in result.stdout + result.stderr


# ---- drain --once ---------------------------------------------------------------------


def test_drain_once_moves_events_and_prints_a_summary(
    invoke: Invoke, env: dict[str, str], raw: redis.Redis, workdir: Path
) -> None:
    a, b = lines("a", 3), lines("b", 2)
    raw.rpush(f"logs:user_a:{DAY}", *a)
    raw.rpush(f"logs:user_b:{DAY}", *b)
    result = invoke("drain", "--once", env=env)
    assert result.exit_code == 0, result.stderr
    assert "drain" in result.stdout
    header = next(x for x in result.stdout.splitlines() if "events" in x)
    assert "keys" in header
    assert "files" in header
    assert (workdir / "logs" / "user_a" / f"{DAY}.jsonl").read_bytes() == b"\n".join(a) + b"\n"
    assert (workdir / "logs" / "user_b" / f"{DAY}.jsonl").read_bytes() == b"\n".join(b) + b"\n"
    assert list(raw.scan_iter(match="logs:*")) == []


def test_drain_once_json(invoke: Invoke, env: dict[str, str], raw: redis.Redis) -> None:
    raw.rpush(f"logs:user_a:{DAY}", *lines("a", 4))
    result = invoke("drain", "--once", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["ok"], report["events"], report["keys"], report["files"]) == (True, 4, 1, 1)


def test_drain_once_logs_dir_flag(
    invoke: Invoke, env: dict[str, str], raw: redis.Redis, workdir: Path
) -> None:
    raw.rpush(f"logs:user_a:{DAY}", *lines("a", 1))
    result = invoke("drain", "--once", "--logs-dir", "elsewhere", env=env)
    assert result.exit_code == 0, result.stderr
    assert (workdir / "elsewhere" / "user_a" / f"{DAY}.jsonl").is_file()
    assert not (workdir / "logs").exists()


def test_drain_once_warns_about_keys_it_leaves(
    invoke: Invoke, env: dict[str, str], raw: redis.Redis
) -> None:
    raw.rpush("logs:user_../../etc:1", b"{}")
    raw.set("logs:user_s:1", "x")
    result = invoke("drain", "--once", env=env)
    assert result.exit_code == 0, result.stderr
    assert "logs:user_../../etc:1" in result.stderr
    assert "logs:user_s:1" in result.stderr
    assert raw.exists("logs:user_../../etc:1", "logs:user_s:1") == 2


def test_drain_once_redis_down(invoke: Invoke, workdir: Path) -> None:
    result = invoke(
        "drain",
        "--once",
        env={"LOGPIPE_REDIS_URL": closed_url(), "LOGPIPE_REDIS_TIMEOUT_SECONDS": "1"},
    )
    assert_clean_error(result, 1, "redis unavailable")


# ---- inspect keys ---------------------------------------------------------------------


def test_inspect_keys_table_and_json(invoke: Invoke, env: dict[str, str], raw: redis.Redis) -> None:
    raw.rpush(f"logs:user_alice:{DAY}", *lines("alice", 3))
    raw.rpush("logpipe:claim:{logs:user_bob:7}", *lines("bob", 2))
    table = invoke("inspect", "keys", env=env)
    assert table.exit_code == 0, table.stderr
    assert f"logs:user_alice:{DAY}" in table.stdout
    assert "alice" in table.stdout

    result = invoke("inspect", "keys", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    rows = {r["key"]: r for r in json.loads(result.stdout)}
    alice = rows[f"logs:user_alice:{DAY}"]
    assert (alice["user"], alice["day"], alice["events"], alice["kind"]) == (
        "alice",
        DAY,
        3,
        "events",
    )
    bob = rows["logpipe:claim:{logs:user_bob:7}"]
    assert (bob["user"], bob["day"], bob["events"], bob["kind"]) == ("bob", 7, 2, "claim")


def test_inspect_keys_empty(invoke: Invoke, env: dict[str, str]) -> None:
    result = invoke("inspect", "keys", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_inspect_keys_redis_down(invoke: Invoke) -> None:
    result = invoke(
        "inspect",
        "keys",
        env={"LOGPIPE_REDIS_URL": closed_url(), "LOGPIPE_REDIS_TIMEOUT_SECONDS": "1"},
    )
    assert_clean_error(result, 1, "redis unavailable")
