"""The README documents every command, and every command has help."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from logpipe_cli.cli.app import app

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    root = typer.main.get_command(app)
    names: list[str] = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            names.extend(f"{name} {s}" for s in sub)
        else:
            names.append(name)
    return sorted(names)


def test_there_are_commands() -> None:
    assert {"serve", "drain", "redis-check", "send", "config init", "inspect keys"} <= set(
        _commands()
    )


@pytest.mark.parametrize("command", _commands())
def test_command_is_in_readme(command: str) -> None:
    assert f"### `logpipe {command}" in README or f"`logpipe {command}" in README


@pytest.mark.parametrize("command", _commands())
def test_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_readme_has_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
