"""The write path: from a request's media type and body to events in Redis.

:class:`Ingest` is the twin of :class:`~logpipe_cli.drainer.Drainer`, and as free of
HTTP: it checks the media type, inflates gzip, splits a batch, validates, routes each
event to its ``logs:user_<id>:<day>`` key and stores through the group committer
(:mod:`logpipe_cli.committer`, then :meth:`Buffer.append <logpipe_cli.buffer.Buffer.append>`
and its script). Each method answers with an :data:`~logpipe_cli.answers.Answer`, the
plain data both HTTP doors (the ``POST /log`` fast path and the Litestar handlers) send
unchanged, so they answer byte for byte alike.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import zlib
from typing import Any

import msgspec

from logpipe_cli.answers import Answer, error_answer, problem_answer, refusal_reason
from logpipe_cli.buffer import Buffer, RateLimit
from logpipe_cli.committer import GroupCommitter
from logpipe_cli.errors import InvalidEventError, LogpipeError
from logpipe_cli.events import (
    SECONDS_PER_DAY,
    Event,
    canonical_batch,
    day_of,
    decode_json,
    parse_event,
    validate_batch,
    with_event_id,
)
from logpipe_cli.keys import event_key
from logpipe_cli.metrics import ApiMetrics
from logpipe_cli.schemas import BatchError, BatchRefused, BatchStored
from logpipe_cli.settings import Settings

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
#: users whose last key Ingest keeps (~150 bytes each); past this it starts again
_KEYS_KEPT = 100_000
#: batch errors listed in one answer; the count says how many there were in all
MAX_LISTED_ERRORS = 100
_encode = msgspec.json.encode


def is_json(media: str) -> bool:
    """``application/json`` or any ``application/*+json``."""
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class Ingest:
    """Validates events and stores them in a :class:`Buffer`; counts into ``metrics``.

    ``media`` is the Content-Type without parameters, lower-cased (``""`` when absent).
    A door that reads the body itself asks :meth:`log_media_refusal` or
    :meth:`batch_media_refusal` first, so that it never reads a body it would refuse.
    """

    def __init__(
        self, settings: Settings, buffer: Buffer, metrics: ApiMetrics | None = None
    ) -> None:
        srv = settings.server
        self.max_body_bytes = srv.max_body_bytes
        self.max_batch_events = srv.max_batch_events
        self.max_future_s = srv.max_future_seconds
        self.max_past_s = srv.max_past_seconds
        self.max_keys = srv.max_keys_per_request
        self.by_ingest = srv.partition_by == "ingest"
        #: each user's last key, ``user -> (day, key)``: most requests write to users
        #: (and days) seen before, and building the key was a tenth of a batch's routing
        self._keys: dict[str, tuple[int, str]] = {}
        limits = settings.limits
        self.rate = RateLimit(limits.events_per_second, limits.burst)
        self.rate_limited = limits.events_per_second > 0
        self.committer = GroupCommitter(buffer, settings.redis.write_retry_seconds, self.rate)
        self.metrics = metrics if metrics is not None else ApiMetrics()

    # ---- POST /log -------------------------------------------------------------------

    def log_media_refusal(self, media: str) -> Answer | None:
        """``POST /log``'s Content-Type check: the 415 answer, or ``None`` to go on."""
        if media and not is_json(media):
            self.metrics.refuse("media_type")
            return problem_answer(415, f"Content-Type must be application/json, got {media}")
        return None

    async def store_one(
        self,
        media: str,
        body: bytes,
        idempotency_key: str | None = None,
        *,
        principal: str | None = None,
        client: str | None = None,
    ) -> Answer:
        """``POST /log``: validate one event, store it, and say how it went.

        ``idempotency_key``: the ``Idempotency-Key`` header, if sent; it becomes the
        event's ``event_id``. An event whose id was stored before is not stored again
        and the answer says ``"duplicate":true``. ``principal`` (the API token's id) or
        else ``client`` (the client's address) names whose rate limit the event counts
        against (a duplicate counts too: it was sent).
        """
        refusal = self.log_media_refusal(media)
        if refusal is not None:
            return refusal
        now = time.time()
        try:
            event = parse_event(body, now=now, max_future_s=self.max_future_s)
            if idempotency_key is not None:
                event = with_event_id(event, idempotency_key)
            if self.max_past_s and event.timestamp < now - self.max_past_s:
                raise self._too_old(event.timestamp, now)
            key = self.route(event, now)
            payer = bucket_of(principal, client) if self.rate_limited else None
            ids = None if event.event_id is None else [event.event_id]
            if await self.committer.append([(key, event.line)], ids, principal=payer):
                self.metrics.duplicates += 1
                return 200, b'{"stored":true,"key":' + _encode(key) + b',"duplicate":true}', {}
        except LogpipeError as exc:
            return self._refusal(exc)
        self.metrics.accepted += 1
        return 200, b'{"stored":true,"key":' + _encode(key) + b"}", {}

    # ---- POST /logs ------------------------------------------------------------------

    def batch_media_refusal(self, media: str) -> Answer | None:
        """``POST /logs``'s Content-Type check: the 415 answer, or ``None`` to go on."""
        if media in NDJSON_TYPES or is_json(media):
            return None
        self.metrics.refuse("media_type")
        return problem_answer(
            415, f"Content-Type must be application/x-ndjson or application/json, got {media}"
        )

    async def store_batch(
        self,
        media: str,
        encoding: str,
        body: bytes,
        *,
        principal: str | None = None,
        client: str | None = None,
    ) -> Answer:
        """``POST /logs``: all events stored, or none (every bad one listed).

        ``encoding`` is the Content-Encoding header as sent (``identity`` or ``gzip``).
        ``principal`` and ``client`` are as for :meth:`store_one`; a batch counts its
        events against the rate limit.
        """
        refusal = self.batch_media_refusal(media)
        if refusal is not None:
            return refusal
        ndjson = media in NDJSON_TYPES
        now = time.time()
        # the usual body (compact events of the three fields) is judged whole; any
        # other is split and judged event by event
        fast: list[Event] | None = None
        docs: list[Any] = []
        try:
            body = inflate(body, encoding, self.max_body_bytes)
            fast = canonical_batch(body, now=now, max_future_s=self.max_future_s, ndjson=ndjson)
            if fast is None:
                docs = split_batch(body, ndjson)
        except LogpipeError as exc:
            return self._refusal(exc)
        count = len(docs) if fast is None else len(fast)
        if count > self.max_batch_events:
            self.metrics.refuse("too_large", count)
            return problem_answer(
                413, f"batch has {count} events; at most {self.max_batch_events} allowed"
            )
        if self.rate_limited and count > self.rate.burst:
            # it could never pass, so a 429 with a Retry-After would be a lie
            self.metrics.refuse("too_large", count)
            return problem_answer(
                413,
                f"batch has {count} events; at most limits.burst = {self.rate.burst} "
                "per request while the rate limit is on",
            )
        refusals: list[tuple[int, str]] = []
        if fast is not None:
            events = fast
        else:
            events, refusals = validate_batch(
                docs, now=now, max_future_s=self.max_future_s, raw=ndjson
            )
        if self.max_past_s and not refusals:
            floor = now - self.max_past_s
            refusals = [
                (i, self._too_old(e.timestamp, now).detail)
                for i, e in enumerate(events)
                if e.timestamp < floor
            ]
        if refusals:
            self.metrics.refuse("invalid", count)
            refused = BatchRefused(
                f"{len(refusals)} of {count} events invalid; nothing stored",
                [BatchError(i, detail) for i, detail in refusals[:MAX_LISTED_ERRORS]],
            )
            return 400, _encode(refused), {}
        items, nkeys = self.route_batch(events, now)
        duplicates: list[int] = []
        if nkeys > self.max_keys:
            self.metrics.refuse("too_large", len(items))
            return problem_answer(
                413,
                f"batch writes to {nkeys} distinct keys (user and day); at most "
                f"{self.max_keys} allowed (server.max_keys_per_request); nothing stored",
            )
        if items:
            ids = [e.event_id for e in events]
            try:
                duplicates = await self.committer.append(
                    items,
                    ids if any(i is not None for i in ids) else None,
                    principal=bucket_of(principal, client) if self.rate_limited else None,
                )
            except LogpipeError as exc:
                return self._refusal(exc, len(items))
        self.metrics.accepted += len(items) - len(duplicates)
        if not duplicates:
            return 200, _encode(BatchStored(len(items))), {}
        self.metrics.duplicates += len(duplicates)
        return 200, _encode(BatchStored(len(items), len(duplicates), duplicates)), {}

    # ---- routing ---------------------------------------------------------------------

    def route(self, event: Event, now: float) -> str:
        """The key ``event`` goes to: its user and the day of its timestamp (or of ``now``,
        with ``server.partition_by = "ingest"``)."""
        if self.by_ingest:
            return event_key(event.user_id, day_of(now))
        return event_key(event.user_id, event.timestamp // SECONDS_PER_DAY)  # day_of, inlined

    def route_batch(self, events: list[Event], now: float) -> tuple[list[tuple[str, bytes]], int]:
        """``(key, line)`` per event, and how many distinct keys. A key is built once per
        user and day, and kept for the next requests (see :attr:`_keys`)."""
        day_now = day_of(now)
        made = self._keys
        if len(made) > _KEYS_KEPT:
            made.clear()
        names: list[str] = []
        add = names.append
        for event in events:
            user = event.user_id
            day = day_now if self.by_ingest else event.timestamp // SECONDS_PER_DAY
            hit = made.get(user)
            if hit is None or hit[0] != day:
                hit = made[user] = (day, event_key(user, day))
            add(hit[1])
        return list(zip(names, [e.line for e in events], strict=True)), len(set(names))

    def _too_old(self, ts: int, now: float) -> InvalidEventError:
        return InvalidEventError(
            f"timestamp: {ts} is {int(now) - ts} s behind the server's clock "
            f"(at most {self.max_past_s} s allowed)",
            "timestamp",
        )

    def _refusal(self, exc: LogpipeError, events: int = 1) -> Answer:
        """Count ``events`` refused for ``exc``'s reason; the answer that says why."""
        self.metrics.refuse(refusal_reason(exc), events)
        return error_answer(exc)


def bucket_of(principal: str | None, client: str | None) -> str:
    """Whose rate limit a request counts against: its token, else its address (requests
    with neither, e.g. over a Unix socket, share one bucket)."""
    if principal is not None:
        return "token:" + principal
    return "addr:" + address_label(client)


def address_label(client: str | None) -> str:
    """A client address as a short, bounded bucket name. An IP address is spelled the one
    canonical way (so ``::1`` and ``0:0::1`` share a bucket); anything else (an
    ``X-Forwarded-For`` value a trusted proxy passed on, which a client may have written
    itself) becomes a digest, so no request can name a 20 KB Redis key."""
    if not client:
        return "unknown"
    try:
        return ipaddress.ip_address(client).compressed
    except ValueError:
        return "h:" + hashlib.blake2b(client.encode(errors="replace"), digest_size=12).hexdigest()


#: how much of a gzip body is given to the inflater at a time
_GZIP_FEED_BYTES = 4096


class _TooLarge(InvalidEventError):
    http_status = 413


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per its Content-Encoding; at most ``limit`` bytes of it.

    A gzip body may be several members one after another (``cat a.gz b.gz``, RFC 1952):
    each is decoded, all within the one ``limit``; zero padding after the last is
    allowed (as gunzip allows it), any other trailing bytes are refused.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise InvalidEventError(f"Content-Encoding {encoding!r} not supported (use gzip)")
    parts: list[bytes] = []  # joined once: appending to bytes would copy per member
    size = 0
    view = memoryview(body)
    pos = members = 0
    while True:
        # zero padding (no member starts with a 0 byte): nothing else may follow it
        if pos and view[pos] == 0:
            if bytes(view[pos:]).strip(b"\0"):
                raise InvalidEventError("body is not valid gzip: bytes after the padding")
            break
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        member = f" (member {members + 1})" if members else ""
        members += 1
        while not inflater.eof:
            if pos >= len(body):  # cut off: storing what did arrive would lose the rest
                raise InvalidEventError("body is not valid gzip: the stream is truncated")
            # fed in small pieces: what a member leaves unused is copied, and copying the
            # whole rest after each of thousands of tiny members would cost seconds
            chunk = view[pos : pos + _GZIP_FEED_BYTES]
            pos += len(chunk)
            try:
                # at least 1: a max_length of 0 would mean no limit
                part = inflater.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise InvalidEventError(f"body is not valid gzip{member}: {exc}") from None
            size += len(part)
            parts.append(part)
            if size > limit or inflater.unconsumed_tail:
                raise _TooLarge(f"decompressed body larger than {limit} bytes")
        pos -= len(inflater.unused_data)
        if pos == len(body):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def split_batch(body: bytes, ndjson: bool) -> list[Any]:
    """NDJSON -> raw lines (decoded one by one); JSON -> the decoded array's items."""
    if ndjson:
        return [line for line in body.split(b"\n") if line.strip()]
    docs = decode_json(body)
    if not isinstance(docs, list):
        raise InvalidEventError("a JSON batch must be an array of events")
    return docs
