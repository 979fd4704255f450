"""``logpipe inspect``: look at what Redis buffers and what the files hold."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import JsonOption, settings_from, with_buffer
from logpipe_cli.cli.help import FullHelpGroup
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import not_a_file

# the library is imported in each command: it brings redis (the buffer) with it
if TYPE_CHECKING:
    from logpipe_cli.buffer import KeyInfo
    from logpipe_cli.inspection import FileSummary, FileView, KeyTotals
    from logpipe_cli.settings import Settings
    from logpipe_cli.sink import LineRecord

app = typer.Typer(
    cls=FullHelpGroup,
    help="Look at buffered keys and log files.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

LimitOption = typer.Option(min=0, help="Show at most this many rows.")


@app.command("keys")
def keys(
    ctx: typer.Context,
    pattern: Annotated[
        str | None, typer.Option(help="SCAN pattern [default: from drainer.log_pattern].")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None,
    limit: Annotated[int | None, LimitOption] = None,
    sort: Annotated[
        str, typer.Option(help="key, events (most first) or age (oldest day first).")
    ] = "key",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Buffered keys: event lists, claims in progress and quarantined values, with totals."""
    from logpipe_cli import inspection

    if sort not in inspection.KEY_SORTS:
        raise ConfigError(f"--sort must be one of {', '.join(inspection.KEY_SORTS)}, got {sort!r}")
    settings = settings_from(ctx, **{"drainer.log_pattern": pattern})
    infos = with_buffer(settings, lambda buf: buf.list_keys(settings.drainer.log_pattern))
    chosen = inspection.select_keys(infos, user=user, sort=sort)
    shown = chosen if limit is None else chosen[:limit]
    if as_json:
        render.print_json([inspection.key_as_dict(k) for k in shown])
        return
    keys_table(shown, inspection.key_totals(chosen))


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
        str | None, typer.Option(help="Where --user/--day look [default: from drainer.logs_dir].")
    ] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The events in one log file; lines that are not JSON are shown and counted."""
    from logpipe_cli import inspection

    if limit is not None and tail is not None:
        raise ConfigError("give --limit or --tail, not both")
    flt = inspection.LineFilter(event, _time(since, "--since"), _time(until, "--until"))
    target, fd = _target_file(ctx, path, user, day, logs_dir)
    view = inspection.view_file(target, flt, limit=limit, tail=tail, fd=fd)
    if as_json:
        render.print_json([inspection.record_as_dict(r) for r in view.records])
    else:
        file_table(view)
    if view.bad_lines:
        render.print_warning(
            f"{fmt.count(view.bad_lines, 'line')} of {target} "
            f"{'is not a JSON object' if view.bad_lines == 1 else 'are not JSON objects'}"
        )


def _target_file(
    ctx: typer.Context, path: Path | None, user: str | None, day: str | None, logs_dir: str | None
) -> tuple[Path, int | None]:
    """PATH, or the file of --user on --day under logs_dir, opened as the drainer opens
    it (no link followed: a link or a special file there is refused, exit 1), with its
    descriptor (``None`` for a PATH, the operator's own choice); exit 2 if it is not there."""
    from logpipe_cli import inspection

    if path is not None:
        if user is not None or day is not None:
            raise ConfigError("give a PATH or --user and --day, not both")
        problem = not_a_file(path)
        if problem is not None:
            raise ConfigError(problem)
        return path, None
    if user is None or day is None:
        raise ConfigError("give a PATH, or --user and --day to find the file under logs_dir")
    settings: Settings = settings_from(ctx, **{"drainer.logs_dir": logs_dir})
    try:
        target, fd = inspection.open_user_file(Path(settings.drainer.logs_dir), user, day)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if fd is None:
        raise ConfigError(f"no file for user {user!r} on day {day}: {target} does not exist")
    return target, fd


def _time(text: str | None, flag: str) -> float | None:
    from logpipe_cli import inspection

    if text is None:
        return None
    try:
        return inspection.parse_time(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


@app.command("files")
def files(
    ctx: typer.Context,
    logs_dir: Annotated[
        str | None, typer.Option(help="Where the files are [default: from drainer.logs_dir].")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's files.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The user_<id>/<day>.jsonl files under logs_dir, with their events and size."""
    from logpipe_cli import inspection

    settings = settings_from(ctx, **{"drainer.logs_dir": logs_dir})
    where = Path(settings.drainer.logs_dir)
    if logs_dir is not None and not where.is_dir():
        # named on the command line: a typo must not read as "no files"
        raise ConfigError(f"--logs-dir {where}: no such directory")
    found = inspection.summarize_files(where, user)
    if as_json:
        render.print_json([f.as_dict() for f in found.files])
    else:
        files_table(found.files)
    # as the drainer reports an unsafe key: named, skipped, the rest still shown
    for refused in found.refused:
        render.print_warning(refused.describe())


# ---- tables --------------------------------------------------------------------------
# Keys, user ids, events and paths come from outside: every one goes through fmt.inert.


def keys_table(shown: Sequence[KeyInfo], totals: KeyTotals, c: Console | None = None) -> None:
    """The keys in ``shown``; the totals row counts every key that matched."""
    from logpipe_cli.inspection import day_text

    c = c or render.console()
    caption = None
    if len(shown) < totals.keys:
        caption = (
            f"showing {fmt.number(len(shown))} of {fmt.count(totals.keys, 'key')}; "
            "the totals count them all"
        )
    table = Table(title="buffered keys", caption=caption)
    table.add_column("key", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("user", overflow="fold")
    table.add_column("day (UTC)", no_wrap=True)
    for col in ("events", "memory", "ttl"):
        table.add_column(col, justify="right", no_wrap=True)
    for k in shown:
        table.add_row(
            fmt.inert(k.key),
            k.kind,
            fmt.inert(k.event_key.user_id) if k.event_key else Text("?", style="red"),
            day_text(k.event_key.day) if k.event_key else "?",
            fmt.number(k.events),
            fmt.size(k.bytes),
            "-" if k.ttl_s < 0 else fmt.duration(k.ttl_s),
        )
    table.add_section()
    table.add_row(
        f"total: {fmt.count(totals.keys, 'key')}",
        "",
        "",
        "",
        fmt.number(totals.events),
        fmt.size(totals.bytes),
        "",
    )
    c.print(table)


def _event_row(r: LineRecord) -> tuple[RenderableType, ...]:
    if r.event is None:
        return (
            fmt.number(r.lineno),
            Text("not a JSON object", style="red"),
            "",
            "",
            fmt.inert(r.raw[:60].decode("utf-8", "replace")),
        )
    e = r.event
    others = {k: v for k, v in e.items() if k not in ("user_id", "event", "timestamp")}
    return (
        fmt.number(r.lineno),
        fmt.event_time(e.get("timestamp")).removesuffix(" UTC"),
        fmt.inert(e.get("user_id", "")),
        fmt.inert(e.get("event", "")),
        # ensure_ascii=False keeps non-Latin text readable; fmt.inert escapes controls
        fmt.inert(json.dumps(others, ensure_ascii=False) if others else ""),
    )


def file_table(view: FileView, c: Console | None = None) -> None:
    """The lines of ``view``, with what the whole file holds as the caption."""
    c = c or render.console()
    caption = (
        f"{fmt.number(len(view.records))} shown of {fmt.number(view.matched)} matching; "
        f"{fmt.count(view.lines, 'line')} in the file, {fmt.number(view.bad_lines)} "
        "not JSON objects"
    )
    table = Table(title=fmt.inert(view.path), caption=caption)
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("user", overflow="fold")
    table.add_column("event", overflow="fold")
    table.add_column("other fields", overflow="fold")
    for r in view.records:
        table.add_row(*_event_row(r))
    c.print(table)


def files_table(found: Sequence[FileSummary], c: Console | None = None) -> None:
    from logpipe_cli.inspection import day_text

    c = c or render.console()
    table = Table(title="log files")
    table.add_column("path", overflow="fold")
    table.add_column("user", overflow="fold")
    table.add_column("day (UTC)", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("modified (UTC)", no_wrap=True)
    for f in found:
        table.add_row(
            fmt.inert(f.info.path),
            fmt.inert(f.info.user_id),
            day_text(f.info.day),
            fmt.number(f.events),
            fmt.size(f.info.size),
            fmt.moment(f.info.mtime).removesuffix(" UTC"),
        )
    table.add_section()
    table.add_row(
        f"total: {fmt.count(len(found), 'file')}",
        "",
        "",
        fmt.number(sum(f.events for f in found)),
        fmt.size(sum(f.info.size for f in found)),
        "",
    )
    c.print(table)
