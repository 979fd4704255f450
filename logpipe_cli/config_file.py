"""The TOML file: read it, render the commented sample that `config init` writes, and
load settings as the CLI does (file + environment + flags).

The only tomlkit user. It depends on :mod:`logpipe_cli.settings` (for each setting's
default and comment), never the other way round: ``load_settings`` takes the parsed file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import Settings, all_settings, load_settings, resolve_config_path


def render_sample() -> str:
    """The commented sample configuration with every key at its default."""
    # imported here: every command reads its config (tomllib), only `config init` writes one
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("logpipe configuration. Every key is optional; shown at its default."))
    doc.add(tomlkit.comment("Environment variables LOGPIPE_<SECTION>_<KEY> override this file,"))
    doc.add(tomlkit.comment("and command-line flags override both."))
    tables: dict[str, Any] = {}
    for info in all_settings():
        if info.section not in tables:
            tables[info.section] = tomlkit.table()
            doc.add(tomlkit.nl())
            doc.add(info.section, tables[info.section])
        table = tables[info.section]
        for line in info.spec.comment.splitlines():
            table.add(tomlkit.comment(line))
        table.add(info.key, info.default)
    return tomlkit.dumps(doc)


def write_sample(path: Path, *, force: bool = False) -> None:
    """Write the sample to ``path``; refuse to overwrite unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite it)")
    try:
        path.write_text(render_sample(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a malformed one is a :class:`ConfigError` naming the place."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def load(
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings as the CLI does: file (if any) + environment + flags."""
    env = os.environ if environ is None else environ
    path = resolve_config_path(config, env)
    data = read_config_file(path) if path is not None else {}
    return load_settings(data, env, overrides, path=path)
