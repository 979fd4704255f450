"""The shapes of the API's answers, for the OpenAPI document and for encoding them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # the annotation only: schemas stays below the drainer
    from logpipe_cli.drainer import DrainReport


class Problem(msgspec.Struct):
    """Every error answer: what went wrong, and the field if one is to blame."""

    detail: str
    field: str | None = None


class Stored(msgspec.Struct, omit_defaults=True):
    """``POST /log`` succeeded: the event is in Redis. ``duplicate`` (only present, and
    ``true``, then): its ``event_id`` was stored before, so it was not stored again."""

    stored: bool
    key: str
    duplicate: bool | None = None


class BatchError(msgspec.Struct):
    index: int
    detail: str


class BatchStored(msgspec.Struct, omit_defaults=True):
    """``POST /logs`` succeeded. ``accepted`` counts the batch's events; when some were
    not stored because their ``event_id`` was stored before (or came earlier in the
    batch), ``duplicates`` counts them and ``duplicate_indexes`` lists their 0-based
    indexes. Both fields are left out when there are none."""

    accepted: int
    duplicates: int | None = None
    duplicate_indexes: list[int] | None = None


class BatchRefused(msgspec.Struct):
    detail: str
    errors: list[BatchError]


class BatchProblem(msgspec.Struct):
    """``POST /logs``'s 400, as documented: a :class:`BatchRefused` when events are bad
    (each one listed in ``errors``), a :class:`Problem` when the body is no batch at all
    (not JSON, not an array, bad gzip). One shape that covers both, for the OpenAPI
    document: a ``oneOf`` of the two would match neither, since a Problem allows more
    fields."""

    detail: str
    errors: list[BatchError] | None = None
    field: str | None = None


class LogEvent(msgspec.Struct):
    """The documented shape of an event; other fields are kept as sent."""

    user_id: str
    event: str
    timestamp: int


class Ready(msgspec.Struct):
    """``GET /readyz``: Redis answers."""

    status: str
    redis_rtt_ms: float


class Buffered(msgspec.Struct, omit_defaults=True):
    """What Redis holds now.

    ``events`` is a counter the write and drain scripts keep, so ``GET /stats`` costs the
    same with 10 keys or 200,000. Counting keys and claims needs a ``SCAN`` of every key,
    so ``/stats`` leaves ``keys``, ``claims`` and ``oldest_day`` out; ``logpipe stats
    --keys`` fills them in with an explicit scan.
    """

    events: int
    keys: int | None = None
    claims: int | None = None
    oldest_day: int | None = None


class Totals(msgspec.Struct):
    """All-time counters kept in Redis by every API process and drainer."""

    accepted: int = 0
    refused_full: int = 0
    drained_events: int = 0
    drained_keys: int = 0
    drained_bytes: int = 0
    quarantined: int = 0


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
    """``GET /stats``: produced by ``stats.collect``, declared in OpenAPI, decoded by
    ``client.fetch_stats`` and read by ``logpipe stats``: one type for all four."""

    buffered: Buffered
    totals: Totals
    last_drain: LastDrain | None
    #: this API process; absent only where a document is built outside the API
    api: ApiCounts | None = None


class DrainSummary(msgspec.Struct):
    """``POST /drain``: what the pass did, as ``logpipe drain --once --json`` prints it.

    The one shape of a drain report on the wire; :func:`drain_summary` builds it from the
    drainer's working :class:`~logpipe_cli.drainer.DrainReport`.
    """

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
    #: rounds made durable by one syncfs each (see ``drainer.sync``)
    synced_rounds: int = 0


def drain_summary(report: DrainReport) -> DrainSummary:
    """The wire shape of a drain pass (what ``POST /drain`` and ``drain --json`` show)."""
    return DrainSummary(
        keys=report.keys,
        events=report.events,
        files=report.files,
        bytes=report.bytes,
        seconds=report.seconds,
        quarantined=report.quarantined,
        busy=list(report.busy),
        unsafe=list(report.unsafe),
        wrong_type=list(report.wrong_type),
        errors=list(report.errors),
        ok=report.ok,
        synced_rounds=report.synced_rounds,
    )


class EventsPage(msgspec.Struct):
    """``GET /logs``: one page of a user's events, each as stored, oldest first (or
    newest first with ``order=desc``); ``next_cursor`` is ``null`` when there are no more."""

    events: list[dict[str, Any]]
    next_cursor: str | None


#: ``GET /logs``'s query parameters and what each one means (for the OpenAPI document)
LOGS_QUERY_PARAMETERS: dict[str, str] = {
    "user_id": "The user whose events to read (required).",
    "event": "Only events with this `event` name; repeat it for any of several.",
    "since": "Events with `timestamp` at or after this: Unix seconds or ISO 8601 (UTC).",
    "until": "Events with `timestamp` before this: Unix seconds or ISO 8601 (UTC).",
    "limit": "Events per page: 1 to 10,000 (default 100); NDJSON: up to 1,000,000.",
    "cursor": "`next_cursor` of the previous page, to read the next one.",
    "order": "`asc` (oldest first, the default) or `desc` (newest first).",
}
