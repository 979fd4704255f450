"""The Redis health report behind ``logpipe redis-check``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from logpipe_cli.buffer import Buffer
from logpipe_cli.settings import Settings, mask_url


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def check(buffer: Buffer, settings: Settings) -> HealthReport:
    """Ping Redis and read what decides whether events can be lost there."""
    rtt = await buffer.ping()
    info = await buffer.info()
    stats = await buffer.stats()
    nkeys = 0
    async for _ in buffer.scan(settings.drainer.log_pattern):
        nkeys += 1
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
    )
    report.warnings = risks(report, settings)
    return report


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
    ttl = settings.redis.key_expiration_seconds
    if ttl and ttl < 2 * settings.drainer.interval_seconds:
        out.append(
            f"redis.key_expiration_seconds ({ttl}) is under twice drainer.interval_seconds "
            f"({settings.drainer.interval_seconds:g}): events can expire before they are drained"
        )
    return out
