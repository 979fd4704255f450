"""Shared fixtures: settings factory, a pinned-width console, real Redis servers, and the
directory markers that ``make test-fast`` selects on."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from logpipe_cli.cli import render
from logpipe_cli.settings import Settings, load_settings

# the real redis-server fixtures; the Redis Cluster is made once for the whole session
pytest_plugins = ["tests.redis_server", "tests.redis_cluster", "tests.faults.session_report"]

MakeSettings = Callable[..., Settings]

#: every test under one of these directories gets the marker, so ``-m "not faults and not
#: e2e"`` (``make test-fast``) can never pick up a slow test whose module forgot its mark
DIRECTORY_MARKERS = {"e2e": "e2e", "faults": "faults"}
TESTS_DIR = Path(__file__).parent


#: under pytest-xdist (``make test``: ``-n auto --dist loadgroup``) the tests of one of these
#: directories run one after another on one worker, while the other workers take the rest:
#: each fault test drives a load generator, an API, drainers and Redis servers (a Sentinel
#: setup, a cluster) at once, and two of them side by side would starve each other
SERIAL_GROUPS = {"faults": "faults"}
#: session fixtures each worker makes its own of: cheap, or wanted by most tests
PER_WORKER_FIXTURES = {"redis_server", "anyio_backend", "fault_report"}


# first: pytest-xdist reads the xdist_group marks in its own hook
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the suite directory it lives in (see ``DIRECTORY_MARKERS`` and
    ``SERIAL_GROUPS``), and group the tests sharing a costly fixture (see
    ``shared_fixture_group``)."""
    for item in items:
        path = Path(item.path)
        if not path.is_relative_to(TESTS_DIR):
            continue
        top = path.relative_to(TESTS_DIR).parts[0]
        if top in DIRECTORY_MARKERS:
            item.add_marker(DIRECTORY_MARKERS[top])
        group = SERIAL_GROUPS.get(top) or shared_fixture_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the longest serial group first (make test passes --no-loadscope-reorder, which
        # keeps this order), so its worker is not still on it long after the others end
        items.sort(key=lambda item: not in_serial_group(item))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """In the xdist controller: fail the run when ``--dist loadgroup`` did not group.

    pytest-xdist passes a test's group to its scheduler as a suffix of the test's id
    (``...::test_x@faults``); when a pytest release makes that suffix not take, nothing
    fails and every test is scheduled alone: the fault tests then ran side by side (two
    kill-9 schedules starving each other) and each worker made its own Redis Cluster.
    pytest 9.2 does this with pytest-xdist 3.8 (pytest-xdist issue 1386): hence the
    ``pytest<9.2`` in pyproject.toml, and this check for the next time."""
    if node.config.getoption("dist") != "loadgroup":
        return
    ungrouped = [
        id_
        for id_ in ids
        for top, group in SERIAL_GROUPS.items()
        if id_.startswith(f"tests/{top}/") and not id_.endswith(f"@{group}")
    ]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(ungrouped)} tests (first: {ungrouped[0]}): "
            "the xdist_group marks of tests/conftest.py did not take (pytest-xdist issue "
            "1386?), so the fault tests would run side by side; run with pytest < 9.2"
        )


def in_serial_group(item: pytest.Item) -> bool:
    path = Path(item.path)
    return path.is_relative_to(TESTS_DIR) and path.relative_to(TESTS_DIR).parts[0] in SERIAL_GROUPS


def shared_fixture_group(item: pytest.Item) -> str | None:
    """The xdist group of a test using one of our costly module or session fixtures: the
    tests sharing one run on one worker, which then makes it once (without the group each
    worker made its own: a Redis Cluster, an API process, a TLS Redis, the API's schema).

    A session fixture names its group (``redis_cluster``), a module one its module."""
    if not isinstance(item, pytest.Function):
        return None
    module_scoped = False
    for name in sorted(item.fixturenames):
        defs = item._fixtureinfo.name2fixturedefs.get(name)
        if not defs or name in PER_WORKER_FIXTURES:
            continue
        fixture = defs[-1]
        if not getattr(fixture.func, "__module__", "").startswith("tests."):
            continue
        if fixture.scope == "session":
            return name
        module_scoped = module_scoped or fixture.scope == "module"
    return item.nodeid.split("::")[0] if module_scoped else None


def pytest_report_header() -> str:
    """Name the random seed up front, so any run can be replayed (``make test`` fixes it)."""
    seed = os.environ.get("LP_TEST_SEED")
    if seed:
        return f"LP_TEST_SEED={seed}"
    return "LP_TEST_SEED unset: each test that draws one prints its own"


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings with logs under tmp_path; pass ``{"section": {"key": value}}`` overrides."""

    def make(redis_url: str = "redis://127.0.0.1:1", **sections: dict[str, Any]) -> Settings:
        data: dict[str, dict[str, Any]] = {
            # short, so a test of a Redis outage gets its 503 quickly (and still retries)
            "redis": {"url": redis_url, "write_retry_seconds": 0.2},
            "drainer": {"logs_dir": str(tmp_path / "logs"), "lease_seconds": 1.0},
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return load_settings(data, {})

    return make


@pytest.fixture(autouse=True)
def fresh_cli_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's CLI runs make their own console, as each ``logpipe`` process does.

    The CLI caches its console, and rich reads ``COLUMNS`` once, when one is made: without
    this a test's ``COLUMNS`` was ignored whenever an earlier test in the same process had
    made the console, so a table folded or not depending on which tests ran before it
    (under ``-n``, on the worker's share of them)."""
    monkeypatch.setattr(render, "_console", None)


@pytest.fixture
def console() -> Console:
    """A console that renders plain text at a fixed width, for asserting on tables."""
    return Console(file=io.StringIO(), width=100, color_system=None)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, as logpipe does."""
    return "asyncio"
