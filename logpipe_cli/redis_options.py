"""How a Redis client is made beyond its URL: TLS files for ``rediss://``.

Kept apart from :mod:`logpipe_cli.buffer` so that every client (API, drainer, each
command) gets the same options from one place. A password or ACL user travels in the
URL (``redis://user:password@host``); redis-py's errors never include it, and the
settings mask it wherever they are shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import RedisSettings

_TLS_FILES = {
    "tls_ca_file": "ssl_ca_certs",
    "tls_cert_file": "ssl_certfile",
    "tls_key_file": "ssl_keyfile",
}


def redis_client_kwargs(cfg: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url(cfg.url, ...)`` beyond the URL.

    Raises :class:`ConfigError` when a TLS file is set for a URL that is not
    ``rediss://``, when a file does not exist, or when a client key has no certificate.
    """
    given = {name: getattr(cfg, name) for name in _TLS_FILES if getattr(cfg, name)}
    if not given:
        return {}
    if urlsplit(cfg.url).scheme != "rediss":
        names = ", ".join(f"redis.{n}" for n in given)
        raise ConfigError(f"{names} need a rediss:// redis.url (TLS)")
    if ("tls_key_file" in given) != ("tls_cert_file" in given):
        raise ConfigError("redis.tls_cert_file and redis.tls_key_file go together")
    for name, path in given.items():
        if not Path(path).is_file():
            raise ConfigError(f"redis.{name}: no such file: {path}")
    return {_TLS_FILES[name]: path for name, path in given.items()}
