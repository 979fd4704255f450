"""One drain pass at a time in this process; whoever asks during a pass shares it.

``POST /drain`` used to call ``drain_once`` on one long-lived :class:`Drainer`, so
concurrent calls shared one owner token: the second "resumed" the first one's claims,
waited on its file locks, then released its lease (issue 8: 1,512 of 9,000 events in
36 s, against 1.4 s for two separate drainers). Here each pass gets a fresh
:class:`Drainer` (its own owner), and a request arriving while a pass runs waits for
that pass and gets its report, so 100 concurrent requests cost one pass, not 100
(issue 9, defect 3).
"""

from __future__ import annotations

import asyncio
import contextlib

from logpipe_cli.buffer import Buffer
from logpipe_cli.drainer import Drainer, DrainReport
from logpipe_cli.settings import DrainerSettings


class DrainRunner:
    """Runs drain passes over ``buffer`` into ``cfg.logs_dir``, one at a time ("single flight").

    Give it a buffer on a Redis client of its own, so that a long pass cannot take the
    connections the write path needs.
    """

    def __init__(self, buffer: Buffer, cfg: DrainerSettings) -> None:
        self.buffer = buffer
        self.cfg = cfg
        #: passes started so far (each with its own Drainer and owner)
        self.passes = 0
        self._current: asyncio.Task[DrainReport] | None = None

    async def drain(self) -> DrainReport:
        """The report of the pass running now, or of a new one if none is.

        A joined pass may have listed the keys before this call: events stored just
        before it can be left for the next pass. Keys another drainer holds are left to
        it (listed in ``busy``), as ``drain`` in loop mode does. A caller cancelled while
        waiting leaves the pass running for the others.
        """
        task = self._current
        if task is None:
            task = self._current = asyncio.create_task(self._pass())
            task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    async def _pass(self) -> DrainReport:
        self.passes += 1
        return await Drainer(self.buffer, self.cfg).drain_once(wait_for_busy=False)

    def _finished(self, task: asyncio.Task[DrainReport]) -> None:
        if self._current is task:
            self._current = None
        if not task.cancelled():
            task.exception()  # retrieved: each waiter has it raised already

    async def aclose(self) -> None:
        """Stop the pass that is running, if any (its leases run out; nothing is lost)."""
        task = self._current
        # Cancelled again until it ends: Python 3.11's asyncio.wait_for (inside redis-py)
        # can swallow a cancellation that lands just as what it waits for completes.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
