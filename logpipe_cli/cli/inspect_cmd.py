"""``logpipe inspect``: look at what Redis buffers and what the files hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from logpipe_cli import inspection
from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from, with_buffer
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import Settings

app = typer.Typer(
    help="Look at buffered keys and log files.", no_args_is_help=True, rich_markup_mode=None
)

LimitOption = typer.Option(min=0, help="Show at most this many rows.")


@app.command("keys")
def keys(
    ctx: typer.Context,
    pattern: Annotated[str | None, typer.Option(help="SCAN pattern [drainer.log_pattern].")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None,
    limit: Annotated[int | None, LimitOption] = None,
    sort: Annotated[
        str, typer.Option(help="key, events (most first) or age (oldest day first).")
    ] = "key",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Buffered keys: event lists, claims in progress and quarantined values, with totals."""
    if sort not in inspection.KEY_SORTS:
        raise ConfigError(f"--sort must be one of {', '.join(inspection.KEY_SORTS)}, got {sort!r}")
    settings = settings_from(ctx, **{"drainer.log_pattern": pattern})
    infos = with_buffer(settings, lambda buf: buf.list_keys(settings.drainer.log_pattern))
    chosen = inspection.select_keys(infos, user=user, sort=sort)
    shown = chosen if limit is None else chosen[:limit]
    if as_json:
        render.print_json([inspection.key_as_dict(k) for k in shown])
        return
    render.keys_table(shown, inspection.key_totals(chosen))


@app.command("file")
def file(
    ctx: typer.Context,
    path: Annotated[
        Path | None, typer.Argument(help="A .jsonl file (or give --user and --day).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="The file of this user (with --day).")] = None,
    day: Annotated[
        str | None, typer.Option(help="Day number or ISO date, UTC (with --user).")
    ] = None,
    event: Annotated[str | None, typer.Option(help="Only events with this name.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time on: Unix seconds or ISO date/time, UTC.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this time: Unix seconds or ISO date/time, UTC.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="The first N matching lines.")] = None,
    tail: Annotated[int | None, typer.Option(min=0, help="The last N matching lines.")] = None,
    logs_dir: Annotated[
        str | None, typer.Option(help="Where --user/--day look [drainer.logs_dir].")
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The events in one log file; lines that are not JSON are shown and counted."""
    if limit is not None and tail is not None:
        raise ConfigError("give --limit or --tail, not both")
    target = _target_file(ctx, path, user, day, logs_dir)
    flt = inspection.LineFilter(event, _time(since, "--since"), _time(until, "--until"))
    view = inspection.view_file(target, flt, limit=limit, tail=tail)
    if as_json:
        render.print_json([inspection.record_as_dict(r) for r in view.records])
    else:
        render.file_table(view)
    if view.bad_lines:
        render.print_warning(f"{view.bad_lines} line(s) of {target} are not JSON objects")


def _target_file(
    ctx: typer.Context, path: Path | None, user: str | None, day: str | None, logs_dir: str | None
) -> Path:
    """PATH, or the file of --user on --day under logs_dir; exit 2 if it is not there."""
    if path is not None:
        if user is not None or day is not None:
            raise ConfigError("give a PATH or --user and --day, not both")
        if not path.is_file():
            raise ConfigError(f"no such file: {path}")
        return path
    if user is None or day is None:
        raise ConfigError("give a PATH, or --user and --day to find the file under logs_dir")
    settings: Settings = settings_from(ctx, **{"drainer.logs_dir": logs_dir})
    try:
        target = inspection.resolve_file(Path(settings.drainer.logs_dir), user, day)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not target.is_file():
        raise ConfigError(f"no file for user {user!r} on day {day}: {target} does not exist")
    return target


def _time(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return inspection.parse_time(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


@app.command("files")
def files(
    ctx: typer.Context,
    logs_dir: Annotated[str | None, typer.Option(help="[drainer.logs_dir]")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's files.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The user_<id>/<day>.jsonl files under logs_dir, with their events and size."""
    settings = settings_from(ctx, **{"drainer.logs_dir": logs_dir})
    found = inspection.summarize_files(Path(settings.drainer.logs_dir), user)
    if as_json:
        render.print_json([f.as_dict() for f in found])
        return
    render.files_table(found)
