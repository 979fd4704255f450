"""Fixtures for the CLI tests: a clean working directory and environment, and a runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from logpipe_cli.cli.app import app

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
