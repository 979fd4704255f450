"""Group commit: concurrent requests share one Redis round trip.

Each request adds its events and waits; a flusher sends everything pending in one
script call, then wakes exactly the requests of that call, with success or with the
error that call met. So a ``200`` still means "this event is in Redis", and a failed
flush fails only its own requests. While a flush is in Redis, a second one goes out
once a batch's worth of events waits (:data:`OVERLAP_EVENTS`), so the API packs the next
flush while Redis runs the one before; never more than :data:`MAX_IN_FLIGHT`.

The script writes all or nothing, and each flush carries an id that Redis remembers
once it has run: when Redis goes away without answering (it may or may not have run
the flush), the committer sends the same flush again, for up to ``retry_s``, and the
events are stored exactly once either way. Only when Redis stays away longer do the
requests get a 503; a client's retry then stores no event twice if the event carries
an id (``redis.dedupe_seconds``): each request learns which of its events were
duplicates, from the one reply of its flush.

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
from logpipe_cli.errors import RedisUnavailableError, ReplicasMissingError, WrongTypeError

#: most events sent in one script call; more wait for the next flush
MAX_FLUSH_EVENTS = 20_000
#: flushes in Redis at once (pipelined on the lean connection, else on two of the pool's)
MAX_IN_FLIGHT = 2
#: events that must be waiting before a flush goes out while another is in Redis: a
#: batch's worth. Below it they wait for the flush in flight to come back, so single
#: events keep sharing one call rather than going out in twice as many half-sized ones
OVERLAP_EVENTS = 64

_Waiter = tuple[
    asyncio.Future[list[int]],
    Sequence[tuple[str, bytes]],
    Sequence[str | None] | None,
    Charge | None,
]


class GroupCommitter:
    """Requests' appends, grouped into shared script calls; ``rate`` (if any) charges
    each request that names a principal to that principal's token bucket."""

    def __init__(self, buffer: Buffer, retry_s: float = 0.0, rate: RateLimit | None = None) -> None:
        self._buffer = buffer
        self._retry_s = retry_s
        self._rate = rate if rate is not None and rate.events_per_second > 0 else None
        self._waiters: list[_Waiter] = []
        #: events in ``_waiters``
        self._pending = 0
        #: the flushing loops running (each has at most one flush in Redis)
        self._flushers: set[asyncio.Task[None]] = set()

    async def append(
        self,
        items: Sequence[tuple[str, bytes]],
        ids: Sequence[str | None] | None = None,
        *,
        principal: str | None = None,
    ) -> list[int]:
        """Store ``(key, line)`` pairs; returns once they are in Redis, or raises
        (:class:`~logpipe_cli.errors.RateLimitedError` when ``principal`` is over the rate
        limit: nothing stored).

        ``ids``: each item's event id (or ``None``). Returns the indexes of the items
        not stored because their id was stored before (see :meth:`Buffer.store`). A
        request is charged all its events, duplicates too: they were sent.
        """
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        charge = None
        if self._rate is not None and principal is not None:
            charge = Charge(principal, len(items))
        self._waiters.append((fut, items, ids, charge))
        self._pending += len(items)
        flushers = self._flushers
        if not flushers or (len(flushers) < MAX_IN_FLIGHT and self._pending >= OVERLAP_EVENTS):
            flushers.add(asyncio.create_task(self._flush_all()))
        return await fut

    def _take(self) -> list[_Waiter]:
        """Whole requests, up to MAX_FLUSH_EVENTS events (at least one request)."""
        taken, count = 0, 0
        for _, items, _, _ in self._waiters:
            if taken and count + len(items) > MAX_FLUSH_EVENTS:
                break
            taken += 1
            count += len(items)
        waiters, self._waiters = self._waiters[:taken], self._waiters[taken:]
        self._pending -= count
        return waiters

    async def _flush_all(self) -> None:
        """Flush what waits until nothing does, or until another loop has a flush in
        Redis and less than a batch's worth waits (that loop takes it when it is back).

        A loop leaves the set in the same step it ends, not in a done callback: two
        flushes coming back in one tick would otherwise each see the other still there,
        both end, and leave what waits with no loop to send it."""
        try:
            while self._waiters:
                await self._flush(self._take())
                if len(self._flushers) > 1 and self._pending < OVERLAP_EVENTS:
                    return
        finally:
            self._flushers.discard(asyncio.current_task())

    async def _flush(self, waiters: list[_Waiter]) -> None:
        """One flush of ``waiters``; after a wrong-type refusal, the requests not at fault
        again under the same flush id, on their own (see below)."""
        flush_id = uuid.uuid4().hex
        while waiters:
            items = [item for _, batch, _, _ in waiters for item in batch]
            ids: list[str | None] | None = None
            if any(w[2] for w in waiters):
                ids = []
                for _, batch, batch_ids, _ in waiters:
                    ids += batch_ids if batch_ids else [None] * len(batch)
            charges = [c for _, _, _, c in waiters if c is not None]
            try:
                duplicates = await self._store(items, ids, charges, flush_id)
            except asyncio.CancelledError:
                for fut, _, _, _ in waiters:
                    fut.cancel()
                raise
            except RateLimitedErrors as exc:
                # Only the requests over their limit fail; the rest go again (nothing
                # was written: the limits are checked first).
                retry: list[_Waiter] = []
                charged = -1
                for waiter in waiters:
                    charged += waiter[3] is not None
                    refusal = exc.refused.get(charged) if waiter[3] is not None else None
                    if refusal is not None:
                        _fail(waiter[0], refusal)
                    else:
                        retry.append(waiter)
                self._waiters[:0] = retry
                self._pending += sum(len(w[1]) for w in retry)
                return
            except WrongTypeError as exc:
                # Only the requests aimed at a bad key fail; the rest go again.
                # A key of logpipe's own (logpipe:stats, ...) fails every request:
                # going again would meet it again, forever.
                bad = set(exc.keys)
                every = not any(key in bad for w in waiters for key, _ in w[1])
                retry = []
                for waiter in waiters:
                    if every or any(key in bad for key, _ in waiter[1]):
                        _fail(waiter[0], exc)
                    else:
                        retry.append(waiter)
                # Under the same flush id and without newcomers: in cluster mode each
                # slot runs its own APPEND, and the slots without a bad key stored their
                # events already (their flush id makes them write nothing again); a new
                # id would store those events twice, and a newcomer's events in such a
                # slot would be taken for the flush sent again and dropped.
                waiters = retry
            except Exception as exc:  # each request learns why its own flush failed
                for fut, _, _, _ in waiters:
                    _fail(fut, exc)
                return
            else:
                _answer(waiters, duplicates)
                return

    async def _store(
        self,
        items: list[tuple[str, bytes]],
        ids: list[str | None] | None,
        charges: list[Charge],
        flush_id: str,
    ) -> list[int]:
        """One flush, sent again under the same id while Redis does not answer; the
        indexes of its duplicates."""
        deadline = time.monotonic() + self._retry_s
        delay = 0.05
        while True:
            try:
                rate = self._rate
                if ids is None:
                    await self._buffer.append(items, flush_id, charges=charges, rate=rate)
                    return []
                stored = await self._buffer.store(
                    items, flush_id, ids=ids, charges=charges, rate=rate
                )
                return stored.duplicates
            except ReplicasMissingError:
                raise  # a master without its replicas: resending now cannot help
            except RedisUnavailableError:
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def _answer(waiters: list[_Waiter], duplicates: list[int]) -> None:
    """Wake each request with its own duplicates (flush indexes made its own)."""
    dups = iter(duplicates)
    nxt = next(dups, -1)
    start = 0
    for fut, batch, _, _ in waiters:
        end = start + len(batch)
        mine: list[int] = []
        while 0 <= nxt < end:
            mine.append(nxt - start)
            nxt = next(dups, -1)
        start = end
        if not fut.done():
            fut.set_result(mine)


def _fail(fut: asyncio.Future[list[int]], exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)
