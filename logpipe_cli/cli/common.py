"""What every command shares: the global options and reading settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from logpipe_cli.buffer import Buffer
from logpipe_cli.config_file import load
from logpipe_cli.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class State:
    config: Path | None
    debug: bool


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings for this invocation; ``overrides`` maps ``section.key`` to a flag (or None)."""
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
