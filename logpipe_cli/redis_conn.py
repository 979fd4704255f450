"""Making the Redis client: the one place that knows ``redis.mode``.

Standalone: the Redis at ``redis.url``. Cluster: redis-py's ``RedisCluster`` seeded by
``redis.url`` and ``redis.cluster_nodes`` (it follows ``MOVED``/``ASK``/``TRYAGAIN``, which
mean the command did not run, and resends nothing whose connection failed). Sentinel: the
master that the Sentinels name for ``redis.sentinel_master``, found again after a failover
without a restart (redis-py's
``SentinelConnectionPool`` asks the Sentinels for the master's address whenever it opens
a connection, and drops a connection whose server answers ``READONLY``, i.e. was
demoted). Both clients return bytes and never retry by themselves, and both get the
same TLS options for ``rediss://`` (:func:`redis_client_kwargs`). A password or ACL user
travels in the URL; redis-py's errors never include it, and the settings mask it
wherever they are shown.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

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


def client_options(cfg: RedisSettings) -> dict[str, Any]:
    """What every connection logpipe opens shares.

    No silent retries: retrying a write whose answer was lost could store an event
    twice; the caller (or the HTTP client, on a 503) decides whether to try again.
    """
    return {
        "decode_responses": False,
        "socket_timeout": cfg.timeout_seconds,
        "socket_connect_timeout": cfg.timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        **redis_client_kwargs(cfg),  # TLS files for rediss://
    }


class Sentinels(Sentinel):
    """redis-py's Sentinel, with a one-line reason when no Sentinel names a master.

    redis-py's own message holds the repr of every Sentinel client (hundreds of
    characters each); it would reach every 503's detail and every drain report.
    """

    def __init__(self, addresses: list[str], **kwargs: Any) -> None:
        pairs = [parse_address(a) for a in addresses]
        super().__init__(pairs, **kwargs)  # type: ignore[no-untyped-call]
        self.addresses = addresses

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            raise MasterNotFoundError(
                f"no Sentinel of {', '.join(self.addresses)} names a master for "
                f"{service_name!r} now (Sentinels unreachable, or a failover under way)"
            ) from None


class SentinelMasterClient(aioredis.Redis):
    """A client of the Sentinels' current master that closes its Sentinel clients too."""

    # (not ``sentinel``/``sentinel_master``: those are Redis commands of the client)
    watchers: Sentinels | None = None
    master_name: str = ""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.watchers is not None:
                await self.watchers.aclose()

    async def master_address(self) -> tuple[str, int]:
        """The master's ``(host, port)`` as the Sentinels give it now."""
        assert self.watchers is not None
        host, port = await self.watchers.discover_master(self.master_name)
        return str(host), int(port)


async def recheck_master(client: aioredis.Redis) -> None:
    """Ask the Sentinels again where the master is; if it moved, drop idle connections.

    redis-py asks only when it opens a connection, and a demoted master answers
    ``READONLY`` only once Sentinel has reconfigured it (up to ~10 s after a manual
    failover or a partition): until then a pooled connection still writes to it, and
    with ``min_replicas`` set its ``WAIT`` falls short (its replicas have left). Called
    on such a shortfall, so the write is sent again to the new master at once.
    """
    pool = getattr(client, "connection_pool", None)  # a RedisCluster has none
    if isinstance(pool, SentinelConnectionPool):
        # no Sentinel answers: the next connection will ask again anyway
        with contextlib.suppress(RedisError):
            await pool.get_master_address()  # type: ignore[no-untyped-call]


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (checked at load, see ``settings.sentinels_problem``) as a pair."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client (see :func:`make_client`)."""
    return isinstance(client, RedisCluster)


def make_cluster_client(cfg: RedisSettings) -> RedisCluster:
    """A client of the Redis Cluster that ``redis.url`` and ``redis.cluster_nodes`` name.

    ``retry`` of 0: redis-py would otherwise resend a command whose connection failed
    (it may have run: an ACK run twice trims twice); it still reloads the slot map then.
    """
    url = urlsplit(cfg.url)
    seeds = [(url.hostname or "127.0.0.1", url.port or 6379)]
    seeds += [parse_address(a) for a in cfg.cluster_nodes]
    nodes = [ClusterNode(host, port) for host, port in seeds]
    return RedisCluster.from_url(cfg.url, startup_nodes=nodes, **client_options(cfg))


def make_client(cfg: RedisSettings) -> aioredis.Redis:
    """A client for the configured Redis (see the module's docstring)."""
    if cfg.mode == "cluster":
        # RedisCluster has the commands logpipe sends through the client; what differs
        # (no connection pool, pipelines routed by slot, WAIT per node) is behind
        # is_cluster(), in logpipe_cli.sharded
        return cast(aioredis.Redis, make_cluster_client(cfg))
    options = client_options(cfg)
    if cfg.mode != "sentinel":
        return aioredis.Redis.from_url(cfg.url, **options)
    # url gives the master's credentials and db; its address comes from the Sentinels
    parsed = aioredis.connection.parse_url(cfg.url)
    credentials = {k: parsed[k] for k in ("username", "password", "db") if k in parsed}
    sentinel_options = {k: v for k, v in options.items() if k != "decode_responses"}
    if cfg.sentinel_password:
        sentinel_options["password"] = cfg.sentinel_password
    sentinel = Sentinels(
        list(cfg.sentinels),
        sentinel_kwargs=sentinel_options,
        **options,
        **credentials,
    )
    client = sentinel.master_for(cfg.sentinel_master, redis_class=SentinelMasterClient)
    assert isinstance(client, SentinelMasterClient)
    client.watchers = sentinel
    client.master_name = cfg.sentinel_master
    return client
