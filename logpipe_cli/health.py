"""The Redis health report behind ``logpipe redis-check``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer
from logpipe_cli.errors import RedisUnavailableError
from logpipe_cli.redis_conn import SentinelMasterClient, is_cluster
from logpipe_cli.settings import Settings, mask_url


@dataclass
class Replica:
    """One replica as the master's ``INFO replication`` lists it."""

    address: str
    state: str  # "online" once in sync
    lag_s: int  # seconds since its last acknowledgement
    behind_bytes: int  # replication stream the master sent that it has not acknowledged


@dataclass
class Replication:
    """Where the writes go and who copies them (sentinel mode, or min_replicas set)."""

    mode: str
    master: str  # host:port, as the Sentinels name it (or the url's, standalone)
    role: str  # what the server written to says it is ("master")
    min_replicas: int
    replicas: list[Replica] = field(default_factory=list)

    @property
    def online(self) -> int:
        return sum(1 for r in self.replicas if r.state == "online")


@dataclass
class ClusterMaster:
    """One master of a Redis Cluster: its slots, what decides whether it can lose
    events, and its replicas."""

    address: str
    slots: int
    used_memory: int
    maxmemory: int
    maxmemory_policy: str
    aof_enabled: bool
    replicas: list[Replica] = field(default_factory=list)

    @property
    def online(self) -> int:
        return sum(1 for r in self.replicas if r.state == "online")


@dataclass
class HealthReport:
    url: str
    version: str
    rtt_ms: float
    used_memory: int
    maxmemory: int
    maxmemory_policy: str
    aof_enabled: bool
    rdb_saves: bool
    buffered_events: int
    buffered_keys: int
    warnings: list[str] = field(default_factory=list)
    #: companions named the old way (no hash tag), left until `logpipe migrate-keys`
    legacy_keys: int = 0
    #: None for a standalone Redis with min_replicas 0 (the report stays as it was)
    replication: Replication | None = None
    #: cluster mode: every master (the fields above then sum or combine theirs)
    masters: list[ClusterMaster] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.replication is None:
            del out["replication"]
        if self.masters is None:
            del out["masters"]
        return out


async def check(buffer: Buffer, settings: Settings) -> HealthReport:
    """Ping Redis and read what decides whether events can be lost there."""
    rtt = await buffer.ping()
    info = await buffer.info()
    stats = await buffer.stats()
    nkeys = 0
    async for _ in buffer.scan(settings.drainer.log_pattern):
        nkeys += 1
    legacy = 0
    if not is_cluster(buffer.client):  # a cluster never held the old names
        async for raw in buffer.scan(keys.LEGACY_PATTERN):
            legacy += keys.parse_legacy(raw) is not None
    with_config = await _config(buffer)
    report = HealthReport(
        url=mask_url(settings.redis.url),
        version=str(info.get("redis_version", "?")),
        rtt_ms=round(rtt * 1000, 3),
        used_memory=int(info.get("used_memory", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        maxmemory_policy=str(
            info.get("maxmemory_policy", with_config.get("maxmemory-policy", "?"))
        ),
        aof_enabled=bool(int(info.get("aof_enabled", 0))),
        rdb_saves=bool(with_config.get("save", "")),
        buffered_events=stats.get("buffered", 0),
        buffered_keys=nkeys,
        legacy_keys=legacy,
    )
    cfg = settings.redis
    if is_cluster(buffer.client):
        await _cluster(buffer, report, settings)
    elif cfg.mode == "sentinel" or cfg.min_replicas:
        report.replication = await _replication(buffer, settings, info)
    report.warnings = risks(report, settings)
    return report


async def _cluster(buffer: Buffer, report: HealthReport, settings: Settings) -> None:
    """Fill ``report`` from every master of the cluster: memory summed, the weakest
    setting shown (any master with no maxmemory, without AOF, ...), and each master."""
    client: RedisCluster = buffer.client  # type: ignore[assignment]
    try:
        infos: dict[str, dict[str, Any]] = await client.info(target_nodes=RedisCluster.PRIMARIES)
    except (RedisError, OSError) as exc:
        raise RedisUnavailableError(f"redis unavailable while reading INFO: {exc}") from exc
    slots: dict[str, int] = {}
    for owners in client.nodes_manager.slots_cache.values():
        if owners:
            slots[owners[0].name] = slots.get(owners[0].name, 0) + 1
    masters = [
        ClusterMaster(
            address=name,
            slots=slots.get(name, 0),
            used_memory=int(info.get("used_memory", 0)),
            maxmemory=int(info.get("maxmemory", 0)),
            maxmemory_policy=str(info.get("maxmemory_policy", "?")),
            aof_enabled=bool(int(info.get("aof_enabled", 0))),
            replicas=_replicas(info),
        )
        for name, info in sorted(infos.items())
    ]
    report.masters = masters
    report.used_memory = sum(m.used_memory for m in masters)
    report.maxmemory = (
        0 if any(m.maxmemory == 0 for m in masters) else sum(m.maxmemory for m in masters)
    )
    policies = sorted({m.maxmemory_policy for m in masters})
    report.maxmemory_policy = policies[0] if len(policies) == 1 else ", ".join(policies)
    report.aof_enabled = all(m.aof_enabled for m in masters)
    try:
        saves: dict[str, Any] = await client.config_get(  # type: ignore[assignment]
            "save", target_nodes=RedisCluster.PRIMARIES
        )  # per node: its answer
        report.rdb_saves = all(bool(_text(v.get("save"))) for v in saves.values())
    except Exception:  # CONFIG may be disabled (managed Redis): the default node's answer
        pass
    report.replication = Replication(
        mode="cluster",
        master=f"{len(masters)} masters",
        role="master",
        min_replicas=settings.redis.min_replicas,
        replicas=[r for m in masters for r in m.replicas],
    )


def _replicas(info: dict[str, Any]) -> list[Replica]:
    """The replicas a master's ``INFO replication`` lists, with their lag."""
    offset = int(info.get("master_repl_offset", 0))
    replicas = []
    for name, value in sorted(info.items()):
        # redis-py parses "slave0:ip=...,port=...,state=online,offset=...,lag=0" to a dict
        if not (name.startswith("slave") and name[5:].isdigit() and isinstance(value, dict)):
            continue
        replicas.append(
            Replica(
                address=f"{value.get('ip', '?')}:{value.get('port', '?')}",
                state=str(value.get("state", "?")),
                lag_s=int(value.get("lag", -1)),
                behind_bytes=max(0, offset - int(value.get("offset", 0))),
            )
        )
    return replicas


async def _replication(buffer: Buffer, settings: Settings, info: dict[str, Any]) -> Replication:
    """The master's address and its replicas with their lag, from ``INFO replication``."""
    client = buffer.client
    if isinstance(client, SentinelMasterClient):
        host, port = await client.master_address()
        master = f"{host}:{port}"
    else:
        master = mask_url(settings.redis.url)
    return Replication(
        mode=settings.redis.mode,
        master=master,
        role=str(info.get("role", "?")),
        min_replicas=settings.redis.min_replicas,
        replicas=_replicas(info),
    )


async def _config(buffer: Buffer) -> dict[str, str]:
    try:
        raw = await buffer.client.config_get("save")
    except Exception:  # CONFIG may be disabled (managed Redis): then we cannot tell
        return {}
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else value


def risks(report: HealthReport, settings: Settings) -> list[str]:
    """Ways this setup can lose buffered events."""
    out: list[str] = []
    if report.maxmemory_policy not in ("noeviction", "?"):
        out.append(
            f"maxmemory-policy is {report.maxmemory_policy}: Redis may evict buffered events "
            "when full; use noeviction"
        )
    if report.maxmemory == 0:
        out.append(
            "Redis has no maxmemory: a backlog can take all the host's memory; set one "
            "(with maxmemory-policy noeviction) above redis.max_buffered_bytes"
        )
    if not report.aof_enabled and not report.rdb_saves:
        out.append("persistence is off (no AOF, no RDB saves): a Redis restart loses the buffer")
    if report.legacy_keys:
        out.append(
            f"{report.legacy_keys} claim, lease, offset, holder or quarantine keys have the "
            "names of an older version: the drainer leaves them; stop it and run "
            "`logpipe migrate-keys`"
        )
    ttl = settings.redis.key_expiration_seconds
    if ttl and ttl < 2 * settings.drainer.interval_seconds:
        out.append(
            f"redis.key_expiration_seconds ({ttl}) is under twice drainer.interval_seconds "
            f"({settings.drainer.interval_seconds:g}): events can expire before they are drained"
        )
    for m in report.masters or ():
        if m.slots == 0:
            out.append(f"cluster master {m.address} serves no slot")
        if m.online < settings.redis.min_replicas:
            out.append(
                f"redis.min_replicas is {settings.redis.min_replicas} but cluster master "
                f"{m.address} has {m.online} replicas online: writes answer 503 until it has"
            )
        elif not m.replicas:
            out.append(
                f"cluster master {m.address} has no replica: if it dies, its slots (and "
                "their buffered events) are gone until it is back"
            )
    rep = report.replication
    if rep is not None and rep.mode == "cluster":
        if rep.min_replicas == 0:
            out.append(
                "redis.min_replicas is 0: a 200 is answered before any replica has the "
                "events, so a master's failover can lose the last ones acknowledged; set it to 1"
            )
    elif rep is not None:
        if rep.mode == "sentinel" and rep.min_replicas == 0:
            out.append(
                "redis.min_replicas is 0: a 200 is answered before any replica has the "
                "events, so a failover can lose the last ones acknowledged; set it to 1"
            )
        if rep.min_replicas > rep.online:
            out.append(
                f"redis.min_replicas is {rep.min_replicas} but {rep.online} replicas are "
                "online: every write is answered 503 (and the drainer stops) until more are"
            )
        if rep.role != "master":
            out.append(f"the server written to is a {rep.role}, not a master")
    return out
