"""Group commit: concurrent requests share one Redis round trip.

Each request adds its events and waits; a single flusher sends everything pending in
one script call, then wakes exactly the requests of that call, with success or with
the error that call met. So a ``200`` still means "this event is in Redis", and a
failed flush fails only its own requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from logpipe_cli.buffer import Buffer

#: most events sent in one script call; more wait for the next flush
MAX_FLUSH_EVENTS = 20_000


class GroupCommitter:
    def __init__(self, buffer: Buffer) -> None:
        self._buffer = buffer
        self._items: list[tuple[str, bytes]] = []
        self._waiters: list[tuple[asyncio.Future[None], int]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(key, line)`` pairs; returns once they are in Redis, or raises."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.extend(items)
        self._waiters.append((fut, len(items)))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        await fut

    async def _flush_all(self) -> None:
        try:
            while self._waiters:
                # take whole requests only, up to MAX_FLUSH_EVENTS (at least one request)
                taken, count = 0, 0
                for _, n in self._waiters:
                    if taken and count + n > MAX_FLUSH_EVENTS:
                        break
                    taken += 1
                    count += n
                waiters, self._waiters = self._waiters[:taken], self._waiters[taken:]
                items, self._items = self._items[:count], self._items[count:]
                try:
                    await self._buffer.append(items)
                except asyncio.CancelledError:
                    for fut, _ in waiters:
                        fut.cancel()
                    raise
                except Exception as exc:  # each request learns why its own flush failed
                    for fut, _ in waiters:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for fut, _ in waiters:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._flusher = None
