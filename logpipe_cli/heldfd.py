"""A descriptor that threads use and that a close never closes under one of them."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator


class ClosedError(OSError):
    """A :class:`HeldFd` used after its close (``EBADF``)."""


class HeldFd:
    """A descriptor used from file threads, closed by whoever is the last to need it.

    A close asked for while a thread uses it (a drain pass cancelled meanwhile: a thread
    cannot be stopped) happens when the last user's block ends, without blocking the
    caller. Closed at once, its number would go to the next file the process opens, and
    the thread's write, ``mkdir`` or ``syncfs`` would land there. After :meth:`close`,
    :meth:`using` raises :class:`ClosedError` (``EBADF``, ``closed``) and nothing is
    opened again.

    ``fd`` is the descriptor, or -1: not opened yet (``opener`` opens it at the first
    use) or closed. Shared by :class:`~logpipe_cli.sink.LockedFile` (a log file),
    :class:`~logpipe_cli.sink.LogsDir` (``logs_dir``, opened when first needed) and
    :class:`~logpipe_cli.durable.Barrier` (a round's ``syncfs`` descriptor).
    """

    def __init__(
        self, fd: int = -1, *, opener: Callable[[], int] | None = None, closed: str = "closed"
    ) -> None:
        self.fd = fd
        self._opener = opener
        self._closed_reason = closed
        self._users = 0
        self._closed = False
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def using(self) -> Iterator[int]:
        """The descriptor (opened first if need be), kept open until the block ends."""
        with self._guard:
            if self._closed or (self.fd < 0 and self._opener is None):
                raise ClosedError(errno.EBADF, self._closed_reason)
            if self.fd < 0:
                assert self._opener is not None
                self.fd = self._opener()  # its OSError is the caller's to report
            self._users += 1
            fd = self.fd
        try:
            yield fd
        finally:
            with self._guard:
                self._users -= 1
                last = self._users == 0 and self._closed
                fd, self.fd = (self.fd, -1) if last else (-1, self.fd)
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        """Close it now, or when the last :meth:`using` block ends. Safe to call twice."""
        with self._guard:
            self._closed = True
            if self._users:
                return
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
