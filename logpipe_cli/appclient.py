"""The client library for applications: post events to logpipe, retrying without duplicates.

``Client`` posts now and returns once the event is stored; ``Client.sender()`` buffers and
posts batches from a background thread; ``AsyncClient`` is the same for asyncio.

Every event gets an ``event_id`` (and a ``timestamp``) before its first attempt, and every
retry resends the very same bytes, so once the server drops ids it has already stored, a
retry after a timeout, a reset connection, a ``503`` or a ``429`` can never store an event
twice. What to retry and how long to wait is decided in one pure function,
:func:`retry_delay`.

This module is the I/O: two thin shells, blocking and asyncio, around the core in
:mod:`logpipe_cli.clientcore`, which builds the requests, decides the retries, reads the
answers and batches the events for both.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx

from logpipe_cli.clientcore import (
    EVENT_ID_RE,
    GZIP_MIN_BYTES,
    JSON,
    MAX_BATCH_BYTES,
    RETRY_STATUSES,
    Answer,
    AsyncClosing,
    BatchReceipt,
    ClientCore,
    Closing,
    DeliveryError,
    Exchange,
    Item,
    QueueFullError,
    R,
    Receipt,
    RefusedError,
    RetryPolicy,
    SenderCore,
    UnavailableError,
    When,
    make_event,
    new_event_id,
    parse_retry_after,
    retry_delay,
)

__all__ = [
    "EVENT_ID_RE",
    "GZIP_MIN_BYTES",
    "MAX_BATCH_BYTES",
    "RETRY_STATUSES",
    "Answer",
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
    "make_event",
    "new_event_id",
    "parse_retry_after",
    "retry_delay",
]


class _Flush:
    """A marker in the queue: everything before it has been posted once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


# ---- blocking -----------------------------------------------------------------------


class Sender(SenderCore["Client"], Closing):
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

    def _start(self, max_queue: int) -> None:
        self._queue: queue.Queue[Item | _Flush | object] = queue.Queue(max_queue)
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
        timestamp: When = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event; return its ``event_id``. Raises :class:`InvalidEventError` for
        an event the server would refuse, :class:`QueueFullError` when there is no room."""
        item = self._item(make_event(user_id, event, timestamp, event_id, fields))
        self._put(item)
        return str(item[0]["event_id"])

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
        self._raise_if_lost()

    def _put(self, item: Item | _Flush, block_timeout: float | None = -1) -> None:
        self._check_open()
        timeout = self.put_timeout_s if block_timeout == -1 else block_timeout
        try:
            if timeout == 0:
                self._queue.put_nowait(item)
            else:
                self._queue.put(item, timeout=timeout)
        except queue.Full:
            raise self._queue_full(self._queue.maxsize, timeout) from None

    def _run(self) -> None:
        item: object = None
        while item is not _STOP:
            try:
                item = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                item = None  # the oldest buffered event has waited flush_seconds
            if self._batch_ready(item):
                self._send(self._take())
            if isinstance(item, _Flush):
                item.done.set()

    def _send_stragglers(self) -> None:
        # a log() that raced with close() may have queued its event behind the stop marker
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple) and self._batch_ready(item):
                self._send(self._take())
            elif isinstance(item, _Flush):
                item.done.set()
        self._send(self._take())

    def _send(self, batch: list[Item]) -> None:
        if batch:
            with self._delivery(batch):
                self.client._post(self.client._batch_exchange(batch))


class Client(ClientCore[httpx.BaseTransport, Callable[[float], None], Sender], Closing):
    """A blocking client: ``log()`` returns once the event is stored.

    ``url`` is the API's base URL; ``token`` is sent as ``Authorization: Bearer <token>``;
    ``timeout`` bounds each attempt (seconds), ``retry`` all of them together.
    ``transport``, ``sleep`` and ``clock`` are for tests.
    """

    _sender_type = Sender
    _default_sleep = staticmethod(time.sleep)

    def _open(
        self, timeout: float, headers: dict[str, str], transport: httpx.BaseTransport | None
    ) -> None:
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def log(
        self,
        user_id: str,
        event: str,
        timestamp: When = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> Receipt:
        """Post one event (``POST /log``) and return once it is stored.

        ``timestamp`` defaults to now; ``event_id`` to a fresh :func:`new_event_id`.
        Raises :class:`RefusedError` (no retry) for a 4xx other than 429,
        :class:`UnavailableError` when the retry policy runs out.
        """
        return self._post(
            self._log_exchange(make_event(user_id, event, timestamp, event_id, fields))
        )

    def log_many(self, events: Iterable[Mapping[str, Any]]) -> BatchReceipt:
        """Post a batch (``POST /logs``, NDJSON, gzip above ``gzip_min_bytes``).

        Each event needs ``user_id`` and ``event``; ``timestamp`` and ``event_id`` are
        filled in when missing. The server stores all of them or, if one is invalid, none
        (:class:`RefusedError` whose ``errors`` lists them).
        """
        return self._post(self._many_exchange(events))

    def post_body(self, path: str, body: bytes, content_type: str = JSON) -> Answer:
        """``POST`` a body encoded elsewhere (e.g. events replayed from a file) to ``path``,
        with the same retries and errors as :meth:`log`; nothing is added to it, so only
        events that carry an ``event_id`` are safe from duplicates."""
        return self._post(self._body_exchange(path, body, content_type))

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _post(self, exchange: Exchange[R]) -> R:
        while (wait := exchange.outcome(self._attempt(exchange))) is not None:
            self._sleep(wait)
        return exchange.result

    def _attempt(self, exchange: Exchange[Any]) -> httpx.Response | httpx.TransportError:
        try:
            return self._http.post(exchange.url, content=exchange.body, headers=exchange.headers)
        except httpx.TransportError as exc:
            return exc


# ---- asyncio ------------------------------------------------------------------------


class AsyncSender(SenderCore["AsyncClient"], AsyncClosing):
    """:class:`Sender` for asyncio: a background task posts the batches.

    ``await log(...)`` waits up to ``put_timeout_s`` for room in a full queue, then raises
    :class:`QueueFullError`; leaving ``async with`` posts everything and ends the task.
    """

    def _start(self, max_queue: int) -> None:
        self._queue: asyncio.Queue[Item | object] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None

    async def log(
        self,
        user_id: str,
        event: str,
        timestamp: When = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event; return its ``event_id``. See :meth:`Sender.log`."""
        item = self._item(make_event(user_id, event, timestamp, event_id, fields))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        try:
            if self.put_timeout_s == 0:
                self._queue.put_nowait(item)
            else:
                await asyncio.wait_for(self._queue.put(item), self.put_timeout_s)
        except (asyncio.QueueFull, TimeoutError):
            raise self._queue_full(self._queue.maxsize, self.put_timeout_s) from None
        return str(item[0]["event_id"])

    async def aclose(self) -> None:
        """Post everything queued and end the task; see :meth:`Sender.close`."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await self._queue.put(_STOP)
            await self._task
        self._raise_if_lost()

    async def _run(self) -> None:
        item: object = None
        while item is not _STOP:
            try:
                item = await asyncio.wait_for(self._queue.get(), self._wait_s())
            except TimeoutError:
                item = None  # the oldest buffered event has waited flush_seconds
            if self._batch_ready(item) and (batch := self._take()):
                with self._delivery(batch):
                    await self.client._post(self.client._batch_exchange(batch))


class AsyncClient(
    ClientCore[httpx.AsyncBaseTransport, Callable[[float], Awaitable[None]], AsyncSender],
    AsyncClosing,
):
    """:class:`Client` for asyncio: ``await client.log(...)``; ``async with`` closes it."""

    _sender_type = AsyncSender
    _default_sleep = staticmethod(asyncio.sleep)

    def _open(
        self, timeout: float, headers: dict[str, str], transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    async def log(
        self,
        user_id: str,
        event: str,
        timestamp: When = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> Receipt:
        """Post one event and return once it is stored; see :meth:`Client.log`."""
        return await self._post(
            self._log_exchange(make_event(user_id, event, timestamp, event_id, fields))
        )

    async def log_many(self, events: Iterable[Mapping[str, Any]]) -> BatchReceipt:
        """Post a batch; see :meth:`Client.log_many`."""
        return await self._post(self._many_exchange(events))

    async def post_body(self, path: str, body: bytes, content_type: str = JSON) -> Answer:
        """``POST`` a body encoded elsewhere; see :meth:`Client.post_body`."""
        return await self._post(self._body_exchange(path, body, content_type))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    close = aclose

    async def _post(self, exchange: Exchange[R]) -> R:
        while (wait := exchange.outcome(await self._attempt(exchange))) is not None:
            await self._sleep(wait)
        return exchange.result

    async def _attempt(self, exchange: Exchange[Any]) -> httpx.Response | httpx.TransportError:
        try:
            return await self._http.post(
                exchange.url, content=exchange.body, headers=exchange.headers
            )
        except httpx.TransportError as exc:
            return exc
