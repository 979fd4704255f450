"""The client library for applications: post events to logpipe, retrying without duplicates.

``Client`` posts now and returns once the event is stored; ``Client.sender()`` buffers and
posts batches from a background thread; ``AsyncClient`` is the same for asyncio.

Every event gets an ``event_id`` before its first attempt, and every retry resends the very
same bytes, so once the server drops ids it has already stored, a retry after a timeout, a
reset connection, a ``503`` or a ``429`` can never store an event twice. What to retry and how
long to wait is decided in one pure function, :func:`retry_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import json
import os
import queue
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx

from logpipe_cli import __version__
from logpipe_cli.errors import ClientError, InvalidEventError
from logpipe_cli.events import validate_event

__all__ = [
    "AsyncClient",
    "AsyncSender",
    "BatchReceipt",
    "Client",
    "DeliveryError",
    "QueueFullError",
    "Receipt",
    "RefusedError",
    "RetryPolicy",
    "Sender",
    "UnavailableError",
    "new_event_id",
    "retry_delay",
]

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
_NDJSON = "application/x-ndjson"
_JSON = "application/json"

Event = dict[str, Any]


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
    """No attempt succeeded within the retry policy's time (the last reason is ``detail``)."""

    def __init__(self, detail: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(detail)
        self.attempts = attempts
        self.status = status


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
    attempt starts once ``max_total_s`` would be exceeded by the wait before it.
    """

    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_total_s: float = 60.0
    max_retry_after_s: float = 60.0
    jitter: float = 0.2


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
    if value.isdigit():
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


def _timestamp(value: float | datetime | None) -> int:
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


def _with_id(event: Mapping[str, Any]) -> Event:
    """``event`` with ``timestamp`` and ``event_id`` filled in when missing."""
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
    user_id: str,
    event: str,
    timestamp: float | datetime | None,
    event_id: str | None,
    fields: Mapping[str, Any],
) -> Event:
    """The event ``.log()`` sends: the named fields, then the extra ones."""
    for name in ("user_id", "event", "timestamp", "event_id"):
        if name in fields:
            raise InvalidEventError(f"{name}: give it as an argument, not as an extra field")
    return _with_id(
        {"user_id": user_id, "event": event, "timestamp": timestamp, "event_id": event_id, **fields}
    )


def _encode(event: Event) -> bytes:
    # allow_nan=False: NaN is not JSON, and the server would refuse the whole batch for it
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _checked_line(event: Event) -> bytes:
    """One NDJSON line, checked here as the server will check it, so that one bad event
    raises in the caller instead of getting a whole batch refused later."""
    try:
        line = _encode(event)
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"event is not JSON-serializable: {exc}") from None
    validate_event(event, now=time.time(), max_future_s=_LOCAL_MAX_FUTURE_S)
    return line


def _batch_body(lines: Iterable[bytes], gzip_min_bytes: int) -> tuple[bytes, dict[str, str]]:
    body = b"\n".join(lines) + b"\n"
    headers = {"content-type": _NDJSON}
    if len(body) > gzip_min_bytes:
        # mtime=0: the same batch is the same bytes on every attempt
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers["content-encoding"] = "gzip"
    return body, headers


# ---- answers ------------------------------------------------------------------------


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


def _refused(method: str, target: str, resp: httpx.Response) -> ClientError:
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


class _Attempts:
    """The retry loop's state, shared by the sync and async clients (sans I/O)."""

    def __init__(self, target: str, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.target = target
        self.policy = policy
        self.clock = clock
        self.started = clock()
        self.count = 0

    def wait_after(
        self, resp: httpx.Response | None, exc: httpx.TransportError | None = None
    ) -> float:
        """How long to sleep before the next attempt; raises :class:`UnavailableError`
        when the policy says to stop."""
        retry_after = None
        if resp is not None:
            retry_after = parse_retry_after(resp.headers.get("retry-after"), time.time())
            reason = f"answered {resp.status_code}"
        else:
            reason = f"failed: {str(exc) or type(exc).__name__}"
        delay = retry_delay(
            self.policy, self.count, self.clock() - self.started, retry_after, random.random()
        )
        if delay is None:
            raise UnavailableError(
                f"POST {self.target} {reason} ({self.count} attempts)",
                attempts=self.count,
                status=resp.status_code if resp is not None else None,
            )
        return delay


def _headers(token: str | None) -> dict[str, str]:
    headers = {"user-agent": f"logpipe-client/{__version__}"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return headers


def _receipt(event: Event, resp: httpx.Response, attempts: int) -> Receipt:
    body = _json(resp)
    body = body if isinstance(body, dict) else {}
    key = body.get("key")
    return Receipt(
        str(event["event_id"]),
        key if isinstance(key, str) else None,
        bool(body.get("duplicate", False)),
        attempts,
    )


def _batch_receipt(events: list[Event], resp: httpx.Response, attempts: int) -> BatchReceipt:
    body = _json(resp)
    accepted = body.get("accepted") if isinstance(body, dict) else None
    dups = body.get("duplicate_indexes") if isinstance(body, dict) else None
    return BatchReceipt(
        accepted if isinstance(accepted, int) else len(events),
        [str(e["event_id"]) for e in events],
        attempts,
        [i for i in dups if isinstance(i, int)] if isinstance(dups, list) else [],
    )


# ---- the sync client ----------------------------------------------------------------


class Client:
    """A blocking client: ``log()`` returns once the event is stored.

    ``url`` is the API's base URL; ``token`` is sent as ``Authorization: Bearer <token>``;
    ``timeout`` bounds each attempt (seconds), ``retry`` all of them together.
    ``transport``, ``sleep`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        retry: RetryPolicy | None = None,
        gzip_min_bytes: int = GZIP_MIN_BYTES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.gzip_min_bytes = gzip_min_bytes
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(timeout=timeout, headers=_headers(token), transport=transport)

    def log(
        self,
        user_id: str,
        event: str,
        timestamp: float | datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> Receipt:
        """Post one event (``POST /log``) and return once it is stored.

        ``timestamp`` defaults to now; ``event_id`` to a fresh :func:`new_event_id`.
        Raises :class:`RefusedError` (no retry) for a 4xx other than 429,
        :class:`UnavailableError` when the retry policy runs out.
        """
        ev = make_event(user_id, event, timestamp, event_id, fields)
        try:
            body = _encode(ev)
        except (TypeError, ValueError) as exc:
            raise InvalidEventError(f"event is not JSON-serializable: {exc}") from None
        resp, attempts = self._post("/log", body, {"content-type": _JSON})
        return _receipt(ev, resp, attempts)

    def log_many(self, events: Iterable[Mapping[str, Any]]) -> BatchReceipt:
        """Post a batch (``POST /logs``, NDJSON, gzip above ``gzip_min_bytes``).

        Each event needs ``user_id`` and ``event``; ``timestamp`` and ``event_id`` are
        filled in when missing. The server stores all of them or, if one is invalid, none
        (:class:`RefusedError` whose ``errors`` lists them).
        """
        batch = [_with_id(e) for e in events]
        return self._post_batch(batch, [_encode(e) for e in batch])

    def sender(
        self,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        *,
        max_queue: int = 100_000,
        put_timeout_s: float | None = 10.0,
        on_error: Callable[[ClientError, int], None] | None = None,
    ) -> Sender:
        """A :class:`Sender` that buffers events and posts them in batches from a thread."""
        return Sender(
            self,
            batch_size,
            flush_seconds,
            max_queue=max_queue,
            put_timeout_s=put_timeout_s,
            on_error=on_error,
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _post_batch(self, batch: list[Event], lines: list[bytes]) -> BatchReceipt:
        body, headers = _batch_body(lines, self.gzip_min_bytes)
        resp, attempts = self._post("/logs", body, headers)
        return _batch_receipt(batch, resp, attempts)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, int]:
        target = self.url + path
        attempts = _Attempts(target, self.retry, self._clock)
        while True:
            attempts.count += 1
            try:
                resp = self._http.post(target, content=body, headers=headers)
            except httpx.TransportError as exc:
                wait = attempts.wait_after(None, exc)
            else:
                if resp.status_code < 300:
                    return resp, attempts.count
                if resp.status_code not in RETRY_STATUSES:
                    raise _refused("POST", target, resp)
                wait = attempts.wait_after(resp)
            self._sleep(wait)


# ---- the sync sender ----------------------------------------------------------------


class _Flush:
    """A marker in the queue: everything before it has been posted once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class Sender:
    """Buffers events and posts them in batches from one background thread.

    ``log()`` only checks and queues the event (thread-safe). The thread posts a batch when
    it holds ``batch_size`` events (or about 512 KiB), or ``flush_seconds`` after its first
    event, with the client's retries. Leaving the ``with`` block (or ``close()``) posts
    everything still queued and joins the thread.

    When full: the queue holds ``max_queue`` events; ``log()`` then waits up to
    ``put_timeout_s`` for room (``None`` = forever, ``0`` = not at all) and raises
    :class:`QueueFullError`. A batch that cannot be delivered (refused, or retries ran out)
    is passed to ``on_error(error, events_lost)``; without one, ``close()`` raises
    :class:`DeliveryError` counting them. Either way the thread goes on with the next batch.
    """

    def __init__(
        self,
        client: Client,
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
        self._queue: queue.Queue[tuple[Event, bytes] | _Flush | object] = queue.Queue(max_queue)
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="logpipe-sender", daemon=True)
        self._thread.start()

    @property
    def thread_id(self) -> int | None:
        """The background thread's ident (a log handler ignores records made there)."""
        return self._thread.ident

    def log(
        self,
        user_id: str,
        event: str,
        timestamp: float | datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event; return its ``event_id``. Raises :class:`InvalidEventError` for
        an event the server would refuse, :class:`QueueFullError` when there is no room."""
        ev = make_event(user_id, event, timestamp, event_id, fields)
        self._put((ev, _checked_line(ev)))
        return str(ev["event_id"])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call has been posted (or given up on).
        Returns ``False`` if ``timeout`` passed first."""
        marker = _Flush()
        self._put(marker, block_timeout=timeout)
        return marker.done.wait(timeout)

    def close(self) -> None:
        """Post everything queued, stop the thread and join it (idempotent).

        Raises :class:`DeliveryError` if events were lost and there is no ``on_error``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)  # blocks while full: the thread is emptying it
        self._thread.join()
        self._send_stragglers()
        if self.failed and self.on_error is None:
            raise DeliveryError(
                f"{self.failed} events were not delivered: {self.errors[-1].detail}",
                failed=self.failed,
                errors=self.errors,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _put(self, item: tuple[Event, bytes] | _Flush, block_timeout: float | None = -1) -> None:
        if self._closed:
            raise ClientError("the sender is closed")
        timeout = self.put_timeout_s if block_timeout == -1 else block_timeout
        try:
            if timeout == 0:
                self._queue.put_nowait(item)
            else:
                self._queue.put(item, timeout=timeout)
        except queue.Full:
            raise QueueFullError(
                f"the sender's queue stayed full ({self._queue.maxsize} events) for "
                f"{timeout} s: the server is slow or unreachable"
            ) from None

    def _run(self) -> None:
        batch: list[tuple[Event, bytes]] = []
        size = 0
        deadline = 0.0
        while True:
            timeout = None if not batch else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None  # the oldest buffered event has waited flush_seconds
            if isinstance(item, tuple):
                if not batch:
                    deadline = time.monotonic() + self.flush_seconds
                batch.append(item)
                size += len(item[1]) + 1
                if len(batch) < self.batch_size and size < self.max_batch_bytes:
                    continue
            self._send(batch)
            batch, size = [], 0
            if isinstance(item, _Flush):
                item.done.set()
            elif item is _STOP:
                return

    def _send_stragglers(self) -> None:
        # a log() that raced with close() may have queued its event behind the stop marker
        batch: list[tuple[Event, bytes]] = []
        markers: list[_Flush] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                batch.append(item)
            elif isinstance(item, _Flush):
                markers.append(item)
        for start in range(0, len(batch), self.batch_size):
            self._send(batch[start : start + self.batch_size])
        for marker in markers:
            marker.done.set()

    def _send(self, batch: list[tuple[Event, bytes]]) -> None:
        if not batch:
            return
        try:
            self.client._post_batch([e for e, _ in batch], [line for _, line in batch])
        except ClientError as exc:
            self._failed(exc, len(batch))
        except Exception as exc:  # the thread must live on, or close() would wait forever
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


# ---- the async client ---------------------------------------------------------------


class AsyncClient:
    """:class:`Client` for asyncio: ``await client.log(...)``; ``async with`` closes it."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        retry: RetryPolicy | None = None,
        gzip_min_bytes: int = GZIP_MIN_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.gzip_min_bytes = gzip_min_bytes
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.AsyncClient(
            timeout=timeout, headers=_headers(token), transport=transport
        )

    async def log(
        self,
        user_id: str,
        event: str,
        timestamp: float | datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> Receipt:
        """Post one event and return once it is stored; see :meth:`Client.log`."""
        ev = make_event(user_id, event, timestamp, event_id, fields)
        try:
            body = _encode(ev)
        except (TypeError, ValueError) as exc:
            raise InvalidEventError(f"event is not JSON-serializable: {exc}") from None
        resp, attempts = await self._post("/log", body, {"content-type": _JSON})
        return _receipt(ev, resp, attempts)

    async def log_many(self, events: Iterable[Mapping[str, Any]]) -> BatchReceipt:
        """Post a batch; see :meth:`Client.log_many`."""
        batch = [_with_id(e) for e in events]
        return await self._post_batch(batch, [_encode(e) for e in batch])

    def sender(
        self,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        *,
        max_queue: int = 100_000,
        put_timeout_s: float | None = 10.0,
        on_error: Callable[[ClientError, int], None] | None = None,
    ) -> AsyncSender:
        """An :class:`AsyncSender`: ``async with client.sender() as s: await s.log(...)``."""
        return AsyncSender(
            self,
            batch_size,
            flush_seconds,
            max_queue=max_queue,
            put_timeout_s=put_timeout_s,
            on_error=on_error,
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post_batch(self, batch: list[Event], lines: list[bytes]) -> BatchReceipt:
        body, headers = _batch_body(lines, self.gzip_min_bytes)
        resp, attempts = await self._post("/logs", body, headers)
        return _batch_receipt(batch, resp, attempts)

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[httpx.Response, int]:
        target = self.url + path
        attempts = _Attempts(target, self.retry, self._clock)
        while True:
            attempts.count += 1
            try:
                resp = await self._http.post(target, content=body, headers=headers)
            except httpx.TransportError as exc:
                wait = attempts.wait_after(None, exc)
            else:
                if resp.status_code < 300:
                    return resp, attempts.count
                if resp.status_code not in RETRY_STATUSES:
                    raise _refused("POST", target, resp)
                wait = attempts.wait_after(resp)
            await self._sleep(wait)


class AsyncSender:
    """:class:`Sender` for asyncio: a background task posts the batches.

    ``await log(...)`` waits up to ``put_timeout_s`` for room in a full queue, then raises
    :class:`QueueFullError`; leaving ``async with`` posts everything and ends the task.
    """

    def __init__(
        self,
        client: AsyncClient,
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
        self.sent = 0
        self.failed = 0
        self.errors: list[ClientError] = []
        self._queue: asyncio.Queue[tuple[Event, bytes] | object] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def log(
        self,
        user_id: str,
        event: str,
        timestamp: float | datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event; return its ``event_id``. See :meth:`Sender.log`."""
        if self._closed:
            raise ClientError("the sender is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        ev = make_event(user_id, event, timestamp, event_id, fields)
        item = (ev, _checked_line(ev))
        try:
            if self.put_timeout_s == 0:
                self._queue.put_nowait(item)
            else:
                await asyncio.wait_for(self._queue.put(item), self.put_timeout_s)
        except (asyncio.QueueFull, TimeoutError):
            raise QueueFullError(
                f"the sender's queue stayed full ({self._queue.maxsize} events) for "
                f"{self.put_timeout_s} s: the server is slow or unreachable"
            ) from None
        return str(ev["event_id"])

    async def aclose(self) -> None:
        """Post everything queued and end the task; see :meth:`Sender.close`."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(_STOP)
            await self._task
        if self.failed and self.on_error is None:
            raise DeliveryError(
                f"{self.failed} events were not delivered: {self.errors[-1].detail}",
                failed=self.failed,
                errors=self.errors,
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        batch: list[tuple[Event, bytes]] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = 0.0
        while True:
            try:
                if batch:
                    item = await asyncio.wait_for(
                        self._queue.get(), max(0.0, deadline - loop.time())
                    )
                else:
                    item = await self._queue.get()
            except TimeoutError:
                item = None
            if isinstance(item, tuple):
                if not batch:
                    deadline = loop.time() + self.flush_seconds
                batch.append(item)
                size += len(item[1]) + 1
                if len(batch) < self.batch_size and size < self.max_batch_bytes:
                    continue
            await self._send(batch)
            batch, size = [], 0
            if item is _STOP:
                return

    async def _send(self, batch: list[tuple[Event, bytes]]) -> None:
        if not batch:
            return
        try:
            await self.client._post_batch([e for e, _ in batch], [line for _, line in batch])
        except ClientError as exc:
            self._failed(exc, len(batch))
        except Exception as exc:  # the task must live on, or aclose() would wait forever
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
