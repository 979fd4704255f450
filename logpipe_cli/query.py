"""Read one user's events back: from the day files and from what Redis still buffers.

:class:`Query` is a parsed request (``GET /logs``, ``logpipe query``, ``logpipe tail``);
:class:`EventReader` answers it. Each (user, day) is one stream, the day file's lines and
then the buffered values (see :mod:`logpipe_cli.daystream`), in which an event's index
never changes while the drainer moves it; a cursor is a (day, index) in those streams,
so a page resumes exactly where the last one stopped, whatever was drained in between.

Days are found from the range alone: ``since``/``until`` give the day numbers, and each
day is checked with one ``lstat`` and two ``EXISTS`` (pipelined per 64 days), never by a
scan of Redis. Without ``since`` the oldest day is the user's oldest day file (one
directory listing), or yesterday if there is none.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from logpipe_cli.buffer import Buffer, redis_errors
from logpipe_cli.daystream import Anchor, BadAnchorError, Item, open_stream
from logpipe_cli.errors import InvalidEventError, LogpipeError
from logpipe_cli.events import SECONDS_PER_DAY
from logpipe_cli.keys import USER_ID_RE, EventKey
from logpipe_cli.query_limits import MAX_BUFFERED_READ, MAX_PAGE_BYTES
from logpipe_cli.query_limits import MAX_EXPORT_LIMIT as MAX_EXPORT_LIMIT  # re-exported
from logpipe_cli.query_limits import MAX_LIMIT as MAX_LIMIT  # re-exported
from logpipe_cli.sink import day_of_file, encode_lines, path_for

DEFAULT_LIMIT = 100
MAX_EVENT_NAMES = 100
#: days checked for files and buffered keys per Redis round trip
DAYS_PER_CHECK = 64

Order = Literal["asc", "desc"]
_CURSOR_VERSION = 1
_NUMBER = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]{1,512}")


class BufferedTooLargeError(LogpipeError):
    """A day to read holds more buffered events than a query reads at once (see
    :data:`~logpipe_cli.query_limits.MAX_BUFFERED_READ`): ``503``, come back later."""

    http_status = 503
    exit_code = 1


class InvalidQueryError(InvalidEventError):
    """A query parameter that cannot be used; ``field`` names it (answered with 400).

    An :class:`InvalidEventError` so that every edge that names the field at fault for
    an event does so for a query too.
    """


@dataclass(frozen=True)
class Position:
    """Where a page stopped in day ``day``'s stream.

    Ascending: the next event to read is at ``index``; ``anchor`` is a known line
    boundary of the file at or before it. Descending: the next event is the last one
    *before* ``index``.
    """

    day: int
    index: int
    anchor: Anchor = field(default_factory=Anchor)


@dataclass(frozen=True)
class Query:
    """One user's events, filtered; build it with :meth:`parse`."""

    user_id: str
    events: frozenset[str] | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    cursor: Position | None = None
    order: Order = "asc"

    @classmethod
    def parse(
        cls,
        user_id: str | None,
        events: Sequence[str] | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        limit: str | int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        *,
        max_limit: int = MAX_LIMIT,
    ) -> Query:
        """Parse request parameters; raises :class:`InvalidQueryError` naming the bad one.

        ``since``/``until``: Unix seconds or ISO 8601 dates/times (UTC unless an offset
        is given); since inclusive, until exclusive. ``limit``: 1 to ``max_limit``.
        """
        if not user_id:
            raise InvalidQueryError("user_id is required", "user_id")
        if not USER_ID_RE.fullmatch(user_id):
            raise InvalidQueryError(
                "user_id must be 1-128 of letters, digits and . _ - @ +, not starting with '.'",
                "user_id",
            )
        if order is None or order == "":
            order = "asc"
        if order not in ("asc", "desc"):
            raise InvalidQueryError("order must be asc or desc", "order")
        names = _event_names(events)
        lo = None if since is None else parse_time(since, "since")
        hi = None if until is None else parse_time(until, "until")
        if lo is not None and hi is not None and hi < lo:
            raise InvalidQueryError("until must not be before since", "until")
        n = _limit(limit, max_limit)
        pos = None if cursor is None else decode_cursor(cursor, user_id, order)
        return cls(user_id, names, lo, hi, n, pos, order)  # type: ignore[arg-type]

    def matches(self, event: Any) -> bool:
        """Whether a stored event passes the name and time filters."""
        if not isinstance(event, dict):
            return False
        if self.events is not None and event.get("event") not in self.events:
            return False
        if self.since is None and self.until is None:
            return True
        ts = event.get("timestamp")
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            return False
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)


def _event_names(events: Sequence[str] | None) -> frozenset[str] | None:
    if not events:
        return None
    if len(events) > MAX_EVENT_NAMES:
        raise InvalidQueryError(f"at most {MAX_EVENT_NAMES} event names", "event")
    for name in events:
        if not name or len(name) > 256:
            raise InvalidQueryError("an event name must be 1-256 characters", "event")
    return frozenset(events)


def _limit(limit: str | int | None, max_limit: int) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, str):
        if not re.fullmatch(r"[0-9]{1,9}", limit):
            raise InvalidQueryError("limit must be a whole number", "limit")
        limit = int(limit)
    if not 1 <= limit <= max_limit:
        raise InvalidQueryError(f"limit must be between 1 and {max_limit:,}", "limit")
    return limit


def parse_time(value: str | float, field: str) -> float:
    """Unix seconds (``1764547200``, ``1764547200.5``) or an ISO 8601 date or date-time
    (``2026-12-01``, ``2026-12-01T15:00:00``, ``...Z``, ``...+02:00``); UTC if no offset."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < 1e12 or math.isnan(value):
            raise InvalidQueryError(f"{field} is out of range", field)
        return float(value)
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        if len(text) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
        elif len(text) > 10 and text[10] in "Tt ":
            moment = dt.datetime.fromisoformat(text)
        else:
            raise ValueError(text)
    except ValueError:
        raise InvalidQueryError(
            f"{field} must be Unix seconds or an ISO 8601 date or date-time "
            "(2026-12-01, 2026-12-01T15:00:00Z)",
            field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    ts = moment.timestamp()
    if ts < 0:
        raise InvalidQueryError(f"{field} is before 1970", field)
    return ts


# ---- cursors ----------------------------------------------------------------------------


def encode_cursor(user_id: str, order: Order, pos: Position) -> str:
    """An opaque token for ``pos``: base64url of a small JSON document."""
    doc = {
        "v": _CURSOR_VERSION,
        "u": user_id,
        "o": order,
        "d": pos.day,
        "i": pos.index,
        "a": [pos.anchor.line, pos.anchor.byte],
    }
    return base64.urlsafe_b64encode(msgspec.json.encode(doc)).rstrip(b"=").decode()


def _nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def decode_cursor(text: str, user_id: str, order: str) -> Position:
    """The position in a cursor from :func:`encode_cursor` for the same user and order;
    anything else is an :class:`InvalidQueryError` naming ``cursor``."""

    def bad(why: str) -> InvalidQueryError:
        return InvalidQueryError(f"cursor {why}: use next_cursor as it was given", "cursor")

    if not _CURSOR_TEXT.fullmatch(text):
        raise bad("is malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad("is malformed") from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"v", "u", "o", "d", "i", "a"}
        or doc["v"] != _CURSOR_VERSION
        or not isinstance(doc["a"], list)
        or len(doc["a"]) != 2
        or not all(_nat(x) for x in (doc["d"], doc["i"], *doc["a"]))
        or doc["a"][0] > doc["i"]
    ):
        raise bad("is malformed")
    if doc["u"] != user_id:
        raise bad("belongs to another user_id")
    if doc["o"] != order:
        raise bad(f"was made for order={doc['o']}")
    pos = Position(doc["d"], doc["i"], Anchor(*doc["a"]))
    if encode_cursor(user_id, doc["o"], pos) != text:
        raise bad("is malformed")  # one position, one spelling
    return pos


# ---- reading ----------------------------------------------------------------------------


class Found:
    """A matching event: the line as stored, where it sits, and (decoded when first
    asked for) the event."""

    __slots__ = ("_event", "day", "item")

    def __init__(self, day: int, item: Item, event: dict[str, Any] | None = None) -> None:
        self.day = day
        self.item = item
        self._event = event

    @property
    def raw(self) -> bytes:
        return self.item.raw

    @property
    def event(self) -> dict[str, Any]:
        if self._event is None:
            self._event = msgspec.json.decode(self.item.raw)
        return self._event


@dataclass(frozen=True)
class Page:
    """Up to ``limit`` events as stored, and the cursor for the next page (``None``: no
    more now). ``end`` is where reading would resume even when there is no more (for
    following new events, as ``logpipe tail -f`` does)."""

    events: list[Found]
    next_cursor: str | None
    end: Position | None


def position_after(found: Found, order: Order) -> Position:
    """Where the page after ``found`` starts."""
    seq = found.item.seq + 1 if order == "asc" else found.item.seq
    return Position(found.day, seq, found.item.resume)


class EventReader:
    """Answers :class:`Query` objects from ``logs_dir`` and the :class:`Buffer`.

    ``partition_by`` and ``max_future_s`` are the API's settings: they decide which
    days can hold events with a given timestamp.
    """

    def __init__(
        self,
        buffer: Buffer,
        logs_dir: Path | str,
        *,
        partition_by: str = "event",
        max_future_s: int = 86400,
        lock_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.buffer = buffer
        self.logs_dir = Path(logs_dir)
        self.partition_by = partition_by
        self.max_future_s = max_future_s
        self.lock_timeout_s = lock_timeout_s
        self.clock = clock

    async def page(self, q: Query, max_bytes: int = MAX_PAGE_BYTES) -> Page:
        """One page: up to ``q.limit`` events and the next cursor. The page ends early,
        with a cursor, once its events hold ``max_bytes`` (it always holds one event, if
        any is left): a page is held whole, where an export streams."""
        found: list[Found] = []
        more = False
        size = 0
        async for f in self.events(q):
            size += len(f.raw) + 1
            if len(found) == q.limit or (found and size > max_bytes):
                more = True  # one more exists: the next page will not be empty
                break
            found.append(f)
        end = position_after(found[-1], q.order) if found else q.cursor
        cursor = encode_cursor(q.user_id, q.order, end) if more and end else None
        return Page(found, cursor, end)

    async def export(self, q: Query, chunk_bytes: int = 64 * 1024) -> AsyncIterator[bytes]:
        """``q``'s events as NDJSON, each line as stored, in chunks of about
        ``chunk_bytes``; the last line is always ``{"next_cursor": ...}``, so a reader can
        tell a complete export from a cut one. Memory stays flat."""
        out: list[bytes] = []
        size = n = 0
        last: Found | None = None
        more = False
        async for f in self.events(q):
            if n == q.limit:
                more = True
                break
            out.append(f.raw)
            size += len(f.raw) + 1
            n += 1
            last = f
            if size >= chunk_bytes:
                yield encode_lines(out)
                out, size = [], 0
        end = position_after(last, q.order) if last else q.cursor
        cursor = encode_cursor(q.user_id, q.order, end) if more and end else None
        out.append(msgspec.json.encode({"next_cursor": cursor}))
        yield encode_lines(out)

    async def events(self, q: Query) -> AsyncIterator[Found]:
        """Every matching event from ``q.cursor`` on, in ``q.order``, streamed: day files
        are read forward, or backward for ``desc``, a block at a time."""
        if q.order == "asc":
            async for f in self._ascending(q):
                yield f
        else:
            async for f in self._descending(q):
                yield f

    async def _ascending(self, q: Query) -> AsyncIterator[Found]:
        pos = q.cursor
        async for day in self._days(q, ascending=True):
            start, anchor = (pos.index, pos.anchor) if pos and day == pos.day else (0, None)
            async for f in self._read_day(q, day, start, None, anchor):
                yield f

    async def _descending(self, q: Query) -> AsyncIterator[Found]:
        pos = q.cursor
        async for day in self._days(q, ascending=False):
            stop, anchor = (pos.index, pos.anchor) if pos and day == pos.day else (None, None)
            async for f in self._read_day(q, day, 0, stop, anchor, backward=True):
                yield f

    async def _read_day(
        self,
        q: Query,
        day: int,
        start: int,
        stop: int | None,
        anchor: Anchor | None,
        *,
        backward: bool = False,
    ) -> AsyncIterator[Found]:
        # Without filters a line is only checked (an object, valid JSON), not decoded: the
        # raw line is what a page or an export sends, and checking costs a third as much.
        filtered = q.events is not None or q.since is not None or q.until is not None
        decode = msgspec.json.decode
        async with await open_stream(
            self.buffer, self.logs_dir, EventKey(q.user_id, day), self.lock_timeout_s
        ) as stream:
            try:
                items = (
                    stream.items_backward(stop, anchor)
                    if backward
                    else stream.items(start, stop, anchor)
                )
                async for item in items:
                    try:
                        if filtered:
                            event = decode(item.raw)
                            if q.matches(event):
                                yield Found(day, item, event)
                        elif item.raw[:1] == b"{":
                            _check(item.raw)
                            item.raw.decode("utf-8")  # msgspec.Raw does not check UTF-8
                            yield Found(day, item)
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        continue  # a line that is not JSON (edited by hand): counted, skipped
            except BadAnchorError:
                raise InvalidQueryError(
                    "cursor does not match the stored events (changed by hand, or the "
                    "files were edited or removed)",
                    "cursor",
                ) from None

    # ---- which days ---------------------------------------------------------------------

    def day_range(self, q: Query) -> tuple[int, int]:
        """The first and last day that can hold a matching event (first > last: none)."""
        today = int(self.clock()) // SECONDS_PER_DAY
        future_days = -(-self.max_future_s // SECONDS_PER_DAY)
        if self.partition_by == "ingest":
            # a day is when an event arrived: at most max_future_s before its timestamp,
            # and any time after it (a client may send old timestamps)
            lo = None if q.since is None else _day(q.since - self.max_future_s)
            hi = today
        else:
            lo = None if q.since is None else _day(q.since)
            # no event is stored on a day after today + max_future_s (the API refuses
            # later timestamps): a far `until` (year 33658) must not cost a Redis check
            # for each of millions of empty days
            hi = today + future_days
            if q.until is not None:
                hi = min(hi, _day(math.ceil(q.until) - 1))
        if lo is None:
            lo = min([today - 1, *self._file_days(q.user_id)])
        return max(0, lo), hi

    def _file_days(self, user_id: str) -> list[int]:
        """The days of the user's files: one directory listing, only without ``since``."""
        try:
            names = os.listdir(path_for(self.logs_dir, EventKey(user_id, 0)).parent)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError:
            return []
        return [day for day in map(day_of_file, names) if day is not None]

    async def _days(self, q: Query, *, ascending: bool) -> AsyncIterator[int]:
        """Days in the range that have a file or buffered events, checked in chunks so a
        first page does not look at every day of a long range."""
        lo, hi = self.day_range(q)
        if q.cursor is not None:
            if ascending:
                lo = max(lo, q.cursor.day)
            else:
                hi = min(hi, q.cursor.day)
        days: Iterable[int] = range(lo, hi + 1) if ascending else range(hi, lo - 1, -1)
        chunk: list[int] = []
        for day in days:
            chunk.append(day)
            if len(chunk) == DAYS_PER_CHECK:
                for d in await self._present(q.user_id, chunk):
                    yield d
                chunk = []
        for d in await self._present(q.user_id, chunk):
            yield d

    async def _present(self, user_id: str, days: list[int]) -> Iterator[int]:
        """Those of ``days`` with a file or buffered events. A day with more buffered
        events than :data:`MAX_BUFFERED_READ` raises :class:`BufferedTooLargeError` once
        it is reached (the days before it are read first, and a page filled before it
        never reaches it)."""
        if not days:
            return iter(())
        eks = [EventKey(user_id, d) for d in days]
        async with self.buffer.client.pipeline(transaction=False) as pipe:
            for ek in eks:
                pipe.llen(ek.claim)
                pipe.llen(ek.key)
            with redis_errors("looking for buffered events"):
                # a key of another type (written by hand) answers an error here: it
                # counts as present, and reading the day says what is wrong, as before
                replies = await pipe.execute(raise_on_error=False)
        lengths = [n if isinstance(n, int) else 1 for n in replies]
        counts = [a + b for a, b in zip(lengths[::2], lengths[1::2], strict=True)]

        def with_file(eks: list[EventKey]) -> set[int]:
            return {ek.day for ek in eks if os.path.lexists(path_for(self.logs_dir, ek))}

        files = await asyncio.to_thread(with_file, eks)
        return _reachable(user_id, [(ek.day, n) for ek, n in zip(eks, counts, strict=True)], files)


def _reachable(user_id: str, counts: list[tuple[int, int]], files: set[int]) -> Iterator[int]:
    """The days of ``counts`` (day, buffered events) that have events, in order; a day
    with too many buffered to read raises when the reader comes to it."""
    for day, n in counts:
        if n > MAX_BUFFERED_READ:
            raise BufferedTooLargeError(
                f"user {user_id!r} has {n:,} events of day {day} buffered in Redis, "
                f"more than the {MAX_BUFFERED_READ:,} a query reads at once: they can "
                "be read once the drainer has moved them to the day's file"
            )
        if n or day in files:
            yield day


#: validates a line as JSON without building its objects
_check = msgspec.json.Decoder(msgspec.Raw).decode


def _day(ts: float) -> int:
    return int(ts // SECONDS_PER_DAY)
