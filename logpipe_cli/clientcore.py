"""The client library's core, without I/O: everything ``Client`` and ``AsyncClient`` share.

The pattern h11 and httpcore use: this module builds requests, decides what to retry and
how long to wait, reads answers and batches events, but never touches a socket, a thread or
an event loop. :mod:`logpipe_cli.appclient` wraps it in two thin shells, one blocking and
one for asyncio, whose only job is to send, sleep and queue. So each behaviour is written
once, and the retry decision is one pure function, :func:`retry_delay`.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Generic, Self, TypeVar

import httpx

from logpipe_cli import __version__
from logpipe_cli.errors import ClientError, InvalidEventError
from logpipe_cli.events import validate_event

EVENT_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: answers that mean "nothing was done, come back later"; 502/504 are what proxies say
#: when the API behind them is restarting, and an id makes resending them safe too
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: bodies above this are gzip-encoded; below it, compression costs more CPU than it saves
GZIP_MIN_BYTES = 8 * 1024
#: the server refuses bodies above 1 MiB by default (server.max_body_bytes), also after
#: decompression, so a sender's batch stays well under it
MAX_BATCH_BYTES = 512 * 1024
#: the local check of an event must not refuse what the server accepts: the server allows
#: a day of clock skew by default (server.max_future_seconds)
_LOCAL_MAX_FUTURE_S = 86400
JSON = "application/json"
NDJSON = "application/x-ndjson"

Event = dict[str, Any]
#: what a sender queues: the event and its checked JSON line
Item = tuple[Event, bytes]
#: what ``log()`` takes as a time: Unix seconds, a datetime, or ``None`` for now
When = float | datetime | None
R = TypeVar("R")


# ---- errors -------------------------------------------------------------------------


class RefusedError(ClientError):
    """The server refused the request (a 4xx other than 429): resending cannot help.

    ``status`` is the HTTP status, ``detail`` and ``field`` what the server said, and
    ``errors`` the ``(index, detail)`` pairs a refused batch lists.
    """

    exit_code = 2

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        field: str | None = None,
        errors: list[tuple[int, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.field = field
        self.errors = errors or []


class UnavailableError(ClientError):
    """No attempt succeeded within the retry policy (the last reason is ``detail``).

    ``status`` is the last answer's status (``None``: the last attempt got no answer) and
    ``reason`` the last failure alone: the server's ``detail``, or the transport error.
    """

    def __init__(
        self, detail: str, *, attempts: int, status: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(detail)
        self.attempts = attempts
        self.status = status
        self.reason = reason or detail


class QueueFullError(ClientError):
    """A sender's queue stayed full for ``put_timeout_s``: the server cannot keep up."""


class DeliveryError(ClientError):
    """A sender could not deliver some events; ``errors`` holds each batch's error."""

    def __init__(self, detail: str, *, failed: int, errors: list[ClientError]) -> None:
        super().__init__(detail)
        self.failed = failed
        self.errors = errors


# ---- retry policy -------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How a client waits between attempts, and for how long in all.

    The n-th wait is ``initial_backoff_s * 2**(n-1)``, at most ``max_backoff_s``, less up to
    ``jitter`` of it at random (so clients that failed together do not retry together);
    a ``Retry-After`` from the server replaces it (capped at ``max_retry_after_s``). No
    attempt starts once ``max_total_s`` would be exceeded by the wait before it, nor after
    ``max_retries`` retries (``None``: only the time bounds them).
    """

    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_total_s: float = 60.0
    max_retry_after_s: float = 60.0
    jitter: float = 0.2
    max_retries: int | None = None


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    elapsed_s: float,
    retry_after_s: float | None = None,
    rand: float = 0.0,
) -> float | None:
    """Seconds to wait after failed attempt number ``attempt`` (from 1), or ``None``: give up.

    ``elapsed_s`` is the time since the first attempt started; ``rand`` is in [0, 1) and
    scales the jitter (0 = none), passed in so that this function stays pure.
    """
    if policy.max_retries is not None and attempt > policy.max_retries:
        return None
    if retry_after_s is not None:
        delay = min(max(retry_after_s, 0.0), policy.max_retry_after_s)
    else:
        delay = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1))
        delay *= 1.0 - policy.jitter * rand
    if elapsed_s + delay > policy.max_total_s:
        return None
    return delay


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header in seconds from ``now`` (Unix time); ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²"
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


# ---- events -------------------------------------------------------------------------


def new_event_id() -> str:
    """A fresh id: 48 bits of milliseconds then 80 random bits, 32 hex digits.

    Ids from one process sort roughly by time (ULID-like), which keeps them readable in
    the files; 80 random bits make a collision within a dedupe window negligible.
    """
    ms = time.time_ns() // 1_000_000
    return f"{ms & (2**48 - 1):012x}{int.from_bytes(os.urandom(10), 'big'):020x}"


def _timestamp(value: When) -> int:
    if value is None:
        return int(time.time())
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEventError(
            f"timestamp: must be Unix seconds or a datetime, got {type(value).__name__}",
            "timestamp",
        )
    return int(value)


def with_id(event: Mapping[str, Any]) -> Event:
    """``event`` with ``timestamp`` and ``event_id`` filled in when missing.

    Both, always together: the id is deduplicated within its user's *day*, so an event
    whose time were left to the server would land in the next day's list when a retry
    crosses midnight UTC, and be stored twice. Its time is fixed here, once, before the
    first attempt, like its id.
    """
    out = dict(event)
    out["timestamp"] = _timestamp(out.get("timestamp"))
    event_id = out.get("event_id")
    if event_id is None:
        out["event_id"] = new_event_id()
    elif not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id):
        raise InvalidEventError(
            "event_id: must be 1-128 characters of letters, digits and . _ : -", "event_id"
        )
    return out


def make_event(
    user_id: str, event: str, timestamp: When, event_id: str | None, fields: Mapping[str, Any]
) -> Event:
    """The event ``.log()`` sends: the named fields, then the extra ones."""
    for name in ("user_id", "event", "timestamp", "event_id"):
        if name in fields:
            raise InvalidEventError(f"{name}: give it as an argument, not as an extra field")
    return with_id(
        {"user_id": user_id, "event": event, "timestamp": timestamp, "event_id": event_id, **fields}
    )


def encode(event: Event) -> bytes:
    """One compact JSON line; :class:`InvalidEventError` for what is not JSON."""
    try:
        # allow_nan=False: NaN is not JSON, and the server would refuse the whole batch
        return json.dumps(
            event, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"event is not JSON-serializable: {exc}") from None


def checked_line(event: Event) -> bytes:
    """One NDJSON line, checked here as the server will check it, so that one bad event
    raises in the caller instead of getting a whole batch refused later."""
    line = encode(event)
    validate_event(event, now=time.time(), max_future_s=_LOCAL_MAX_FUTURE_S)
    return line


def line_with_id(line: bytes) -> bytes:
    """A JSON line as it is, with an ``event_id`` added if it is an object without one.

    For events replayed from a file: what the server should judge (a line that is not
    JSON, a missing timestamp) is left for it to judge; only the id that makes a retry
    safe is added.
    """
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict) or "event_id" in event:
        return line
    event["event_id"] = new_event_id()
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def batch_body(lines: Iterable[bytes], gzip_min_bytes: int) -> tuple[bytes, dict[str, str]]:
    """A ``POST /logs`` body and its headers: NDJSON, gzip-encoded above ``gzip_min_bytes``."""
    body = b"\n".join(lines) + b"\n"
    headers = {"content-type": NDJSON}
    if len(body) > gzip_min_bytes:
        # mtime=0: the same batch is the same bytes on every attempt
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers["content-encoding"] = "gzip"
    return body, headers


def request_headers(token: str | None) -> dict[str, str]:
    """The headers every request carries: who we are, and the token if there is one."""
    headers = {"user-agent": f"logpipe-client/{__version__}"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


# ---- answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A successful (2xx) answer: its status, its JSON body (``None`` if it had none), and
    how many attempts it took."""

    status: int
    body: Any
    attempts: int


@dataclass(frozen=True)
class Receipt:
    """One stored event: its id, the Redis key it went to, and how many attempts it took."""

    event_id: str
    key: str | None
    duplicate: bool
    attempts: int


@dataclass(frozen=True)
class BatchReceipt:
    """A stored batch: how many events the server took, their ids in order, attempts,
    and the indexes of the events it had stored before (the answer's
    ``duplicate_indexes``: a retry of an answer that was lost, or an id sent twice)."""

    accepted: int
    event_ids: list[str]
    attempts: int
    duplicates: list[int] = field(default_factory=list)


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def receipt(event: Event, answer: Answer) -> Receipt:
    """What ``POST /log`` answered for ``event``."""
    body = answer.body if isinstance(answer.body, dict) else {}
    key = body.get("key")
    return Receipt(
        str(event["event_id"]),
        key if isinstance(key, str) else None,
        bool(body.get("duplicate", False)),
        answer.attempts,
    )


def batch_receipt(events: list[Event], answer: Answer) -> BatchReceipt:
    """What ``POST /logs`` answered for ``events``."""
    body = answer.body if isinstance(answer.body, dict) else {}
    accepted, dups = body.get("accepted"), body.get("duplicate_indexes")
    return BatchReceipt(
        accepted if isinstance(accepted, int) else len(events),
        [str(e["event_id"]) for e in events],
        answer.attempts,
        [i for i in dups if isinstance(i, int)] if isinstance(dups, list) else [],
    )


def _server_detail(resp: httpx.Response) -> str:
    body = _json(resp)
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return resp.text[:200] or resp.reason_phrase


def refused(method: str, target: str, resp: httpx.Response) -> ClientError:
    """The error for an answer that is neither success nor worth a retry."""
    body = _json(resp)
    if not isinstance(body, dict):
        return RefusedError(
            f"{method} {target} answered {resp.status_code}: {resp.text[:200]}",
            status=resp.status_code,
        )
    errors = [
        (int(e["index"]), str(e["detail"]))
        for e in body.get("errors") or []
        if isinstance(e, dict) and "index" in e and "detail" in e
    ]
    detail = str(body.get("detail", resp.reason_phrase))
    field = body.get("field") if isinstance(body.get("field"), str) else None
    if resp.status_code >= 500:  # e.g. 500: a key of another type; not ours to fix by resending
        return ClientError(f"{method} {target} answered {resp.status_code}: {detail}")
    return RefusedError(detail, status=resp.status_code, field=field, errors=errors)


# ---- one POST and its retries -------------------------------------------------------


class Exchange(Generic[R]):
    """One ``POST`` and its retries, as a state machine fed by whoever does the I/O.

    The shell sends ``body`` with ``headers`` to ``url`` and passes what came back (a
    response or a transport error) to :meth:`outcome`, which says how long to sleep
    before the next attempt, or ``None``: done, :attr:`result` holds the answer read.
    Every attempt sends the very same bytes.
    """

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        policy: RetryPolicy,
        clock: Callable[[], float],
        read: Callable[[Answer], R],
    ) -> None:
        self.url = url
        self.body = body
        self.headers = headers
        self.policy = policy
        self.attempts = 0
        self._clock = clock
        self._read = read
        self._started = clock()
        self._result: tuple[R] | None = None

    def outcome(self, got: httpx.Response | httpx.TransportError) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` once stored. Raises
        :class:`RefusedError` (or :class:`ClientError` for a 5xx that is not worth a
        retry) and :class:`UnavailableError` when the policy says to stop."""
        self.attempts += 1
        retry_after = None
        status = None
        if isinstance(got, httpx.Response):
            status = got.status_code
            if status < 300:
                self._result = (self._read(Answer(status, _json(got), self.attempts)),)
                return None
            if status not in RETRY_STATUSES:
                raise refused("POST", self.url, got)
            retry_after = parse_retry_after(got.headers.get("retry-after"), time.time())
            what, reason = f"answered {status}", _server_detail(got)
        else:
            reason = str(got) or type(got).__name__
            what = f"failed: {reason}"
        delay = retry_delay(
            self.policy, self.attempts, self._clock() - self._started, retry_after, random.random()
        )
        if delay is None:
            raise UnavailableError(
                f"POST {self.url} {what} ({self.attempts} attempts)",
                attempts=self.attempts,
                status=status,
                reason=reason,
            )
        return delay

    @property
    def result(self) -> R:
        """The answer, read; only once :meth:`outcome` returned ``None``."""
        if self._result is None:
            raise RuntimeError("the exchange has not succeeded")
        return self._result[0]


# ---- what both clients share --------------------------------------------------------

TransportT = TypeVar("TransportT")
SleepT = TypeVar("SleepT")
SenderT = TypeVar("SenderT", bound="SenderCore[Any]")
ClientT = TypeVar("ClientT", bound="ClientCore[Any, Any, Any]")


class Closing:
    """``with x:`` closes ``x``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClosing:
    """``async with x:`` closes ``x``."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ClientCore(Generic[TransportT, SleepT, SenderT]):
    """The state and request building of a client; the shells add the I/O.

    ``url`` is the API's base URL; ``token`` is sent as ``Authorization: Bearer <token>``;
    ``timeout`` bounds each attempt (seconds), ``retry`` all of them together.
    ``transport``, ``sleep`` and ``clock`` are for tests.
    """

    #: the sender class :meth:`sender` makes; set by each shell
    _sender_type: type[SenderT]
    _default_sleep: SleepT

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        retry: RetryPolicy | None = None,
        gzip_min_bytes: int = GZIP_MIN_BYTES,
        transport: TransportT | None = None,
        sleep: SleepT | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.gzip_min_bytes = gzip_min_bytes
        self._sleep: SleepT = sleep if sleep is not None else self._default_sleep
        self._clock = clock
        self._open(timeout, request_headers(token), transport)

    def _open(self, timeout: float, headers: dict[str, str], transport: TransportT | None) -> None:
        raise NotImplementedError

    def sender(
        self,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        *,
        max_queue: int = 100_000,
        put_timeout_s: float | None = 10.0,
        on_error: Callable[[ClientError, int], None] | None = None,
    ) -> SenderT:
        """A sender that buffers events and posts them in batches in the background:
        ``with client.sender() as s: s.log(...)`` (``async with``/``await`` for asyncio)."""
        return self._sender_type(
            self,
            batch_size,
            flush_seconds,
            max_queue=max_queue,
            put_timeout_s=put_timeout_s,
            on_error=on_error,
        )

    def _exchange(
        self, path: str, body: bytes, headers: dict[str, str], read: Callable[[Answer], R]
    ) -> Exchange[R]:
        return Exchange(self.url + path, body, headers, self.retry, self._clock, read)

    def _log_exchange(self, ev: Event) -> Exchange[Receipt]:
        return self._exchange("/log", encode(ev), {"content-type": JSON}, partial(receipt, ev))

    def _many_exchange(self, events: Iterable[Mapping[str, Any]]) -> Exchange[BatchReceipt]:
        batch = [with_id(e) for e in events]
        return self._batch_exchange([(e, encode(e)) for e in batch])

    def _batch_exchange(self, items: list[Item]) -> Exchange[BatchReceipt]:
        body, headers = batch_body([line for _, line in items], self.gzip_min_bytes)
        events = [e for e, _ in items]
        return self._exchange("/logs", body, headers, partial(batch_receipt, events))

    def _body_exchange(self, path: str, body: bytes, content_type: str) -> Exchange[Answer]:
        return self._exchange(path, body, {"content-type": content_type}, lambda a: a)


# ---- what both senders share --------------------------------------------------------


class SenderCore(Generic[ClientT]):
    """A sender's settings, its batching and its tally; the shells add a queue and a
    thread (or task) that posts.

    A batch goes out when it holds ``batch_size`` events (or about ``max_batch_bytes``),
    or ``flush_seconds`` after its first event.
    """

    def __init__(
        self,
        client: ClientT,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        *,
        max_queue: int = 100_000,
        put_timeout_s: float | None = 10.0,
        on_error: Callable[[ClientError, int], None] | None = None,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        if batch_size < 1 or flush_seconds <= 0 or max_queue < 1:
            raise ValueError("batch_size, flush_seconds and max_queue must be positive")
        self.client = client
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.put_timeout_s = put_timeout_s
        self.max_batch_bytes = max_batch_bytes
        self.on_error = on_error
        #: events stored, and events lost (refused or undeliverable), so far
        self.sent = 0
        self.failed = 0
        self.errors: list[ClientError] = []
        self._closed = False
        self._batch: list[Item] = []
        self._size = 0
        self._deadline = 0.0
        self._start(max_queue)

    def _start(self, max_queue: int) -> None:
        raise NotImplementedError

    def _item(self, ev: Event) -> Item:
        """What ``log()`` queues: the event, checked as the server will check it."""
        self._check_open()
        return ev, checked_line(ev)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError("the sender is closed")

    def _queue_full(self, maxsize: int, timeout: float | None) -> QueueFullError:
        return QueueFullError(
            f"the sender's queue stayed full ({maxsize} events) for "
            f"{timeout} s: the server is slow or unreachable"
        )

    # -- batching: what the posting thread or task does with what its queue gives

    def _wait_s(self) -> float | None:
        """How long to wait for the next item: until the batch's flush time, if any."""
        return None if not self._batch else max(0.0, self._deadline - time.monotonic())

    def _batch_ready(self, item: object) -> bool:
        """Take what the queue gave (``None``: the wait ran out; a marker: post now);
        ``True`` when the batch must be posted now."""
        if not isinstance(item, tuple):
            return True
        if not self._batch:
            self._deadline = time.monotonic() + self.flush_seconds
        self._batch.append(item)
        self._size += len(item[1]) + 1
        return len(self._batch) >= self.batch_size or self._size >= self.max_batch_bytes

    def _take(self) -> list[Item]:
        batch, self._batch, self._size = self._batch, [], 0
        return batch

    # -- the tally

    @contextlib.contextmanager
    def _delivery(self, batch: list[Item]) -> Iterator[None]:
        """Count how posting ``batch`` ended. Nothing escapes: the thread or task must
        live on, or closing would wait for ever."""
        try:
            yield
        except ClientError as exc:
            self._failed(exc, len(batch))
        except Exception as exc:
            self._failed(ClientError(f"sending a batch failed: {exc!r}"), len(batch))
        else:
            self.sent += len(batch)

    def _failed(self, exc: ClientError, events: int) -> None:
        self.failed += events
        if self.on_error is not None:
            with contextlib.suppress(Exception):
                self.on_error(exc, events)
        else:
            self.errors.append(exc)

    def _raise_if_lost(self) -> None:
        if self.failed and self.on_error is None:
            raise DeliveryError(
                f"{self.failed} events were not delivered: {self.errors[-1].detail}",
                failed=self.failed,
                errors=self.errors,
            )
