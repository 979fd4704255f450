"""``logpipe query`` and ``logpipe tail``: one user's events, read from the day files and
Redis directly (no API needed), through :mod:`logpipe_cli.query`."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import settings_from
from logpipe_cli.errors import ConfigError
from logpipe_cli.query_limits import MAX_EXPORT_LIMIT, MAX_LIMIT

# the reader is imported in each command: it brings redis (the buffer) with it
if TYPE_CHECKING:
    from logpipe_cli.buffer import Buffer
    from logpipe_cli.query import EventReader, Found, Query
    from logpipe_cli.settings import Settings

T = TypeVar("T")


async def sleep(seconds: float) -> None:
    """How ``tail -f`` waits between polls (a seam for tests)."""
    import asyncio  # when a command runs, not at startup

    await asyncio.sleep(seconds)


UserOption = Annotated[str, typer.Option("--user", "-u", help="The user whose events to read.")]
EventOption = Annotated[
    list[str] | None,
    typer.Option("--event", "-e", help="Only events with this name; repeat for any of several."),
]


def _reader(settings: Settings, buffer: Buffer) -> EventReader:
    from logpipe_cli.query import EventReader

    return EventReader(
        buffer,
        settings.drainer.logs_dir,
        partition_by=settings.server.partition_by,
        max_future_s=settings.server.max_future_seconds,
        lock_timeout_s=2 * settings.drainer.lease_seconds,
    )


def _run(settings: Settings, fn: Callable[[EventReader], Awaitable[T]]) -> T:
    import asyncio

    from logpipe_cli.buffer import Buffer

    async def go() -> T:
        async with Buffer.connect(settings.redis) as buffer:
            return await fn(_reader(settings, buffer))

    return asyncio.run(go())


def _json_line(data: Any) -> str:
    # ensure_ascii escapes every control and bidi character: inert on a terminal
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _fields(event: dict[str, Any]) -> str:
    rest = {k: v for k, v in event.items() if k not in ("user_id", "event", "timestamp")}
    return json.dumps(rest, separators=(",", ":"), ensure_ascii=False) if rest else ""


def _table(found: list[Found], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("event")
    table.add_column("fields", overflow="fold")
    for f in found:
        table.add_row(
            fmt.event_time(f.event.get("timestamp")).removesuffix(" UTC"),
            fmt.inert(f.event.get("event", "")),
            fmt.inert(_fields(f.event)),
        )
    return table


def query(
    ctx: typer.Context,
    user: UserOption,
    event: EventOption = None,
    since: Annotated[
        str | None, typer.Option(help="From this time on (Unix seconds or ISO 8601, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this time (Unix seconds or ISO 8601, UTC).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="At most this many events [default: 100; --ndjson: up to 1,000,000]."),
    ] = None,
    order: Annotated[str, typer.Option(help="asc (oldest first) or desc (newest first).")] = "asc",
    cursor: Annotated[
        str | None, typer.Option(help="Resume after a previous page (its next_cursor).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document: events and next_cursor.")
    ] = False,
    as_ndjson: Annotated[
        bool,
        typer.Option("--ndjson", help='One event per line, then a {"next_cursor": ...} line.'),
    ] = False,
) -> None:
    """A user's events from the day files and Redis, in stored order, with readable times."""
    from logpipe_cli.query import Query

    if as_json and as_ndjson:
        raise typer.BadParameter("use --json or --ndjson, not both")
    if not as_ndjson and limit is not None and MAX_LIMIT < limit <= MAX_EXPORT_LIMIT:
        raise ConfigError(
            f"--limit {limit:,}: a page holds at most {MAX_LIMIT:,} events; "
            f"--ndjson streams up to {MAX_EXPORT_LIMIT:,}"
        )
    q = Query.parse(
        user,
        event,
        since,
        until,
        limit,
        cursor,
        order,
        max_limit=MAX_EXPORT_LIMIT if as_ndjson else MAX_LIMIT,
    )
    settings = settings_from(ctx)
    if as_ndjson:
        _run(settings, lambda r: _ndjson(r, q))
        return
    page = _run(settings, lambda r: r.page(q))
    if as_json:
        render.print_json(
            {"events": [f.event for f in page.events], "next_cursor": page.next_cursor}
        )
        return
    title = f"{fmt.count(len(page.events), 'event')} of user {fmt.visible(user)}"
    render.console().print(_table(page.events, title))
    if page.next_cursor:
        # one line however narrow the terminal: it is there to be copied
        render.print_line(f"more: --cursor {page.next_cursor}")


async def _ndjson(reader: EventReader, q: Query) -> None:
    from logpipe_cli.query import encode_cursor, position_after

    out = sys.stdout
    found: Found | None = None
    n = 0
    more = False
    async for f in reader.events(q):
        if n == q.limit:
            more = True
            break
        out.write(_json_line(f.event) + "\n")
        found, n = f, n + 1
    end = position_after(found, q.order) if found else q.cursor
    next_cursor = encode_cursor(q.user_id, q.order, end) if more and end else None
    out.write(_json_line({"next_cursor": next_cursor}) + "\n")
    out.flush()


def _print_events(found: list[Found], as_json: bool) -> None:
    console = render.console()
    for f in found:
        if as_json:
            sys.stdout.write(_json_line(f.event) + "\n")
            continue
        line = Text(fmt.event_time(f.event.get("timestamp")) + "  ")
        line.append_text(fmt.inert(f.event.get("event", ""), style="bold"))
        fields = _fields(f.event)
        if fields:
            line.append("  ")
            line.append_text(fmt.inert(fields))
        console.print(line, soft_wrap=True)  # one event, one line: tail | grep works
    sys.stdout.flush()


def tail(
    ctx: typer.Context,
    user: UserOption,
    event: EventOption = None,
    lines: Annotated[
        int,
        typer.Option("--lines", "-n", min=1, max=MAX_LIMIT, help="How many last events."),
    ] = 10,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Then print new events as they arrive, until Ctrl-C."),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between polls with -f.")
    ] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
) -> None:
    """The last events of a user; with -f, new ones too (read from Redis before they are
    drained), until Ctrl-C."""
    from logpipe_cli.query import Position, Query, position_after

    q = Query.parse(user, event, limit=lines, order="desc")
    settings = settings_from(ctx)

    async def go(reader: EventReader) -> None:
        page = await reader.page(q)
        newest_first = page.events
        _print_events(newest_first[::-1], as_json)
        if not follow:
            return
        if newest_first:
            pos = position_after(newest_first[0], "asc")
        else:
            # nothing matched anywhere in the range: follow from its first day
            pos = Position(reader.day_range(q)[0], 0)
        forward = replace(q, order="asc", limit=MAX_LIMIT, cursor=pos)
        while True:
            got = await reader.page(forward)
            _print_events(got.events, as_json)
            if got.end is not None:
                forward = replace(forward, cursor=got.end)
            if got.next_cursor is None:
                await sleep(interval)

    # Ctrl-C is how a follow ends: exit 0, no traceback
    with contextlib.suppress(KeyboardInterrupt):
        _run(settings, go)
