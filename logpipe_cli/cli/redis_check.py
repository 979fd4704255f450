"""``logpipe redis-check``: is Redis there, and can this setup lose events?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from logpipe_cli.auth import describe, load_authorizer
from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import JsonOption, settings_from, with_buffer

if TYPE_CHECKING:
    from logpipe_cli.health import HealthReport


def redis_check(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Redis URL [default: from redis.url].")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when the setup can lose events.")
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Ping Redis: version, round trip, memory, persistence, replicas, buffered events.
    Exit 1 if down."""
    from logpipe_cli import health  # redis: only once the command runs

    settings = settings_from(ctx, **{"redis.url": url})
    authorizer = load_authorizer(settings.auth)
    report = with_buffer(settings, lambda buf: health.check(buf, settings))
    if as_json:
        auth = {"enabled": authorizer.enabled, "tokens": dict(authorizer.counts)}
        render.print_json({**report.as_dict(), "api_auth": auth})
    else:
        health_table(report, api_auth=describe(authorizer))
    if strict and report.warnings:
        raise typer.Exit(1)


def health_table(
    report: HealthReport, c: Console | None = None, *, api_auth: str | None = None
) -> None:
    c = c or render.console()
    table = Table(title=fmt.inert(f"redis {report.url}"), show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("reachable", "yes")
    table.add_row("version", fmt.inert(report.version))
    table.add_row("round trip", f"{report.rtt_ms:,.3f} ms")
    table.add_row("memory used", fmt.size(report.used_memory))
    table.add_row("maxmemory", fmt.size(report.maxmemory) if report.maxmemory else "no limit")
    table.add_row("maxmemory-policy", fmt.inert(report.maxmemory_policy))
    table.add_row(
        "persistence",
        ", ".join(p for p, on in (("AOF", report.aof_enabled), ("RDB", report.rdb_saves)) if on)
        or "off",
    )
    rep = report.replication
    if report.masters is not None:
        table.add_row("mode", "cluster")
        for m in report.masters:
            table.add_row(
                "master",
                fmt.inert(
                    f"{m.address}: {fmt.number(m.slots)} slots, {fmt.size(m.used_memory)}, "
                    f"{'AOF' if m.aof_enabled else 'no AOF'}"
                ),
            )
            for r in m.replicas:
                table.add_row(
                    "  replica",
                    fmt.inert(
                        f"{r.address} {r.state}, lag {r.lag_s} s, {fmt.size(r.behind_bytes)} behind"
                    ),
                )
        if rep is not None:
            table.add_row("min_replicas", str(rep.min_replicas))
    elif rep is not None:
        table.add_row("mode", fmt.inert(rep.mode))
        table.add_row("master", fmt.inert(rep.master))
        for r in rep.replicas:
            table.add_row(
                "replica",
                fmt.inert(
                    f"{r.address} {r.state}, lag {r.lag_s} s, {fmt.size(r.behind_bytes)} behind"
                ),
            )
        if not rep.replicas:
            table.add_row("replicas", "none")
        table.add_row("min_replicas", str(rep.min_replicas))
    table.add_row("buffered keys", fmt.number(report.buffered_keys))
    table.add_row("buffered events", fmt.number(report.buffered_events))
    if api_auth is not None:
        table.add_row("API auth", api_auth)
    c.print(table)
    for w in report.warnings:
        render.print_warning(w)
