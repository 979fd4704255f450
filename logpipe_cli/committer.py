"""Group commit: concurrent requests share one Redis round trip.

Each request adds its events and waits; a single flusher sends everything pending in
one script call, then wakes exactly the requests of that call, with success or with
the error that call met. So a ``200`` still means "this event is in Redis", and a
failed flush fails only its own requests.

The script writes all or nothing, and each flush carries an id that Redis remembers
once it has run: when Redis goes away without answering (it may or may not have run
the flush), the committer sends the same flush again, for up to ``retry_s``, and the
events are stored exactly once either way. Only when Redis stays away longer do the
requests get a 503, and only then can a client's retry duplicate an event.

With ``redis.min_replicas`` set, a flush that ran on the master but reached too few
replicas in time (:class:`~logpipe_cli.errors.ReplicationError`, a kind of
:class:`RedisUnavailableError`) is sent again the same way: the same id writes nothing
twice and waits for the replicas once more.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from logpipe_cli.buffer import Buffer, Charge, RateLimit, RateLimitedErrors
from logpipe_cli.errors import RedisUnavailableError, WrongTypeError

#: most events sent in one script call; more wait for the next flush
MAX_FLUSH_EVENTS = 20_000

_Waiter = tuple[asyncio.Future[None], Sequence[tuple[str, bytes]], Charge | None]


class GroupCommitter:
    """Requests' appends, grouped into shared script calls; ``rate`` (if any) charges
    each request that names a principal to that principal's token bucket."""

    def __init__(self, buffer: Buffer, retry_s: float = 0.0, rate: RateLimit | None = None) -> None:
        self._buffer = buffer
        self._retry_s = retry_s
        self._rate = rate if rate is not None and rate.events_per_second > 0 else None
        self._waiters: list[_Waiter] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(
        self, items: Sequence[tuple[str, bytes]], principal: str | None = None
    ) -> None:
        """Store ``(key, line)`` pairs; returns once they are in Redis, or raises
        (:class:`~logpipe_cli.errors.RateLimitedError` when ``principal`` is over the rate
        limit: nothing stored)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        charge = None
        if self._rate is not None and principal is not None:
            charge = Charge(principal, len(items))
        self._waiters.append((fut, items, charge))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        await fut

    def _take(self) -> list[_Waiter]:
        """Whole requests, up to MAX_FLUSH_EVENTS events (at least one request)."""
        taken, count = 0, 0
        for _, items, _ in self._waiters:
            if taken and count + len(items) > MAX_FLUSH_EVENTS:
                break
            taken += 1
            count += len(items)
        waiters, self._waiters = self._waiters[:taken], self._waiters[taken:]
        return waiters

    async def _flush_all(self) -> None:
        try:
            while self._waiters:
                waiters = self._take()
                items = [item for _, batch, _ in waiters for item in batch]
                try:
                    await self._store(items, [c for _, _, c in waiters if c is not None])
                except asyncio.CancelledError:
                    for fut, _, _ in waiters:
                        fut.cancel()
                    raise
                except RateLimitedErrors as exc:
                    # Only the requests over their limit fail; the rest go again.
                    retry: list[_Waiter] = []
                    charged = -1
                    for waiter in waiters:
                        charged += waiter[2] is not None
                        refusal = exc.refused.get(charged) if waiter[2] is not None else None
                        if refusal is not None:
                            _fail(waiter[0], refusal)
                        else:
                            retry.append(waiter)
                    self._waiters[:0] = retry
                except WrongTypeError as exc:
                    # Only the requests aimed at a bad key fail; the rest go again.
                    bad = set(exc.keys)
                    retry = []
                    for waiter in waiters:
                        if any(key in bad for key, _ in waiter[1]):
                            _fail(waiter[0], exc)
                        else:
                            retry.append(waiter)
                    self._waiters[:0] = retry
                except Exception as exc:  # each request learns why its own flush failed
                    for fut, _, _ in waiters:
                        _fail(fut, exc)
                else:
                    for fut, _, _ in waiters:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._flusher = None

    async def _store(self, items: list[tuple[str, bytes]], charges: list[Charge]) -> None:
        """One flush, sent again under the same id while Redis does not answer."""
        flush_id = uuid.uuid4().hex
        deadline = time.monotonic() + self._retry_s
        delay = 0.05
        while True:
            try:
                if self._rate is None:
                    await self._buffer.append(items, flush_id)
                else:
                    await self._buffer.append(items, flush_id, charges=charges, rate=self._rate)
                return
            except RedisUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _fail(fut: asyncio.Future[None], exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)
