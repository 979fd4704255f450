"""The command as users start it: `python -m logpipe_cli`, help for every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from logpipe_cli import __version__
from tests.cli.conftest import Invoke

COMMANDS = ["serve", "drain", "send", "redis-check", "inspect", "config", "run"]


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGPIPE_")}
    return subprocess.run(
        [sys.executable, "-m", "logpipe_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_help(workdir: Path) -> None:
    result = run_module("--help", cwd=workdir)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    assert result.stderr == ""


def test_python_m_version(workdir: Path) -> None:
    result = run_module("--version", cwd=workdir)
    assert result.returncode == 0
    assert result.stdout.strip() == f"logpipe {__version__}"


def test_python_m_bad_config_is_one_line_and_exit_2(workdir: Path) -> None:
    (workdir / "config.toml").write_text("[server]\nport = 'x'\n", encoding="utf-8")
    result = run_module("drain", "--once", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("error: config.toml: server.port must be an integer")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["drain"],
        ["send"],
        ["redis-check"],
        ["run"],
        ["config"],
        ["config", "init"],
        ["config", "show"],
        ["inspect"],
        ["inspect", "keys"],
        ["inspect", "file"],
        ["inspect", "files"],
    ],
    ids=lambda a: " ".join(a) or "root",
)
def test_every_command_has_help(invoke: Invoke, args: list[str]) -> None:
    result = invoke(*args, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_unknown_option_is_a_usage_error(invoke: Invoke) -> None:
    result = invoke("drain", "--nope")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["drain", "--nope"], "No such option: --nope"),
        (["nope"], "No such command 'nope'"),
        (["token", "new", "--scope", "bogus"], "Invalid value for '--scope'"),
        (["send", "--count", "5", "--batch", "0"], "Invalid value for '--batch'"),
    ],
)
def test_usage_errors_are_one_line(invoke: Invoke, args: list[str], says: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert says in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Usage:" not in result.stderr


def test_no_command_shows_the_help(invoke: Invoke) -> None:
    result = invoke()
    assert "Usage:" in result.stdout + result.stderr
    assert "error:" not in result.stderr
