"""Rendered tables, printed into a pinned-width console (the `console` fixture)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from logpipe_cli.cli import redis_check, render
from logpipe_cli.drainer import DrainReport
from logpipe_cli.health import HealthReport


def text(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def test_drain_report_table(console: Console, capsys: pytest.CaptureFixture[str]) -> None:
    report = DrainReport(keys=3, events=1200, files=3, bytes=5 * 1024 * 1024, seconds=2.0)
    render.drain_report(report, console)
    out = text(console)
    assert "drain" in out
    row = next(x for x in out.splitlines() if "1,200" in x)
    assert "5.0 MiB" in row
    assert "2.000" in row
    assert "600" in row  # events per second
    assert "syncfs" not in out  # no round was made durable so
    assert capsys.readouterr().err == ""


def test_drain_report_says_rounds_made_durable_by_syncfs(console: Console) -> None:
    render.drain_report(DrainReport(keys=40, events=40, files=40, synced_rounds=2), console)
    assert "made durable by one syncfs per round: 2 rounds" in text(console)


def test_drain_report_warns_about_what_it_left(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    report = DrainReport(
        unsafe=["logs:user_../x:1"],
        wrong_type=["logs:user_s:1"],
        busy=["logs:user_b:1"],
        quarantined=2,
    )
    render.drain_report(report, console)
    err = capsys.readouterr().err
    assert "warning: left in Redis (unsafe key): logs:user_../x:1" in err
    assert "warning: left in Redis (not a list): logs:user_s:1" in err
    assert "warning: held by another drainer: logs:user_b:1" in err
    assert "warning: quarantined values: 2" in err


def health(**changes: Any) -> HealthReport:
    values: dict[str, Any] = {
        "url": "redis://:***@h:1",
        "version": "7.2.4",
        "rtt_ms": 0.25,
        "used_memory": 2048,
        "maxmemory": 0,
        "maxmemory_policy": "noeviction",
        "aof_enabled": True,
        "rdb_saves": False,
        "buffered_events": 12,
        "buffered_keys": 3,
    }
    values.update(changes)
    return HealthReport(**values)


def test_health_table(console: Console, capsys: pytest.CaptureFixture[str]) -> None:
    redis_check.health_table(health(warnings=["persistence is off"]), console)
    out = text(console)
    assert "redis redis://:***@h:1" in out
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.splitlines()
        if line.count("│") == 3
    }
    assert rows["version"] == "7.2.4"
    assert rows["round trip"] == "0.250 ms"
    assert rows["maxmemory"] == "no limit"
    assert rows["persistence"] == "AOF"
    assert rows["buffered events"] == "12"
    assert capsys.readouterr().err == "warning: persistence is off\n"
