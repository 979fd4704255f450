"""The shapes of the API's answers, for the OpenAPI document and for encoding them."""

from __future__ import annotations

import msgspec


class Problem(msgspec.Struct):
    """Every error answer: what went wrong, and the field if one is to blame."""

    detail: str
    field: str | None = None


class Stored(msgspec.Struct):
    """``POST /log`` succeeded: the event is in Redis."""

    stored: bool
    key: str


class BatchError(msgspec.Struct):
    index: int
    detail: str


class BatchStored(msgspec.Struct):
    accepted: int


class BatchRefused(msgspec.Struct):
    detail: str
    errors: list[BatchError]


class LogEvent(msgspec.Struct):
    """The documented shape of an event; other fields are kept as sent."""

    user_id: str
    event: str
    timestamp: int


class Ready(msgspec.Struct):
    """``GET /readyz``: Redis answers."""

    status: str
    redis_rtt_ms: float


class Buffered(msgspec.Struct):
    keys: int
    claims: int
    events: int
    oldest_day: int | None


class Totals(msgspec.Struct):
    """All-time counters kept in Redis by every API process and drainer."""

    accepted: int
    refused_full: int
    drained_events: int
    drained_keys: int
    drained_bytes: int
    quarantined: int


class LastDrain(msgspec.Struct):
    at: float
    ok: bool
    events: int
    keys: int
    seconds: float
    error: str | None


class ApiCounts(msgspec.Struct):
    """This API process since it started; ``refused`` by reason."""

    accepted: int
    refused: dict[str, int]
    started_at: float


class StatsDoc(msgspec.Struct):
    """``GET /stats``."""

    buffered: Buffered
    totals: Totals
    last_drain: LastDrain | None
    api: ApiCounts


class DrainSummary(msgspec.Struct):
    """``POST /drain``: what the pass did, as ``logpipe drain --once --json`` prints it."""

    keys: int
    events: int
    files: int
    bytes: int
    seconds: float
    quarantined: int
    busy: list[str]
    unsafe: list[str]
    wrong_type: list[str]
    errors: list[str]
    ok: bool
