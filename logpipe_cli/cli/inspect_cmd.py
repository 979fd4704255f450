"""``logpipe inspect``: look at what Redis buffers and what the files hold."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated

import typer

from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption, settings_from, with_buffer
from logpipe_cli.errors import ConfigError
from logpipe_cli.sink import list_files, read_lines

app = typer.Typer(help="Look at buffered keys and log files.", no_args_is_help=True)


@app.command("keys")
def keys(
    ctx: typer.Context,
    pattern: Annotated[str | None, typer.Option(help="SCAN pattern [drainer.log_pattern].")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Buffered keys: event lists, claims in progress and quarantined values."""
    settings = settings_from(ctx, **{"drainer.log_pattern": pattern})
    infos = with_buffer(settings, lambda buf: buf.list_keys(settings.drainer.log_pattern))
    if as_json:
        render.print_json(
            [
                {
                    "key": k.key,
                    "kind": k.kind,
                    "user": k.event_key.user_id if k.event_key else None,
                    "day": k.event_key.day if k.event_key else None,
                    "events": k.events,
                    "bytes": k.bytes,
                    "ttl_s": k.ttl_s,
                }
                for k in infos
            ]
        )
        return
    render.keys_table(infos)


@app.command("file")
def file(
    path: Annotated[Path, typer.Argument(help="A .jsonl file written by the drainer.")],
    limit: Annotated[int | None, typer.Option(help="Show at most this many lines.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The events in one log file; lines that are not JSON are shown and counted."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a file")
    records = read_lines(path)
    if limit is not None:
        records = itertools.islice(records, limit)
    if as_json:
        render.print_json(
            [
                {
                    "line": r.lineno,
                    "event": r.event,
                    "raw": None if r.event is not None else r.raw.decode("utf-8", "replace"),
                }
                for r in records
            ]
        )
        return
    render.file_table(str(path), records)


@app.command("files")
def files(
    ctx: typer.Context,
    logs_dir: Annotated[str | None, typer.Option(help="[drainer.logs_dir]")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The user_<id>/<day>.jsonl files under logs_dir."""
    settings = settings_from(ctx, **{"drainer.logs_dir": logs_dir})
    found = list_files(Path(settings.drainer.logs_dir))
    if as_json:
        render.print_json(
            [
                {
                    "path": str(f.path),
                    "user": f.user_id,
                    "day": f.day,
                    "bytes": f.size,
                    "mtime": f.mtime,
                }
                for f in found
            ]
        )
        return
    render.files_table(found)
