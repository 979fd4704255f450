"""The wire shapes: one type per document, and the drain report cannot drift from it."""

from __future__ import annotations

import msgspec

from logpipe_cli.drainer import DrainReport
from logpipe_cli.schemas import Buffered, DrainSummary, StatsDoc, Totals, drain_summary


def test_drain_summary_is_the_reports_wire_shape() -> None:
    report = DrainReport(keys=2, events=5, files=2, bytes=99, seconds=0.5, quarantined=1)
    report.busy.append("logs:user_b:1")
    report.errors.append("disk full")
    summary = drain_summary(report)
    assert isinstance(summary, DrainSummary)
    # the drainer's own dict (what `drain --json` prints today) is the same document
    assert msgspec.to_builtins(summary) == report.as_dict()
    assert summary.ok is False


def test_stats_doc_leaves_uncounted_keys_out() -> None:
    doc = StatsDoc(buffered=Buffered(events=3), totals=Totals(), last_drain=None)
    data = msgspec.json.decode(msgspec.json.encode(doc))
    assert data["buffered"] == {"events": 3}
    assert msgspec.json.decode(msgspec.json.encode(doc), type=StatsDoc) == doc
