"""``logpipe send``: post one event, generate load, or replay a file of events.

All three post with the client library (:mod:`logpipe_cli.appclient`): its retries, its
``Retry-After`` handling and its event ids, so a retry never stores an event twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import JsonOption, TokenOption, settings_from
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import not_a_file

if TYPE_CHECKING:
    from logpipe_cli.loadgen import LoadSummary

DEFAULT_CONCURRENCY = 8
DEFAULT_USERS = 10


def send(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", "-u", help="user_id of the event.")] = None,
    event: Annotated[str | None, typer.Option("--event", "-e", help="Event name.")] = None,
    timestamp: Annotated[int | None, typer.Option(help="Unix seconds [default: now].")] = None,
    event_id: Annotated[
        str | None,
        typer.Option(
            "--event-id",
            help="The event's id: the API stores an id once [default: a fresh one].",
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="API base URL [default: http://<server.host>:<server.port>].")
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            min=0,
            help="Retries after a timeout, a failed connection, 429, 502, 503 or 504, "
            "with backoff or the answer's Retry-After.",
        ),
    ] = 0,
    count: Annotated[
        int | None, typer.Option(min=1, help="Load mode: send N generated events.")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help=f"Requests in flight at once [default: {DEFAULT_CONCURRENCY}]."),
    ] = None,
    users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Load mode: spread events over users u0..u<K-1> [default: {DEFAULT_USERS}].",
        ),
    ] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="Events per POST /logs request (NDJSON).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Replay a file: one JSON event per line.")
    ] = None,
    token: Annotated[str | None, TokenOption] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Send one event to POST /log, or many (--count N, --file F); exit 1 if any was refused."""
    from logpipe_cli import loadgen  # httpx: only once a command sends
    from logpipe_cli.client import api_url

    settings = settings_from(ctx)
    base = api_url(url, settings.server)
    if count is None and file is None:
        if concurrency is not None or users is not None or batch is not None:
            raise ConfigError("--concurrency, --users and --batch need --count N or --file F")
        _send_one(base, user, event, timestamp, event_id, retries, as_json, token)
        return
    if event_id is not None:
        raise ConfigError("--event-id names one event: drop it with --count or --file")
    lines, numbers, total = _events(count, file, user, event, timestamp, users)
    plan = loadgen.LoadPlan(
        base,
        batch=batch is not None,
        concurrency=concurrency or DEFAULT_CONCURRENCY,
        retries=retries,
        token=token,
    )
    with render.progress_bar("sending", "events", total=total, enabled=not as_json) as progress:
        summary = loadgen.run(plan, loadgen.requests(lines, batch, numbers), total, progress)
    _report(summary, plan.target, as_json)


def _send_one(
    base: str,
    user: str | None,
    event: str | None,
    timestamp: int | None,
    event_id: str | None,
    retries: int,
    as_json: bool,
    token: str | None,
) -> None:
    from logpipe_cli.client import Client, RefusedError, RetryPolicy, UnavailableError, failure

    if user is None or event is None:
        raise ConfigError("give --user and --event (or --count N or --file F to send many)")
    with Client(base, token or None, retry=RetryPolicy(max_retries=retries)) as client:
        try:
            receipt = client.log(user, event, timestamp=timestamp, event_id=event_id)
        except (RefusedError, UnavailableError) as exc:
            render.print_error(failure(exc, client.url + "/log"))
            raise typer.Exit(1) from None
    # POST /log answers 200 once the event is stored (or was: a duplicate); anything else
    # raised above
    answer = {
        "status": 200,
        "stored": True,
        "key": receipt.key,
        "duplicate": receipt.duplicate,
        "event_id": receipt.event_id,
        "attempts": receipt.attempts,
    }
    if as_json:
        render.print_json(answer)
    else:
        # a duplicate: this id was stored before (by an earlier send), not stored again
        what = "already stored (200, a duplicate)" if receipt.duplicate else "stored (200)"
        tries = "" if receipt.attempts == 1 else f" after {receipt.attempts} attempts"
        render.print_line(f"{what}{tries}: key {receipt.key}, event_id {receipt.event_id}")


def _events(
    count: int | None,
    file: Path | None,
    user: str | None,
    event: str | None,
    timestamp: int | None,
    users: int | None,
) -> tuple[Iterator[bytes], Iterator[int], int]:
    """The event lines to send, their line numbers in ``file`` (none for generated
    events: the messages name a refused event's line with them), and how many."""
    from logpipe_cli import loadgen
    from logpipe_cli.clientcore import line_with_id

    if file is not None:
        given = {"--count": count, "--user": user, "--event": event}
        given |= {"--timestamp": timestamp, "--users": users}
        clash = [flag for flag, value in given.items() if value is not None]
        if clash:
            raise ConfigError(f"--file replays events as they are: drop {', '.join(clash)}")
        problem = not_a_file(file)
        if problem is not None:
            raise ConfigError(problem)
        # each line as it is, but with an event_id, so that a retry cannot store it twice;
        # one pass for lines and numbers (tee holds at most the batch between them)
        for_lines, for_numbers = itertools.tee(loadgen.numbered_file_events(file))
        lines = map(line_with_id, (line for _, line in for_lines))
        numbers = (n for n, _ in for_numbers)
        return lines, numbers, loadgen.count_file_events(file)
    if user is not None and users is not None:
        raise ConfigError("give --user (one user) or --users K (u0..u<K-1>), not both")
    assert count is not None
    generated = loadgen.generated(
        count,
        users=users or DEFAULT_USERS,
        user=user,
        event=event or "load",
        timestamp=timestamp,
    )
    return generated, iter(()), count


def _report(summary: LoadSummary, target: str, as_json: bool) -> None:
    """The summary on stdout; what went wrong on stderr; exit 1 unless all were stored."""
    if as_json:
        render.print_json({"target": target, **summary.as_dict()})
    else:
        load_summary(summary, target)
    problems = []
    if summary.refused:
        problems.append(f"{fmt.number(summary.refused)} refused (first: {summary.first_refusal})")
    if summary.failed:
        problems.append(
            f"{fmt.number(summary.failed)} got no answer (first: {summary.first_failure})"
        )
    if problems:
        render.print_error(f"of {fmt.count(summary.sent, 'event')}, " + "; ".join(problems))
        raise typer.Exit(1)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} ms"


def load_summary(summary: LoadSummary, target: str, c: Console | None = None) -> None:
    c = c or render.console()
    table = Table(title=fmt.inert(f"send -> {target}"), show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)

    def problem(n: int) -> Text:
        return Text(fmt.number(n), style="bold red" if n else "")

    table.add_row("events sent", fmt.number(summary.sent))
    table.add_row("accepted", fmt.number(summary.accepted))
    table.add_row("refused", problem(summary.refused))
    table.add_row("failed (no answer)", problem(summary.failed))
    table.add_row("requests", fmt.number(summary.requests))
    table.add_row("seconds", f"{summary.seconds:,.3f}")
    table.add_row("events/s (accepted)", fmt.number(summary.events_per_s))
    table.add_row("latency p50", _ms(summary.latency_ms(0.50)))
    table.add_row("latency p99", _ms(summary.latency_ms(0.99)))
    c.print(table)
