"""``logpipe stats``: the real API's ``GET /stats``, once and with ``--watch``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logpipe_cli.cli import stats_cmd
from tests.cli.ops_support import ApiServer, RunCli, one_error_line, post_events
from tests.redis_server import free_port

TS = 19723 * 86400


def events(n: int, user: str = "alice") -> list[dict[str, Any]]:
    return [{"user_id": user, "event": "tick", "timestamp": TS, "n": i} for i in range(n)]


def test_stats_json_is_the_api_answer(api: ApiServer, logpipe: RunCli) -> None:
    post_events(api.url, events(4) + events(2, "bob"))
    result = logpipe("stats", "--url", api.url, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # GET /stats reads counters only (no SCAN): key counts are left out, not guessed
    assert data["buffered"] == {"events": 6}
    assert data["totals"]["accepted"] == 6
    assert data["api"]["accepted"] == 6
    assert data["last_drain"] is None
    assert result.stderr == ""


def test_stats_keys_counts_keys_by_an_explicit_scan(api: ApiServer, logpipe: RunCli) -> None:
    post_events(api.url, events(4) + events(2, "bob"))
    result = logpipe("stats", "--url", api.url, "--keys", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["buffered"] == {"events": 6, "keys": 2, "claims": 0, "oldest_day": 19723}
    panel = " ".join(logpipe("stats", "--url", api.url, "--keys").stdout.split())
    assert "6 events in 2 keys, 0 being drained; oldest day 2024-01-01" in panel


def test_stats_panel(api: ApiServer, logpipe: RunCli) -> None:
    post_events(api.url, events(3))
    result = logpipe("stats", "--url", api.url)
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"logpipe stats {api.url}" in out
    assert "3 events (keys not counted: add --keys)" in out
    assert "last drain never" in out
    assert "3 accepted, refused: none" in out


def test_stats_shows_the_last_drain(api: ApiServer, logpipe: RunCli) -> None:
    post_events(api.url, events(5))
    drained = logpipe("drain", "--once", "--json")
    assert drained.exit_code == 0, drained.stderr
    data = json.loads(logpipe("stats", "--url", api.url, "--json").stdout)
    assert data["last_drain"]["ok"] is True
    assert data["last_drain"]["events"] == 5
    assert data["totals"]["drained_events"] == 5
    assert data["buffered"]["events"] == 0
    panel = " ".join(logpipe("stats", "--url", api.url).stdout.split())
    assert "ok 5 events, 1 key" in panel
    assert "5 events, 1 key, " in panel


def test_stats_default_url_comes_from_server_settings(api: ApiServer, logpipe: RunCli) -> None:
    post_events(api.url, events(1))
    result = logpipe("stats", "--json", LOGPIPE_SERVER_PORT=str(api.port))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["accepted"] == 1


def test_stats_unreachable_api_exits_1_with_one_line(logpipe: RunCli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = logpipe("stats", "--url", url, "--json")
    assert result.exit_code == 1
    assert one_error_line(result).startswith(f"error: cannot reach {url}/stats")
    assert result.stdout == ""


def test_stats_from_something_that_is_not_the_api_exits_1(api: ApiServer, logpipe: RunCli) -> None:
    result = logpipe("stats", "--url", api.url + "/nothing-here")
    assert result.exit_code == 1
    assert f"GET {api.url}/nothing-here/stats answered 404" in one_error_line(result)


def test_stats_interval_must_be_positive(logpipe: RunCli) -> None:
    result = logpipe("stats", "--watch", "--interval", "0")
    assert result.exit_code == 2


class Refreshes:
    """Stands in for ``stats_cmd.sleep``: runs one step per refresh, then Ctrl-C."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.intervals: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        if not self.steps:
            raise KeyboardInterrupt
        self.steps.pop(0)()


def test_watch_json_prints_a_document_per_refresh_until_ctrl_c(
    api: ApiServer, logpipe: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    post_events(api.url, events(1))
    refreshes = Refreshes(lambda: post_events(api.url, events(2)))
    monkeypatch.setattr(stats_cmd, "sleep", refreshes)
    result = logpipe("stats", "--url", api.url, "--watch", "--interval", "0.5", "--json")
    assert result.exit_code == 0, result.stderr  # Ctrl-C ends a watch: not an error
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["totals"]["accepted"] for d in docs] == [1, 3]
    assert refreshes.intervals == [0.5, 0.5]
    assert result.stderr == ""


def test_watch_panel_shows_rates_between_refreshes(
    api: ApiServer, logpipe: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_cmd, "sleep", Refreshes(lambda: post_events(api.url, events(7))))
    result = logpipe("stats", "--url", api.url, "--watch")
    assert result.exit_code == 0, result.stderr
    panels = result.stdout.split("logpipe stats")[1:]  # not a terminal: one panel per refresh
    assert len(panels) == 2
    assert "rates" not in panels[0]
    assert "accepted/s" in panels[1]
    assert "7 accepted" in " ".join(panels[1].split())


def test_watch_outlives_the_api_going_away(
    api: ApiServer, logpipe: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_cmd, "sleep", Refreshes(api.stop, lambda: None))
    result = logpipe("stats", "--url", api.url, "--watch", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1  # the one answer before the API stopped
    errors = result.stderr.splitlines()
    assert len(errors) == 2  # one line per failed refresh, no traceback
    assert all(e.startswith(f"error: cannot reach {api.url}/stats") for e in errors)


def test_watch_panel_marks_a_stale_answer(
    api: ApiServer, logpipe: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_cmd, "sleep", Refreshes(api.stop))
    result = logpipe("stats", "--url", api.url, "--watch")
    assert result.exit_code == 0, result.stderr
    panels = result.stdout.split("logpipe stats")[1:]
    assert len(panels) == 2
    assert "showing the last answer" in " ".join(panels[1].split())
    assert "cannot reach" in " ".join(panels[1].split())
