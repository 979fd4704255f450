"""What every command shares: the global options and reading settings.

Every ``logpipe`` invocation imports this module (and every command module) just to
build the command tree, so they import at the top only what ``logpipe --help`` needs;
each command imports its library (Redis, the API server, httpx) when it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from logpipe_cli.buffer import Buffer
    from logpipe_cli.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class State:
    config: Path | None
    debug: bool


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings for this invocation; ``overrides`` maps ``section.key`` to a flag (or None)."""
    from logpipe_cli.config_file import load  # tomlkit: only once a command runs

    state: State = ctx.find_root().obj
    settings = load(state.config, overrides)
    level = "debug" if state.debug else settings.logging.level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not state.debug:
        # httpx logs every request at INFO: noise on stderr for `send`, unless debugging
        logging.getLogger("httpx").setLevel(logging.WARNING)
    return settings


def with_buffer(settings: Settings, fn: Callable[[Buffer], Awaitable[T]]) -> T:
    """Run ``fn`` with a Redis buffer, closing the connection afterwards."""
    import asyncio

    from logpipe_cli.buffer import Buffer  # redis: only for the commands that use it

    async def go() -> T:
        async with Buffer.connect(settings.redis) as buffer:
            return await fn(buffer)

    return asyncio.run(go())


JsonOption = typer.Option("--json", help="Print machine-readable JSON only.")
TokenOption = typer.Option(
    "--token",
    envvar="LOGPIPE_TOKEN",
    show_envvar=True,
    help="Bearer token for the API, when it has tokens configured (`logpipe token new`).",
)
