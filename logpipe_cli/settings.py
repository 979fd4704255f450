"""Settings: frozen dataclasses and the one function that decides precedence.

Precedence, lowest first: built-in defaults < the TOML file < environment variables
``LOGPIPE_<SECTION>_<KEY>`` < command-line flags. :func:`load_settings` is pure: it
takes the parsed file, the environment and the flags, and returns the settings with
the source of every value, so it can be tested with a table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from logpipe_cli.errors import ConfigError

Source = Literal["default", "file", "env", "flag"]
ENV_PREFIX = "LOGPIPE_"
CONFIG_ENV = "LOGPIPE_CONFIG"
DEFAULT_CONFIG_NAME = "config.toml"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    max_body_bytes: int = 1024 * 1024
    max_future_seconds: int = 86400
    partition_by: str = "event"
    max_batch_events: int = 10_000
    workers: int = 1


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379"
    key_expiration_seconds: int = 0
    max_buffered_events: int = 10_000_000
    timeout_seconds: float = 5.0
    write_retry_seconds: float = 2.0


@dataclass(frozen=True)
class DrainerSettings:
    interval_seconds: float = 60.0
    log_pattern: str = "logs:user_*:*"
    logs_dir: str = "logs"
    lease_seconds: float = 5.0
    batch_events: int = 10_000
    fsync: bool = True


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    drainer: DrainerSettings = field(default_factory=DrainerSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    #: where each value came from, keyed "section.key"
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)
    #: the file the settings were read from, if any
    path: Path | None = field(default=None, compare=False)

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        """The settings as plain data; the Redis password masked unless asked not to."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        if mask_secrets:
            out["redis"]["url"] = mask_url(self.redis.url)
        return out


SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "redis": RedisSettings,
    "drainer": DrainerSettings,
    "logging": LoggingSettings,
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "server.partition_by": ("event", "ingest"),
    "logging.level": ("debug", "info", "warning", "error"),
}
_MINIMUM: dict[str, float] = {
    "server.port": 0,
    "server.max_body_bytes": 1,
    "server.max_future_seconds": 0,
    "server.max_batch_events": 1,
    "server.workers": 1,
    "redis.key_expiration_seconds": 0,
    "redis.max_buffered_events": 0,
    "redis.timeout_seconds": 0.001,
    "redis.write_retry_seconds": 0,
    "drainer.interval_seconds": 0.001,
    "drainer.lease_seconds": 0.1,
    "drainer.batch_events": 1,
}
_MAXIMUM: dict[str, float] = {"server.port": 65535}


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    # keep host[:port] as written: .hostname drops an IPv6 address's brackets
    netloc = f"{userinfo}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _field_types(section: str) -> dict[str, type[Any]]:
    return {k: v for k, v in get_type_hints(SECTIONS[section]).items()}


def _type_name(tp: type[Any]) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def _coerce(value: Any, tp: type[Any], where: str, name: str) -> Any:
    """Check a value from the file or a flag against the field's type."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: {name} must be {_type_name(tp)}, got {value!r}")


def _parse_env(raw: str, tp: type[Any], var: str) -> Any:
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {var}: must be {_type_name(tp)}, got {raw!r}"
        ) from None
    return raw


def _check_range(name: str, value: Any, where: str) -> None:
    if name in _CHOICES and value not in _CHOICES[name]:
        choices = ", ".join(repr(c) for c in _CHOICES[name])
        raise ConfigError(f"{where}: {name} must be one of {choices}, got {value!r}")
    if name in _MINIMUM and value < _MINIMUM[name]:
        raise ConfigError(f"{where}: {name} must be at least {_MINIMUM[name]:g}, got {value!r}")
    if name in _MAXIMUM and value > _MAXIMUM[name]:
        raise ConfigError(f"{where}: {name} must be at most {_MAXIMUM[name]:g}, got {value!r}")


def load_settings(
    file_data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    path: Path | None = None,
) -> Settings:
    """Merge defaults, the parsed file, ``LOGPIPE_*`` variables and flags.

    ``overrides`` maps ``"section.key"`` to a flag's value; ``None`` means "not given".
    Raises :class:`ConfigError` naming the source, the key and what was expected.
    """
    file_label = str(path) if path is not None else "config file"
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    sources: dict[str, Source] = {}
    for section in SECTIONS:
        for name in _field_types(section):
            sources[f"{section}.{name}"] = "default"

    for section, table in (file_data or {}).items():
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ConfigError(f"{file_label}: unknown section [{section}] (known: {known})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{file_label}: [{section}] must be a table")
        types = _field_types(section)
        for key, value in table.items():
            if key not in types:
                known = ", ".join(types)
                raise ConfigError(
                    f"{file_label}: unknown key {section}.{key} (known in [{section}]: {known})"
                )
            name = f"{section}.{key}"
            values[section][key] = _coerce(value, types[key], file_label, name)
            _check_range(name, values[section][key], file_label)
            sources[name] = "file"

    for section in SECTIONS:
        for key, tp in _field_types(section).items():
            var = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            raw = (environ or {}).get(var)
            if raw is None:
                continue
            name = f"{section}.{key}"
            values[section][key] = _parse_env(raw, tp, var)
            _check_range(name, values[section][key], f"environment variable {var}")
            sources[name] = "env"

    for name, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = name.partition(".")
        tp = _field_types(section)[key]
        flag = "--" + key.replace("_", "-")
        values[section][key] = _coerce(value, tp, f"option {flag}", name)
        _check_range(name, values[section][key], f"option {flag}")
        sources[name] = "flag"

    built = {s: SECTIONS[s](**values[s]) for s in SECTIONS}
    return Settings(**built, sources=sources, path=path)


def resolve_config_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """Which file to read: ``--config``, else ``$LOGPIPE_CONFIG``, else ``./config.toml``.

    A file named explicitly must exist; the implicit ``config.toml`` is optional.
    """
    named = explicit if explicit is not None else environ.get(CONFIG_ENV) or None
    if named is not None:
        p = Path(named)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load(
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings as the CLI does: file (if any) + environment + flags."""
    from logpipe_cli.config_file import read_config_file

    env = os.environ if environ is None else environ
    path = resolve_config_path(config, env)
    data = read_config_file(path) if path is not None else {}
    return load_settings(data, env, overrides, path=path)
