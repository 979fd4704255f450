"""The session's fault report: where the fault tests write it, and its table at the end.

A plugin of the whole test session (``pytest_plugins`` in ``tests/conftest.py``), not of
``tests/faults/conftest.py``: under pytest-xdist the controller, which prints the summary,
collects nothing and so never loads the suite's own conftest. Every worker appends to the
one report of the session (each record is one ``write`` of one line, in append mode), and
says at its end whether it wrote to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.faults.report import latest, render, report_path

#: the reports this process wrote, or (in the xdist controller) its workers wrote
_written: list[Path] = []
#: the key of a worker's ``workeroutput`` naming the reports it wrote
WORKER_KEY = "fault_reports"


def session_dir(factory: pytest.TempPathFactory) -> Path:
    """The session's temp dir: an xdist worker's own (``popen-gwN``) is inside it."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's fault report: one JSON line per fault test (see ``report.record``)."""
    path = report_path(session_dir(tmp_path_factory))
    if path not in _written:
        _written.append(path)
    return path


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker: tell the controller which reports this worker wrote to."""
    output: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[WORKER_KEY] = [str(p) for p in _written]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the xdist controller: note the reports a worker wrote to (see above)."""
    for name in getattr(node, "workeroutput", {}).get(WORKER_KEY, []):
        if Path(name) not in _written:
            _written.append(Path(name))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the figures and say where they went: pytest prunes old session dirs, so the
    table in the log outlives the file (``LP_FAULT_REPORT`` keeps one for good)."""
    for path in _written:
        if path.is_file():
            terminalreporter.write_sep("-", "fault report")
            terminalreporter.write_line(render(latest(path)))
            terminalreporter.write_line(f"written to {path}")
