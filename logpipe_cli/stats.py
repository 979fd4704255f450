"""The pipeline's state in one dict: what ``GET /stats`` answers and ``logpipe stats`` shows."""

from __future__ import annotations

from typing import Any

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer


async def collect(buffer: Buffer, pattern: str) -> dict[str, Any]:
    """Buffered keys and events, all-time counters, and the last drain's outcome.

    Keys are counted with ``SCAN`` (cost grows with the number of keys, not events);
    event counts come from the counters the write and drain scripts keep.
    """
    event_keys = 0
    oldest: int | None = None
    async for raw in buffer.scan(pattern):
        ek = keys.parse_event_key(raw)
        event_keys += 1
        if ek is not None and (oldest is None or ek.day < oldest):
            oldest = ek.day
    claims = 0
    async for raw in buffer.scan(keys.CLAIM_PREFIX + "*"):
        claims += 1
        ek = keys.parse_claim_key(raw)
        if ek is not None and (oldest is None or ek.day < oldest):
            oldest = ek.day
    counters, last = await buffer.counters()
    return {
        "buffered": {
            "keys": event_keys,
            "claims": claims,
            "events": counters.get("buffered", 0),
            "oldest_day": oldest,
        },
        "totals": {
            name: counters.get(name, 0)
            for name in (
                "accepted",
                "refused_full",
                "drained_events",
                "drained_keys",
                "drained_bytes",
                "quarantined",
            )
        },
        "last_drain": _last_drain(last),
    }


def _last_drain(raw: dict[str, str]) -> dict[str, Any] | None:
    if not raw:
        return None
    return {
        "at": float(raw.get("at", 0)),
        "ok": raw.get("ok") == "1",
        "events": int(raw.get("events", 0)),
        "keys": int(raw.get("keys", 0)),
        "seconds": float(raw.get("seconds", 0)),
        "error": raw.get("error") or None,
    }
