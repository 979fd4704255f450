"""Fixtures for the CLI tests: a clean working directory and environment, and a runner."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from logpipe_cli.cli.app import app
from logpipe_cli.settings import Settings
from tests.cli.ops_support import ApiServer, RunCli, start_api
from tests.conftest import MakeSettings

Invoke = Callable[..., Result]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with no LOGPIPE_* variables, so nothing leaks in."""
    for name in list(os.environ):
        if name.startswith("LOGPIPE_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def invoke(workdir: Path) -> Invoke:
    """``invoke("drain", "--once", env={...})``: run ``logpipe`` in-process."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(app, list(args), env=env)
        # a crash inside a command is a bug, whatever the exit code says
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


def assert_clean_error(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, one ``error:`` line on stderr naming ``fragments``, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


# ---- the operator-CLI tests (test_ops_*) ----


@pytest.fixture
def settings(make_settings: MakeSettings, redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
def api(settings: Settings) -> Iterator[ApiServer]:
    """The real API on the test's Redis; stopped at the end (a test may stop it first)."""
    server = start_api(settings)
    yield server
    if server.thread.is_alive():
        server.stop()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Environment for a CLI run: the test's Redis and logs_dir, no config file."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # no ./config.toml can be picked up
    # an unknown LOGPIPE_* variable is refused, so one set for the test run itself (such
    # as a fault-suite seed) must not reach the CLI under test
    for name in list(os.environ):
        if name.startswith("LOGPIPE_"):
            monkeypatch.delenv(name)
    return {
        "LOGPIPE_CONFIG": None,
        "LOGPIPE_REDIS_URL": settings.redis.url,
        "LOGPIPE_DRAINER_LOGS_DIR": settings.drainer.logs_dir,
        "LOGPIPE_DRAINER_LEASE_SECONDS": "1",
    }


@pytest.fixture
def logpipe(cli_env: dict[str, Any]) -> RunCli:
    """``logpipe("inspect", "keys", "--json")``: the CLI in-process, stdout and stderr apart;
    keyword arguments are extra environment variables."""

    def run(*args: str, **env: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**cli_env, **env})

    return run
