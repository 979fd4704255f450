"""Settings: frozen dataclasses and the one function that decides precedence.

Precedence, lowest first: built-in defaults < the TOML file < environment variables
``LOGPIPE_<SECTION>_<KEY>`` < command-line flags. :func:`load_settings` is pure: it
takes the parsed file, the environment and the flags, and returns the settings with
the source of every value, so it can be tested with a table.

Each setting states all its facts once, in its field: the default, the bounds or
choices, and the comment that the sample file (``logpipe config init``) shows. The
environment variable's name is derived from the section and key. Reading the TOML file
is :mod:`logpipe_cli.config_file`'s job; this module never imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from logpipe_cli.durable import MODES, mode_problem
from logpipe_cli.errors import ConfigError

Source = Literal["default", "file", "env", "flag"]
ENV_PREFIX = "LOGPIPE_"
CONFIG_ENV = "LOGPIPE_CONFIG"
#: ``LOGPIPE_*`` variables that are not settings: never refused as unknown.
#: LOGPIPE_TOKEN is reserved for the API token that ``--token`` will read (issue 9).
RESERVED_ENV = frozenset({CONFIG_ENV, "LOGPIPE_TOKEN"})
DEFAULT_CONFIG_NAME = "config.toml"
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: the type of a list-valued setting (a tuple: settings are frozen); in the environment,
#: comma-separated
StrList = tuple[str, ...]
#: what ``config show`` and reprs print in place of a secret
MASK = "***"


@dataclass(frozen=True)
class Spec:
    """What a setting accepts and how the sample file explains it."""

    comment: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    #: the command-line option that sets it, where not ``--<key>`` (errors name it)
    flag: str | None = None
    #: a further check: why a value is not usable, or None
    problem: Callable[[Any], str | None] | None = None


def setting(
    default: Any,
    comment: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    flag: str | None = None,
    problem: Callable[[Any], str | None] | None = None,
) -> Any:
    """A dataclass field carrying its :class:`Spec` as metadata."""
    spec = Spec(comment, minimum, maximum, choices, flag, problem)
    return field(default=default, metadata={"spec": spec})


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL redis-py can use, or None if it is.

    Checked at load so that a typo is a one-line configuration error (exit 2), not a
    traceback from deep inside the first connection.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the port is not a number in 1-65535"
    if parts.scheme not in REDIS_SCHEMES:
        known = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
        return f"the scheme must be one of {known}"
    if port == 0:
        return "the port is not a number in 1-65535"
    if parts.scheme != "unix":
        db = parts.path.strip("/")
        if db and not (db.isascii() and db.isdigit()):
            return f"the database number {db!r} is not an integer"
    return None


def sentinels_problem(addresses: tuple[str, ...]) -> str | None:
    """Why ``addresses`` is not a list of ``host:port`` Sentinel addresses, or None."""
    for address in addresses:
        host, colon, port = address.rpartition(":")
        if not colon or not host:
            return f"{address!r} is not host:port"
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            return f"the port of {address!r} is not a number in 1-65535"
    return None


def octal_mode_problem(value: str, most: int) -> str | None:
    """Why ``value`` is not an octal permission string within ``most``, or None."""
    try:
        bits = int(value, 8)
    except (TypeError, ValueError):
        return 'must be an octal permission string such as "0640"'
    if not 0 <= bits <= most:
        return f"must be within 0000-{most:04o}"
    return None


def _origins_problem(origins: StrList) -> str | None:
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https") or not parts.netloc or parts.path
        ):
            return f"{origin!r} is not an origin like https://app.example[:port] (or *)"
    return None


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "Address the API listens on.")
    port: int = setting(3000, "Port the API listens on.", minimum=0, maximum=65535)
    max_body_bytes: int = setting(
        1024 * 1024, "Largest request body accepted; larger ones get 413.", minimum=1
    )
    max_future_seconds: int = setting(
        86400, "Refuse events timestamped further ahead of the server's clock.", minimum=0
    )
    partition_by: str = setting(
        "event",
        '"event": day from the event\'s timestamp; "ingest": day it was received.',
        choices=("event", "ingest"),
    )
    max_batch_events: int = setting(
        10_000, "Most events accepted in one POST /logs batch.", minimum=1
    )
    workers: int = setting(1, "uvicorn worker processes for `logpipe serve`.", minimum=1)
    max_header_bytes: int = setting(
        32768,
        "Largest request line + headers (or trailer fields) of one request; larger: 431, closed.",
        minimum=1024,
    )
    header_timeout_seconds: float = setting(
        10.0,
        "A request's headers must arrive within this long (from connect or its first\n"
        "byte); otherwise 408 and the connection is closed.",
        minimum=0.1,
    )
    body_timeout_seconds: float = setting(
        30.0,
        "A request's body must arrive within this long after its headers; else 408.",
        minimum=0.1,
    )
    max_connections: int = setting(
        2048,
        "Open connections per API process; past it the longest idle one is closed,\n"
        "or a new one gets 503 if all are busy. Lowered to fit the fd limit.",
        minimum=1,
    )
    max_inflight_body_bytes: int = setting(
        64 * 1024 * 1024,
        "Request body bytes received and not yet answered, per process; past it: 503.\n"
        "Keep it at least max_body_bytes.",
        minimum=1,
    )
    keepalive_seconds: float = setting(
        5.0, "Idle time allowed between requests on one connection.", minimum=0.1
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        'Browser origins allowed to call the API (CORS), e.g. ["https://app.example"].\n'
        "Empty: no CORS headers at all.",
        problem=_origins_problem,
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Without tokens (on a loopback address, or anywhere once set), the dotted\n"
        "Host names serve answers besides IP addresses and one-label names (a defense\n"
        'against DNS rebinding), e.g. ["logs.internal"]; "*": any.',
    )
    ssl_certfile: str = setting(
        "", "Serve HTTPS with this certificate (PEM; with ssl_keyfile). Empty: plain HTTP."
    )
    ssl_keyfile: str = setting("", "The private key (PEM) of ssl_certfile.")
    max_keys_per_request: int = setting(
        100,
        "Most distinct keys (user and day) one POST /logs batch may write to; more: 413.",
        minimum=1,
    )
    max_past_seconds: int = setting(
        0,
        "Refuse events timestamped further behind the server's clock (400). 0 = no limit.",
        minimum=0,
    )


@dataclass(frozen=True)
class RedisSettings:
    url: str = setting(
        "redis://127.0.0.1:6379",
        "Redis that buffers events, e.g. redis://:password@host:6379/0.",
        problem=redis_url_problem,
    )
    key_expiration_seconds: int = setting(
        0,
        "Memory guard: expire buffered keys after this many seconds. 0 = never.\n"
        "An expiry DROPS events that were not drained in time; keep it well above\n"
        "twice drainer.interval_seconds if you set it.",
        minimum=0,
    )
    max_buffered_events: int = setting(
        10_000_000,
        "Backpressure: POST /log answers 503 once Redis holds this many events. 0 = no limit.",
        minimum=0,
    )
    max_buffered_bytes: int = setting(
        1024**3,
        "Backpressure: 503 once the events buffered in Redis hold this many bytes\n"
        "(their JSON lines). 0 = no limit. Keep it under Redis' maxmemory.",
        minimum=0,
    )
    timeout_seconds: float = setting(5.0, "Connect and command timeout for Redis.", minimum=0.001)
    write_retry_seconds: float = setting(
        2.0,
        "How long the API sends a write again while Redis does not answer, before\n"
        "answering 503. The same write id is reused, so it is stored at most once.",
        minimum=0,
    )
    tls_ca_file: str = setting(
        "", "rediss:// only: CA bundle (PEM) that signed Redis's certificate. Empty: system CAs."
    )
    tls_cert_file: str = setting(
        "", "rediss:// only: client certificate (PEM) when Redis asks for one."
    )
    tls_key_file: str = setting("", "rediss:// only: the private key (PEM) of tls_cert_file.")
    mode: str = setting(
        "standalone",
        '"standalone": the Redis at url; "sentinel": the master that redis.sentinels\n'
        "name for sentinel_master (url then gives only the password, user and db);\n"
        '"cluster": a Redis Cluster, url (and cluster_nodes) naming nodes of it.',
        choices=("standalone", "sentinel", "cluster"),
    )
    sentinels: tuple[str, ...] = setting(
        (),
        'Sentinel addresses, ["host:port", ...] (env: comma-separated), for mode "sentinel".',
        problem=sentinels_problem,
    )
    sentinel_master: str = setting("", "The master's name in the Sentinels' configuration.")
    cluster_nodes: tuple[str, ...] = setting(
        (),
        'Mode "cluster": more seed nodes ["host:port", ...] besides url\'s (env:\n'
        "comma-separated); tried when url's node is down at start.",
        problem=sentinels_problem,
    )
    sentinel_password: str = setting(
        "", "Password of the Sentinels themselves (empty = none); masked when shown."
    )
    min_replicas: int = setting(
        0,
        "Answer 200 only once this many replicas have each write (WAIT); else 503.\n"
        "The drainer waits for its claims and acks the same way. 0 = do not wait.",
        minimum=0,
    )
    replica_timeout_seconds: float = setting(
        1.0, "How long one write waits for min_replicas replicas.", minimum=0.001
    )
    dedupe_seconds: int = setting(
        86400,
        "An event whose event_id (or Idempotency-Key) its user stored within this long\n"
        "is not stored again (answer: duplicate). Kept in Redis, ~1.5x the window's ids\n"
        "on average (see README, Guarantees). 0 = off.",
        minimum=0,
    )

    def __repr__(self) -> str:
        # settings reach logs and tracebacks through repr(): never with the password
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "url":
                value = mask_url(value)
            elif f.name == "sentinel_password" and value:
                value = "***"
            parts.append(f"{f.name}={value!r}")
        return f"RedisSettings({', '.join(parts)})"


@dataclass(frozen=True)
class DrainerSettings:
    interval_seconds: float = setting(
        60.0,
        "How often `logpipe drain` moves events to files (fractions allowed).",
        minimum=0.001,
        flag="--interval",
    )
    log_pattern: str = setting(
        "logs:user_*:*", "Redis keys the drainer looks for (SCAN pattern).", flag="--pattern"
    )
    logs_dir: str = setting("logs", "Directory that holds user_<id>/<day>.jsonl files.")
    lease_seconds: float = setting(
        5.0, "A drainer that stops renewing its claim for this long is taken over.", minimum=0.1
    )
    batch_events: int = setting(10_000, "Most events read from one key per round trip.", minimum=1)
    fsync: bool = setting(
        True, "fsync each file before deleting its events from Redis (keep true)."
    )
    sync: str = setting(
        "auto",
        'How a round\'s appends are made durable (with fsync on): "file" fsyncs each file\n'
        'and new directory; "filesystem" one syncfs(2) for a round of 16+ files (Linux\n'
        '5.8+, which reports write-back errors to it); "auto": filesystem on local\n'
        "ext4, xfs, btrfs, f2fs, tmpfs where the kernel allows, else file.",
        choices=MODES,
        problem=mode_problem,
    )
    file_mode: str = setting(
        "0640",
        "Permissions of new log files (octal; the umask still applies).",
        problem=lambda v: octal_mode_problem(v, 0o666),
    )
    dir_mode: str = setting(
        "0750",
        "Permissions of new user_<id> directories (octal; the umask still applies).",
        problem=lambda v: octal_mode_problem(v, 0o777),
    )

    @property
    def file_mode_bits(self) -> int:
        return int(self.file_mode, 8)

    @property
    def dir_mode_bits(self) -> int:
        return int(self.dir_mode, 8)


@dataclass(frozen=True)
class LimitsSettings:
    events_per_second: float = setting(
        0.0,
        "Rate limit per API token (per client address without auth), shared by every\n"
        "API process through Redis; over it: 429 with Retry-After. 0 = no limit.",
        minimum=0,
    )
    burst: int = setting(
        100,
        "Events a client may send at once before events_per_second applies; also the\n"
        "largest batch accepted while the rate limit is on (larger: 413).",
        minimum=1,
    )


@dataclass(frozen=True)
class LoggingSettings:
    level: str = setting(
        "info", "debug, info, warning or error.", choices=("debug", "info", "warning", "error")
    )


def mask_token(token: str) -> str:
    """A token as it may be shown: a ``sha256:`` digest as written (it is not the
    secret), a plain token as ``***``."""
    return token if token.startswith("sha256:") else MASK


@dataclass(frozen=True)
class AuthSettings:
    ingest_tokens: tuple[str, ...] = setting(
        (),
        "Bearer tokens that may POST /log and /logs. A token may be written as\n"
        '"sha256:<hex digest>" so this file never holds the secret (`logpipe token new`).\n'
        "When any token is configured, every route but /healthz and /readyz needs one.",
    )
    read_tokens: tuple[str, ...] = setting((), "Bearer tokens that may read: GET /stats.")
    admin_tokens: tuple[str, ...] = setting(
        (), "Bearer tokens that may do everything: POST /drain, /metrics, and the rest."
    )
    tokens_file: str = setting(
        "", 'A file of tokens, one "<scope> <token>" per line (scope: ingest, read, admin).'
    )
    metrics_public: bool = setting(False, "Serve GET /metrics without a token.")
    allow_anonymous: bool = setting(
        False,
        "Let `serve` listen on a non-loopback address with no tokens configured\n"
        "(anyone who reaches the port may then post, read and drain).",
    )

    def __repr__(self) -> str:
        # tokens reach logs and tracebacks through repr(): never the secrets
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_tokens"):
                value = tuple(mask_token(t) for t in value)
            parts.append(f"{f.name}={value!r}")
        return f"AuthSettings({', '.join(parts)})"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    drainer: DrainerSettings = field(default_factory=DrainerSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    #: where each value came from, keyed "section.key"
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)
    #: the file the settings were read from, if any
    path: Path | None = field(default=None, compare=False)

    def as_dict(self, *, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        """The settings as plain data; the Redis password masked unless asked not to."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        out["redis"]["sentinels"] = list(self.redis.sentinels)
        if mask_secrets:
            out["redis"]["url"] = mask_url(self.redis.url)
            for key in ("ingest_tokens", "read_tokens", "admin_tokens"):
                out["auth"][key] = [mask_token(t) for t in out["auth"][key]]
            if self.redis.sentinel_password:
                out["redis"]["sentinel_password"] = "***"
        return out


SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "redis": RedisSettings,
    "drainer": DrainerSettings,
    "limits": LimitsSettings,
    "logging": LoggingSettings,
    "auth": AuthSettings,
}


@dataclass(frozen=True)
class SettingInfo:
    """One setting, as the loader, the sample file and the docs need it."""

    section: str
    key: str
    type: type[Any]
    default: Any
    spec: Spec

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env_var(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.key.replace("_", "-")


def all_settings() -> Iterator[SettingInfo]:
    """Every setting, section by section, in the order the sample file shows them."""
    for section, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield SettingInfo(section, f.name, hints[f.name], f.default, f.metadata["spec"])


#: "section.key" -> its facts (an index over the dataclasses, not a second source of truth)
SETTINGS: dict[str, SettingInfo] = {info.name: info for info in all_settings()}
_BY_ENV: dict[str, SettingInfo] = {info.env_var: info for info in SETTINGS.values()}


def mask_url(url: str) -> str:
    """Hide every password in a Redis URL: ``user:***@`` and ``?password=***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _secret = userinfo.partition(":")
        # keep host[:port] as written: .hostname drops an IPv6 address's brackets
        netloc = f"{user}:***@{hostport}" if colon else netloc
    query = "&".join(_mask_param(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_param(param: str) -> str:
    name, eq, _value = param.partition("=")
    pairs = parse_qsl(name, keep_blank_values=True)
    plain = pairs[0][0] if pairs else name
    return f"{name}=***" if eq and plain.lower() == "password" else param


def _type_name(tp: type[Any]) -> str:
    if tp == StrList:
        return "a list of strings"
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
    elif (
        tp == StrList and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    ):
        return tuple(value)
    raise ConfigError(f"{where}: {name} must be {_type_name(tp)}, got {_as_toml(value)}")


def _as_toml(value: Any) -> str:
    """A value from the file as the file spells it (``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (it is missing, a directory, or another kind
    of thing), or ``None`` if it is a regular file (a link to one counts)."""
    if path.is_file():
        return None
    if path.is_dir():
        return f"{path} is a directory, not a file"
    if path.exists():
        return f"{path} is not a regular file"
    return f"{path} does not exist"


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
        if tp == StrList:
            # comma-separated; blanks dropped, so "" is the empty list
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"environment variable {var}: must be {_type_name(tp)}, got {raw!r}"
        ) from None
    if tp == StrList:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _check(info: SettingInfo, value: Any, where: str) -> None:
    spec, name = info.spec, info.name
    if spec.choices and value not in spec.choices:
        choices = ", ".join(repr(c) for c in spec.choices)
        raise ConfigError(f"{where}: {name} must be one of {choices}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{where}: {name} must be at least {spec.minimum:g}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{where}: {name} must be at most {spec.maximum:g}, got {value!r}")
    problem = spec.problem(value) if spec.problem is not None else None
    if problem is not None:
        # a URL may hold a password: never echo it
        shown = mask_url(value) if isinstance(value, str) else value
        raise ConfigError(f"{where}: {name} {shown!r} is not usable: {problem}")


def _did_you_mean(word: str, known: Sequence[str], prefix: str = "") -> str:
    """``; did you mean <nearest>?``, or nothing when no name is close.

    ``prefix`` is left out of the comparison: every ``LOGPIPE_`` name shares it, which
    would make any two of them look close.
    """
    stems = [k.removeprefix(prefix) for k in known]
    close = difflib.get_close_matches(word.removeprefix(prefix), stems, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """``LOGPIPE_*`` variables that name no setting (a typo would otherwise be ignored)."""
    return sorted(
        var
        for var in environ
        if var.startswith(ENV_PREFIX) and var not in _BY_ENV and var not in RESERVED_ENV
    )


def load_settings(
    file_data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    path: Path | None = None,
) -> Settings:
    """Merge defaults, the parsed file, ``LOGPIPE_*`` variables and flags.

    ``overrides`` maps ``"section.key"`` to a flag's value; ``None`` means "not given".
    Raises :class:`ConfigError` naming the source, the key and what was expected; an
    unknown section, key or ``LOGPIPE_*`` variable is refused with the nearest name.
    """
    file_label = str(path) if path is not None else "config file"
    env = environ or {}
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    sources: dict[str, Source] = dict.fromkeys(SETTINGS, "default")

    for section, table in (file_data or {}).items():
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            hint = _did_you_mean(f"[{section}]", [f"[{s}]" for s in SECTIONS])
            raise ConfigError(f"{file_label}: unknown section [{section}] (known: {known}){hint}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{file_label}: [{section}] must be a table")
        for key, value in table.items():
            info = SETTINGS.get(f"{section}.{key}")
            if info is None:
                keys = [i.key for i in SETTINGS.values() if i.section == section]
                hint = _did_you_mean(key, keys)
                raise ConfigError(
                    f"{file_label}: unknown key {section}.{key} "
                    f"(known in [{section}]: {', '.join(keys)}){hint}"
                )
            values[section][key] = _coerce(value, info.type, file_label, info.name)
            _check(info, values[section][key], file_label)
            sources[info.name] = "file"

    unknown = unknown_env_vars(env)
    if unknown:
        var = unknown[0]
        hint = _did_you_mean(var, list(_BY_ENV), prefix=ENV_PREFIX)
        raise ConfigError(f"environment variable {var} is not a logpipe setting{hint}")
    for var, info in _BY_ENV.items():
        raw = env.get(var)
        if raw is None:
            continue
        values[info.section][info.key] = _parse_env(raw, info.type, var)
        _check(info, values[info.section][info.key], f"environment variable {var}")
        sources[info.name] = "env"

    for name, value in (overrides or {}).items():
        if value is None:
            continue
        info = SETTINGS[name]
        values[info.section][info.key] = _coerce(value, info.type, f"option {info.flag}", name)
        _check(info, values[info.section][info.key], f"option {info.flag}")
        sources[name] = "flag"

    built = {s: SECTIONS[s](**values[s]) for s in SECTIONS}
    _check_sentinel(built["redis"], sources)
    _check_cluster(built["redis"], sources)
    return Settings(**built, sources=sources, path=path)


def _check_sentinel(cfg: RedisSettings, sources: Mapping[str, Source]) -> None:
    """Sentinel mode needs the Sentinels and the master's name: refused at load, not at
    the first connection."""
    if cfg.mode != "sentinel":
        return
    where = f'redis.mode = "sentinel" (from {sources.get("redis.mode", "default")})'
    if not cfg.sentinels:
        raise ConfigError(f'{where} needs redis.sentinels, e.g. ["127.0.0.1:26379"]')
    if not cfg.sentinel_master:
        raise ConfigError(f"{where} needs redis.sentinel_master, the master's name")
    scheme = urlsplit(cfg.url).scheme
    if scheme != "redis":
        raise ConfigError(
            f"{where}: redis.url must be a redis:// URL (it gives the password, user and "
            f"db; the master's address comes from the Sentinels), got {scheme}://"
        )


def _check_cluster(cfg: RedisSettings, sources: Mapping[str, Source]) -> None:
    """Cluster mode has one database and no unix sockets: refused at load."""
    if cfg.mode != "cluster":
        return
    where = f'redis.mode = "cluster" (from {sources.get("redis.mode", "default")})'
    scheme = urlsplit(cfg.url).scheme
    if scheme not in ("redis", "rediss"):
        raise ConfigError(f"{where} needs a redis:// or rediss:// redis.url, got {scheme}://")
    path = urlsplit(cfg.url).path.strip("/")
    if path not in ("", "0"):
        raise ConfigError(f"{where}: a Redis Cluster has only db 0, but redis.url names db {path}")


def resolve_config_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """Which file to read: ``--config``, else ``$LOGPIPE_CONFIG``, else ``./config.toml``.

    A file named explicitly must exist; the implicit ``config.toml`` is optional.
    """
    named = explicit if explicit is not None else environ.get(CONFIG_ENV) or None
    if named is not None:
        p = Path(named)
        problem = not_a_file(p)
        if problem is not None:
            raise ConfigError(f"config file {problem}")
        return p
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None
