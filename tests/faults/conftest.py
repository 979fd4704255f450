"""Fixtures for the fault-injection suite: logpipe as real processes, a real redis-server,
and the session's fault report (written in the session's temp dir, its path printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.report import latest, render, report_path
from tests.processes import launcher  # noqa: F401 - fixture
from tests.redis_sentinel import sentinel_setup  # noqa: F401 - fixture

_written: list[Path] = []


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's fault report: one JSON line per fault test (see ``report.record``)."""
    path = report_path(tmp_path_factory.getbasetemp())
    _written.append(path)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the figures and say where they went: pytest prunes old session dirs, so the
    table in the log outlives the file (``LP_FAULT_REPORT`` keeps one for good)."""
    for path in _written:
        if path.is_file():
            terminalreporter.write_sep("-", "fault report")
            terminalreporter.write_line(render(latest(path)))
            terminalreporter.write_line(f"written to {path}")
