"""The help screens every command group shares."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class FullHelpGroup(TyperGroup):
    """Lists each command with its summary in full.

    click cuts a summary to the first sentence and to the terminal's width with "...",
    which hid half of most summaries in ``logpipe --help``.
    """

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                summary = cmd.short_help or (cmd.help or "").split("\n\n")[0]
                rows.append((name, " ".join(summary.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
