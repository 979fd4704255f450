"""``logpipe token``: make API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from logpipe_cli.auth import SCOPES, TokenScope, digest_line, new_token
from logpipe_cli.cli import render
from logpipe_cli.cli.common import JsonOption
from logpipe_cli.cli.help import FullHelpGroup

app = typer.Typer(
    cls=FullHelpGroup,
    help="Make bearer tokens for the API.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _scope(value: str) -> str:
    if value not in SCOPES:
        raise typer.BadParameter(f"must be one of {', '.join(SCOPES)}")
    return value


@app.command("new")
def new(
    scope: Annotated[
        str,
        typer.Option(callback=_scope, help=f"What the token may do: {', '.join(SCOPES)}."),
    ] = "ingest",
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Print a new random token and the sha256: line to configure it with."""
    token = new_token()
    digest = digest_line(token)
    chosen: TokenScope = scope  # type: ignore[assignment]  # checked by _scope
    if as_json:
        render.print_json({"scope": chosen, "token": token, "sha256": digest})
        return
    render.print_line(token)
    render.print_line("")
    render.print_line("# give the token above to the client (--token / LOGPIPE_TOKEN), and put")
    render.print_line("# its digest (not the token) in the config, under [auth]:")
    render.print_line(f'{chosen}_tokens = ["{digest}"]')
    render.print_line("# or as a line of auth.tokens_file:")
    render.print_line(f"{chosen} {digest}")
