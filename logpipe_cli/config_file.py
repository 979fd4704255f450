"""The TOML file: read it, and render the commented sample that `config init` writes."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import SECTIONS

# One comment per key: the sample is the configuration reference.
_COMMENTS: dict[str, dict[str, str]] = {
    "server": {
        "host": "Address the API listens on.",
        "port": "Port the API listens on.",
        "max_body_bytes": "Largest request body accepted; larger ones get 413.",
        "max_future_seconds": "Refuse events timestamped further ahead of the server's clock.",
        "partition_by": '"event": day from the event\'s timestamp; "ingest": day it was received.',
        "max_batch_events": "Most events accepted in one POST /logs batch.",
        "workers": "uvicorn worker processes for `logpipe serve`.",
    },
    "redis": {
        "url": "Redis that buffers events, e.g. redis://:password@host:6379/0.",
        "key_expiration_seconds": (
            "Memory guard: expire buffered keys after this many seconds. 0 = never.\n"
            "An expiry DROPS events that were not drained in time; keep it well above\n"
            "twice drainer.interval_seconds if you set it."
        ),
        "max_buffered_events": (
            "Backpressure: POST /log answers 503 once Redis holds this many events. 0 = no limit."
        ),
        "timeout_seconds": "Connect and command timeout for Redis.",
        "write_retry_seconds": (
            "How long the API sends a write again while Redis does not answer, before\n"
            "answering 503. The same write id is reused, so it is stored at most once."
        ),
    },
    "drainer": {
        "interval_seconds": "How often `logpipe drain` moves events to files (fractions allowed).",
        "log_pattern": "Redis keys the drainer looks for (SCAN pattern).",
        "logs_dir": "Directory that holds user_<id>/<day>.jsonl files.",
        "lease_seconds": "A drainer that stops renewing its claim for this long is taken over.",
        "batch_events": "Most events read from one key per round trip.",
        "fsync": "fsync each file before deleting its events from Redis (keep true).",
    },
    "logging": {"level": "debug, info, warning or error."},
}


def render_sample() -> str:
    """The commented sample configuration with every key at its default."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("logpipe configuration. Every key is optional; shown at its default."))
    doc.add(tomlkit.comment("Environment variables LOGPIPE_<SECTION>_<KEY> override this file,"))
    doc.add(tomlkit.comment("and command-line flags override both."))
    for section, cls in SECTIONS.items():
        table = tomlkit.table()
        for name, f in cls.__dataclass_fields__.items():
            for line in _COMMENTS[section][name].splitlines():
                table.add(tomlkit.comment(line))
            table.add(name, f.default)
        doc.add(tomlkit.nl())
        doc.add(section, table)
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
