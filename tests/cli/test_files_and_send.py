"""Commands that read files or talk HTTP: inspect file(s), send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli.client import SendResult
from tests.cli.conftest import Invoke, assert_clean_error
from tests.redis_server import free_port


@pytest.fixture
def logfile(workdir: Path) -> Path:
    path = workdir / "logs" / "user_alice" / "19675.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        b'{"user_id":"alice","event":"login","timestamp":1699920000}\n'
        b'{"user_id":"alice","event":"buy","timestamp":1699920060,"amount":12}\n'
        b"garbage line\n"
    )
    return path


def test_inspect_file_table(invoke: Invoke, logfile: Path) -> None:
    result = invoke("inspect", "file", str(logfile))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "login" in out
    assert "buy" in out
    assert "amount" in out
    assert "2023-11-14" in out  # the timestamp shown as a UTC time
    assert "not" in result.stderr  # the bad line is reported on stderr
    assert "1 line" in result.stderr


def test_inspect_file_json(invoke: Invoke, logfile: Path) -> None:
    result = invoke("inspect", "file", str(logfile), "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["line"] for r in rows] == [1, 2, 3]
    assert rows[0]["event"] == {"user_id": "alice", "event": "login", "timestamp": 1699920000}
    assert rows[1]["event"]["amount"] == 12
    assert rows[2]["event"] is None
    assert rows[2]["raw"] == "garbage line"


def test_inspect_file_limit(invoke: Invoke, logfile: Path) -> None:
    result = invoke("inspect", "file", str(logfile), "--json", "--limit", "1")
    assert [r["line"] for r in json.loads(result.stdout)] == [1]


def test_inspect_missing_file(invoke: Invoke, workdir: Path) -> None:
    result = invoke("inspect", "file", str(workdir / "nope.jsonl"))
    assert_clean_error(result, 2, "nope.jsonl")
    assert result.stdout == ""


def test_inspect_files(invoke: Invoke, logfile: Path) -> None:
    table = invoke("inspect", "files", env={"LOGPIPE_DRAINER_LOGS_DIR": "logs"})
    assert table.exit_code == 0, table.stderr
    assert "log files" in table.stdout
    assert "alice" in table.stdout
    result = invoke("inspect", "files", "--json", "--logs-dir", "logs")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["user"], row["day"], row["bytes"]) == ("alice", 19675, logfile.stat().st_size)


def test_inspect_files_empty_dir(invoke: Invoke) -> None:
    result = invoke("inspect", "files", "--json", "--logs-dir", "nothing-here")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


# ---- send -----------------------------------------------------------------------------


def test_send_to_an_unreachable_server(invoke: Invoke) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("send", "--user", "123", "--event", "login", "--url", url)
    assert_clean_error(result, 1, "cannot reach", f"{url}/log")
    assert result.stdout == ""


class FakeSend:
    """Stands in for the HTTP call, to check what `send` asks and how it reports."""

    def __init__(self, result: SendResult) -> None:
        self.result = result
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, event: dict[str, Any], **kwargs: Any) -> SendResult:
        self.calls.append((url, event))
        return self.result


def test_send_stored(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSend(SendResult(200, {"stored": True, "key": "logs:user_123:1"}, 1))
    monkeypatch.setattr("logpipe_cli.cli.send.send_event", fake)
    result = invoke(
        "send",
        "-u",
        "123",
        "-e",
        "login",
        "--timestamp",
        "86400",
        env={"LOGPIPE_SERVER_PORT": "4321"},
    )
    assert result.exit_code == 0, result.stderr
    assert "stored" in result.stdout
    assert "logs:user_123:1" in result.stdout
    assert fake.calls == [
        ("http://127.0.0.1:4321", {"user_id": "123", "event": "login", "timestamp": 86400})
    ]


def test_send_default_timestamp_is_now(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    fake = FakeSend(SendResult(200, {"stored": True, "key": "k"}, 1))
    monkeypatch.setattr("logpipe_cli.cli.send.send_event", fake)
    before = int(time.time())
    assert invoke("send", "-u", "1", "-e", "x").exit_code == 0
    after = int(time.time())
    ts = fake.calls[0][1]["timestamp"]
    assert isinstance(ts, int)
    assert before <= ts <= after


def test_send_refused(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSend(SendResult(400, {"detail": "user_id: must be ...", "field": "user_id"}, 1))
    monkeypatch.setattr("logpipe_cli.cli.send.send_event", fake)
    result = invoke("send", "-u", ".x", "-e", "login", "--url", "http://h:1")
    assert_clean_error(result, 1, "refused with 400", "user_id: must be")
