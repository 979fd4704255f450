"""Text from outside (event fields, key names) prints as inert text (issue 9, #9).

An ESC from a client can erase lines, move the cursor or write to the clipboard (OSC 52)
of whoever runs ``logpipe inspect``; rich markup such as ``[red]`` must not style it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import redis
from rich.console import Console
from typer.testing import Result

from logpipe_cli.cli import stats_cmd
from logpipe_cli.schemas import ApiCounts, Buffered, LastDrain, StatsDoc, Totals
from logpipe_cli.settings import Settings
from tests.cli.ops_support import RunCli

ESC = "\x1b"
OSC52 = "\x1b]52;c;aGFja2Vk\x07"
HOSTILE = f"{OSC52}\x1b[2K[red]boom[/red]\r"
DAY = 19723


def assert_inert(result: Result) -> None:
    for stream in (result.stdout, result.stderr):
        assert ESC not in stream
        assert "\x07" not in stream
        assert "\r" not in stream


def test_inspect_file_shows_escapes_as_text(logpipe: RunCli, tmp_path: Path) -> None:
    target = tmp_path / "19723.jsonl"
    event = {"user_id": "u", "event": HOSTILE, "timestamp": DAY * 86400, "note": HOSTILE}
    target.write_bytes(json.dumps(event).encode() + b"\n" + f"not json {HOSTILE}".encode() + b"\n")
    result = logpipe("inspect", "file", str(target), COLUMNS="400")  # wide: no folding
    assert result.exit_code == 0, result.stderr
    assert_inert(result)
    assert "[red]boom[/red]" in result.stdout
    assert "\\x1b" in result.stdout


def test_inspect_keys_and_drain_warnings_show_escapes_as_text(
    logpipe: RunCli, settings: Settings
) -> None:
    hostile_key = f"logs:user_{HOSTILE}:{DAY}"
    client = redis.Redis.from_url(settings.redis.url)
    try:
        client.rpush(hostile_key, b'{"user_id":"x","event":"e","timestamp":0}')
    finally:
        client.close()
    keys = logpipe("inspect", "keys", "--pattern", "logs:*")
    assert keys.exit_code == 0, keys.stderr
    assert_inert(keys)
    assert "[red]boom" in "".join(keys.stdout.split())
    drained = logpipe("drain", "--once", "--logs-dir", settings.drainer.logs_dir)
    assert_inert(drained)
    assert "unsafe key" in drained.stderr
    assert "\\x1b]52;c;aGFja2Vk\\x07" in drained.stderr


def test_stats_panel_shows_escapes_as_text() -> None:
    doc = StatsDoc(
        buffered=Buffered(events=1),
        totals=Totals(),
        last_drain=LastDrain(at=1.0, ok=False, events=0, keys=0, seconds=0.1, error=HOSTILE),
        api=ApiCounts(accepted=1, refused={HOSTILE: 2}, started_at=0.0),
    )
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(stats_cmd.stats_panel(doc, f"http://h:1/{HOSTILE}", error=HOSTILE, now=2.0))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert ESC not in out
    assert "\x07" not in out
    assert "[red]boom[/red]" in out
