"""What the operator commands draw, printed into a pinned-width console."""

from __future__ import annotations

import io

import msgspec
from rich.console import Console

from logpipe_cli.buffer import KeyInfo
from logpipe_cli.cli import fmt, inspect_cmd, render, send, stats_cmd
from logpipe_cli.inspection import KeyTotals
from logpipe_cli.keys import parse_event_key
from logpipe_cli.loadgen import LoadSummary
from logpipe_cli.schemas import Buffered, StatsDoc, Totals

NOW = 1_700_000_000.0


def text(console: Console) -> str:
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def terminal() -> Console:
    return Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)


def test_progress_bar_draws_on_a_terminal() -> None:
    c = terminal()
    with render.progress_bar("draining", "keys", c=c) as progress:
        progress(128, 300)
        progress(300, 300)
    assert "draining" in text(c)
    assert "300/300" in text(c)


def test_progress_bar_knows_the_total_before_the_first_step() -> None:
    c = terminal()
    with render.progress_bar("sending", "events", total=5, c=c):
        pass
    assert "0/5" in text(c)


def test_progress_bar_is_silent_off_a_terminal_or_when_disabled(console: Console) -> None:
    with render.progress_bar("sending", "events", c=console) as progress:
        progress(1, 2)
    c = terminal()
    with render.progress_bar("sending", "events", enabled=False, c=c) as progress:
        progress(1, 2)
    assert text(console) == ""
    assert text(c) == ""


def test_stats_panel_with_a_failed_drain_and_refusals(console: Console) -> None:
    data = {
        "buffered": {"keys": 2, "claims": 1, "events": 1234, "oldest_day": 19723},
        "totals": {
            "accepted": 5000,
            "refused_full": 3,
            "drained_events": 3766,
            "drained_keys": 40,
            "drained_bytes": 2048,
            "quarantined": 1,
        },
        "last_drain": {
            "at": NOW - 65,
            "ok": False,
            "events": 0,
            "keys": 0,
            "seconds": 0.5,
            "error": "cannot write logs/user_1/19723.jsonl: No space left on device",
        },
        "api": {
            "accepted": 10,
            "refused": {"invalid": 2, "buffer_full": 0},
            "started_at": NOW - 7200,
        },
    }
    doc = msgspec.convert(data, StatsDoc)
    console.print(stats_cmd.stats_panel(doc, "http://h:1", {"accepted_per_s": 12.5}, now=NOW))
    out = " ".join(text(console).split())
    assert "1,234 events in 2 keys, 1 being drained; oldest day 2024-01-01" in out
    assert "5,000 events in all; 3 refused (buffer full)" in out
    assert "3,766 events, 40 keys, 2.0 KiB; 1 quarantined" in out
    assert "2023-11-14 22:12:15 UTC (1m 05s ago) failed" in out
    assert "No space left on device" in out
    assert "10 accepted, refused: invalid 2; up 2h 00m" in out
    assert "12.5 accepted/s" in out


def test_stats_panel_without_key_counts(console: Console) -> None:
    # what GET /stats answers since it stopped scanning: events counted, keys not
    doc = StatsDoc(buffered=Buffered(events=1), totals=Totals(), last_drain=None)
    console.print(stats_cmd.stats_panel(doc, "http://h:1", error="cannot reach", now=NOW))
    out = " ".join(text(console).split())
    assert "cannot reach (showing the last answer)" in out
    assert "1 event (keys not counted: add --keys)" in out
    assert "last drain never" in out
    assert "this API" not in out


def test_load_summary(console: Console) -> None:
    summary = LoadSummary(sent=10, accepted=8, refused=1, failed=1, requests=10, seconds=2.0)
    summary.latencies_s = [0.001 * i for i in range(1, 101)]
    send.load_summary(summary, "http://h:1/log", console)
    out = text(console)
    for row in ("events sent", "accepted", "refused", "failed (no answer)", "latency p99"):
        assert row in out
    assert "50.00 ms" in out  # p50 of 1..100 ms
    assert "99.00 ms" in out
    rate = next(line for line in out.splitlines() if "events/s" in line)
    assert rate.split("│")[2].strip() == "4"


def test_human_duration() -> None:
    assert [fmt.duration(s) for s in (5, 65, 7260, 90000)] == [
        "5s",
        "1m 05s",
        "2h 01m",
        "1d 1h",
    ]


def test_keys_table_at_80_columns_keeps_numbers_whole() -> None:
    # a non-terminal log is 80 columns: long keys fold inside their cell, numbers never
    c = Console(file=io.StringIO(), width=80, color_system=None)
    key = "logs:user_" + "x" * 90 + ":19723"
    info = KeyInfo(
        key=key,
        kind="events",
        event_key=parse_event_key(key.encode()),
        events=1_234_567,
        bytes=9_876_543_210,
        ttl_s=-1,
    )
    inspect_cmd.keys_table([info], KeyTotals(keys=1, events=1_234_567, bytes=9_876_543_210), c)
    out = c.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "1,234,567" in out
    assert "9.2 GiB" in out
    assert ":19723" in out  # folded, not cut: the key's end is still there
    assert "total: 1 key " in out


def test_stats_panel_rows_never_wrap_at_80_columns() -> None:
    narrow = Console(file=io.StringIO(), width=80, color_system=None)
    data = {
        "buffered": {"events": 1234},
        "totals": {"accepted": 5000, "drained_events": 3766, "drained_bytes": 2048},
        "last_drain": {
            "at": NOW - 65,
            "ok": True,
            "events": 123456,
            "keys": 7890,
            "seconds": 0.021,
            "error": None,
        },
    }
    narrow.print(stats_cmd.stats_panel(msgspec.convert(data, StatsDoc), "http://h:1", now=NOW))
    lines = narrow.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all(len(line) <= 80 for line in lines)
    drain_rows = [line for line in lines if "last drain" in line]
    assert len(drain_rows) == 1  # the row, one line: cut short (…) if need be, not wrapped
    assert not any(line.strip("│ ").startswith(("s ", "/ s", "keys")) for line in lines)
    assert all("…" not in line.split("  ")[0] for line in lines)  # labels whole
