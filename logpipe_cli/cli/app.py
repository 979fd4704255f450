"""The root ``logpipe`` app: global options, sub-commands, and the one error boundary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.exceptions import (  # typer vendors click; its exceptions live here
    ClickException,
    NoArgsIsHelpError,
)

from logpipe_cli import __version__
from logpipe_cli.cli import (
    config_cmd,
    drain,
    inspect_cmd,
    migrate_keys,
    query_cmd,
    redis_check,
    run,
    send,
    serve,
    stats_cmd,
    token_cmd,
)
from logpipe_cli.cli.common import State
from logpipe_cli.cli.help import FullHelpGroup
from logpipe_cli.cli.render import print_error
from logpipe_cli.errors import LogpipeError


class LogpipeGroup(FullHelpGroup):
    """Turns library errors into ``error: <detail>`` on stderr and the error's exit code.

    Usage errors (an unknown option, a bad value) too: one line, exit 2, instead of
    click's three-line usage block.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:  # `logpipe` alone: the help, as click shows it
            exc.show()
            rv = exc.exit_code
        except ClickException as exc:
            if not standalone_mode:
                raise
            ctx = getattr(exc, "ctx", None)  # usage errors know their command
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        if not standalone_mode:
            return rv
        # click returns an Exit's code in this mode; a command's own result is None
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except LogpipeError as exc:
            state = ctx.obj if isinstance(ctx.obj, State) else None
            if state is not None and state.debug:
                raise
            print_error(exc.detail)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=LogpipeGroup,
    rich_markup_mode=None,  # show "[drainer.logs_dir]" in help as written
    name="logpipe",
    help="logpipe: HTTP-to-file log ingestion through a Redis buffer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"logpipe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file [default: $LOGPIPE_CONFIG, else ./config.toml]."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Run and operate the logpipe pipeline: API, drainer, and tools to look inside."""
    ctx.obj = State(config=config, debug=debug)
    if debug:
        logging.basicConfig(level=logging.DEBUG)


app.command("serve")(serve.serve)
app.command("drain")(drain.drain)
app.command("redis-check")(redis_check.redis_check)
app.command("send")(send.send)
app.command("run")(run.run)
app.command("stats")(stats_cmd.stats)
app.command("query")(query_cmd.query)
app.command("migrate-keys")(migrate_keys.migrate_keys)
app.command("tail")(query_cmd.tail)
app.add_typer(config_cmd.app, name="config")
app.add_typer(inspect_cmd.app, name="inspect")
app.add_typer(token_cmd.app, name="token")


def main() -> None:
    """Console-script entry point."""
    sys.exit(app(prog_name="logpipe"))
