"""``logpipe config``: write a sample configuration, show the effective one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import JsonOption, settings_from
from logpipe_cli.cli.help import FullHelpGroup

app = typer.Typer(
    cls=FullHelpGroup,
    help="Write or show the configuration.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path("config.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented sample config (every key at its default)."""
    from logpipe_cli.config_file import write_sample  # tomlkit: only once a command runs

    write_sample(path, force=force)
    render.print_line(f"wrote {path}")


@app.command("show")
def show(ctx: typer.Context, as_json: Annotated[bool, JsonOption] = False) -> None:
    """Show the effective configuration and where each value came from."""
    settings = settings_from(ctx)
    data = settings.as_dict()
    if as_json:
        render.print_json(
            {
                "file": str(settings.path) if settings.path else None,
                "settings": data,
                "sources": dict(settings.sources),
            }
        )
        return
    config_table(data, dict(settings.sources), settings.path)


def config_table(
    data: dict[str, dict[str, Any]],
    sources: dict[str, str],
    path: Path | None,
    c: Console | None = None,
) -> None:
    """Every setting with its value written as in the config file, and its source."""
    c = c or render.console()
    table = Table(title=fmt.inert(f"configuration (file: {path or 'none'})"))
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", no_wrap=True)
    for section, values in data.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            table.add_row(name, fmt.inert(fmt.toml_value(value)), sources.get(name, "default"))
    c.print(table)
