"""``logpipe migrate-keys``: rename companion keys named the old way (no hash tag)."""

from __future__ import annotations

from typing import Annotated

import typer

from logpipe_cli.cli import fmt, render
from logpipe_cli.cli.common import JsonOption, settings_from, with_buffer


def migrate_keys(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be renamed (--json: list it).")
    ] = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Rename claims, leases, offsets and quarantines of older versions to their
    hash-tagged names (stop the drainers first). Exit 1 if a name was taken."""
    from logpipe_cli import migration

    settings = settings_from(ctx)
    report = with_buffer(settings, lambda b: migration.migrate_keys(b, dry_run=dry_run))
    if as_json:
        render.print_json(report.as_dict())
    else:
        c = render.console()
        verb = "would rename" if dry_run else "renamed"
        c.print(
            f"{verb} {fmt.count(report.renamed, 'key')} of {fmt.count(len(report.lists), 'list')}"
        )
        for name in report.taken:
            render.print_warning(f"{name} exists already: that list's keys were left")
    if report.taken:
        raise typer.Exit(1)
