"""Commands that read files or talk HTTP: inspect file(s), send."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from logpipe_cli.client import Client
from logpipe_cli.clientcore import EVENT_ID_RE
from tests.cli.conftest import Invoke, assert_clean_error
from tests.client.conftest import FakeClock, FakeServer
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


def test_inspect_files_empty_dir(invoke: Invoke, workdir: Path) -> None:
    (workdir / "empty").mkdir()
    result = invoke("inspect", "files", "--json", "--logs-dir", "empty")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_inspect_files_in_a_named_dir_that_is_not_there(invoke: Invoke) -> None:
    # a typo in --logs-dir must not read as "no files"
    result = invoke("inspect", "files", "--logs-dir", "nothing-here")
    assert_clean_error(result, 2, "--logs-dir nothing-here: no such directory")
    assert result.stdout == ""


def test_inspect_files_before_any_drain_is_empty(invoke: Invoke) -> None:
    # the configured logs_dir, not made yet on a fresh install: no files, no error
    result = invoke("inspect", "files", "--json", env={"LOGPIPE_DRAINER_LOGS_DIR": "not-yet"})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


# ---- send -----------------------------------------------------------------------------
# Against the client library's scripted fake server (tests/client/conftest.py), with a
# fake clock: what `send` posts, how it retries and how it says it could not store.


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeServer, FakeClock]:
    """`send`'s client talks to a scripted server (set its ``script``) and sleeps on a
    fake clock."""
    server, clock = FakeServer(), FakeClock()
    client = partial(Client, transport=server.transport(), sleep=clock.sleep, clock=clock)
    # `send` imports its client when it runs (not at startup): patch it where it lives
    monkeypatch.setattr("logpipe_cli.client.Client", client)
    return server, clock


def test_send_to_an_unreachable_server(invoke: Invoke) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("send", "--user", "123", "--event", "login", "--url", url)
    assert_clean_error(result, 1, "cannot reach", f"{url}/log")
    assert result.stdout == ""


def test_send_stored(invoke: Invoke, fake: tuple[FakeServer, FakeClock]) -> None:
    server, _ = fake
    args = ("send", "-u", "123", "-e", "login", "--timestamp", "86400")
    result = invoke(*args, env={"LOGPIPE_SERVER_PORT": "4321"})
    assert result.exit_code == 0, result.stderr
    (seen,) = server.seen
    assert (seen.headers["host"], seen.path) == ("127.0.0.1:4321", "/log")
    (sent,) = seen.events()
    event_id = sent.pop("event_id")
    assert EVENT_ID_RE.fullmatch(event_id)
    assert sent == {"user_id": "123", "event": "login", "timestamp": 86400}
    assert result.stdout == f"stored (200): key logs:user_x:1, event_id {event_id}\n"


def test_send_default_timestamp_is_now(invoke: Invoke, fake: tuple[FakeServer, FakeClock]) -> None:
    before = int(time.time())
    assert invoke("send", "-u", "1", "-e", "x").exit_code == 0
    after = int(time.time())
    ts = fake[0].seen[0].events()[0]["timestamp"]
    assert isinstance(ts, int)
    assert before <= ts <= after


def test_send_event_id_and_json(invoke: Invoke, fake: tuple[FakeServer, FakeClock]) -> None:
    result = invoke("send", "-u", "1", "-e", "x", "--event-id", "order-17", "--json")
    assert result.exit_code == 0, result.stderr
    assert fake[0].seen[0].events()[0]["event_id"] == "order-17"
    assert json.loads(result.stdout) == {
        "status": 200,
        "stored": True,
        "key": "logs:user_x:1",
        "duplicate": False,
        "event_id": "order-17",
        "attempts": 1,
    }


def test_send_retries_with_backoff_and_retry_after_resending_the_same_event(
    invoke: Invoke, fake: tuple[FakeServer, FakeClock]
) -> None:
    server, clock = fake
    server.script = [(503, {"Retry-After": "2"}), httpx.ReadTimeout, 429, 200]
    result = invoke("send", "-u", "1", "-e", "x", "--retries", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["attempts"] == 4
    assert len({s.body for s in server.seen}) == 1  # one event_id, however many attempts
    # Retry-After, then the backoff: 0.2 s and 0.4 s less up to 20 % jitter
    assert clock.waits[0] == 2.0
    assert 0.16 <= clock.waits[1] <= 0.2
    assert 0.32 <= clock.waits[2] <= 0.4
    text = invoke("send", "-u", "1", "-e", "x", "--retries", "1")
    assert text.exit_code == 0


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (400, "refused with 400: user_id: must be 1-128 characters"),
        (401, "refused with 401: scripted 401"),
        (403, "refused with 403: scripted 403"),
        (413, "refused with 413: scripted 413"),
    ],
)
def test_send_refused_is_one_line_and_not_retried(
    invoke: Invoke, fake: tuple[FakeServer, FakeClock], status: int, says: str
) -> None:
    server, clock = fake
    server.script = [status]
    result = invoke("send", "-u", "1", "-e", "x", "--retries", "5")
    assert assert_clean_error(result, 1) == f"error: {says}"
    assert result.stdout == ""
    assert len(server.seen) == 1
    assert clock.waits == []


@pytest.mark.parametrize(
    ("retries", "says"),
    [
        ("0", "error: refused with 429: scripted 429"),
        ("2", "error: refused with 429: scripted 429 (gave up after 3 attempts)"),
    ],
)
def test_send_gives_up_after_its_retries(
    invoke: Invoke, fake: tuple[FakeServer, FakeClock], retries: str, says: str
) -> None:
    server, _ = fake
    server.script = [429] * 10
    result = invoke("send", "-u", "1", "-e", "x", "--retries", retries)
    assert assert_clean_error(result, 1) == says
    assert len(server.seen) == int(retries) + 1


def test_send_no_answer_after_retries(invoke: Invoke, fake: tuple[FakeServer, FakeClock]) -> None:
    server, _ = fake
    server.script = [httpx.ConnectError] * 10
    result = invoke("send", "-u", "1", "-e", "x", "--retries", "1", "--url", "http://h:1")
    says = "error: cannot reach http://h:1/log: scripted failure (gave up after 2 attempts)"
    assert assert_clean_error(result, 1) == says


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-u", "1", "-e", "x", "--event-id", "has space"], "event_id: must be 1-128"),
        (["--count", "2", "--event-id", "a"], "--event-id names one event"),
    ],
)
def test_send_event_id_usage_errors(
    invoke: Invoke, fake: tuple[FakeServer, FakeClock], args: list[str], says: str
) -> None:
    assert_clean_error(invoke("send", *args), 2, says)
    assert fake[0].seen == []
