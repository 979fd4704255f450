"""The README documents every command, and every command has help."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from logpipe_cli.cli.app import app
from logpipe_cli.settings import SETTINGS

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


@pytest.mark.parametrize("group", [[], ["config"], ["inspect"]])
def test_group_help_shows_every_summary_in_full(group: list[str]) -> None:
    # click cuts summaries at the first sentence and the width with "..."
    result = CliRunner().invoke(app, [*group, "--help"])
    assert result.exit_code == 0, result.output
    commands = result.output.partition("Commands:")[2]
    assert commands
    assert "..." not in commands
    if not group:  # a summary's second sentence is kept too
        assert "buffered events. Exit 1 if down." in " ".join(commands.split())


# drain.py belongs to the drain-lifecycle change; its help still says "[drainer.x]"
NOT_YET = {"drain"}


@pytest.mark.parametrize("command", sorted(set(_commands()) - NOT_YET))
def test_help_uses_one_notation_for_defaults(command: str) -> None:
    out = " ".join(CliRunner().invoke(app, [*command.split(), "--help"]).output.split())
    assert "(default" not in out
    for setting in SETTINGS:
        assert f"[{setting}]" not in out, f"write [default: from {setting}]"


def test_readme_names_every_setting_and_env_var() -> None:
    for info in SETTINGS.values():
        assert info.key in README, info.name
