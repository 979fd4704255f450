"""``LogpipeHandler``: the standard ``logging`` module as a logpipe client."""

from __future__ import annotations

import logging
import threading

from logpipe_cli.appclient import Client, Sender
from logpipe_cli.errors import ClientError, LogpipeError
from logpipe_cli.events import MAX_EVENT_CHARS

__all__ = ["LogpipeHandler"]


class LogpipeHandler(logging.Handler):
    """Sends each log record to logpipe as an event, from a background thread.

    A record becomes ``{"user_id", "event", "timestamp", "event_id", "level", "logger"}``:
    ``event`` is the formatted message cut to 256 characters, ``timestamp`` the record's
    ``created`` time, ``user_id`` the record's ``extra={"user_id": ...}`` or else the
    handler's ``user_id``.

    ``emit()`` never waits on the network: it only queues the event for a
    :class:`~logpipe_cli.appclient.Sender`. Records are dropped, and counted in ``dropped``,
    when they have no user id (neither in the record nor as the handler's default), when
    the event would be refused (e.g. an invalid user id), or when the queue is full
    (``max_queue`` records: the server is down or too slow). Records logged by the sender's
    own thread (httpx's request log) are ignored, or each post would log another record.
    Batches that cannot be delivered are counted in ``failed``. ``close()``, which
    ``logging.shutdown()`` calls at exit, posts every queued record first.
    """

    def __init__(
        self,
        url: str,
        user_id: str | None = None,
        token: str | None = None,
        *,
        level: int = logging.NOTSET,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        max_queue: int = 100_000,
        client: Client | None = None,
    ) -> None:
        super().__init__(level)
        self.user_id = user_id
        self.client = client if client is not None else Client(url, token)
        #: records not queued (no user id, invalid, queue full), and events not delivered
        self.dropped = 0
        self.failed = 0
        self._count_lock = threading.Lock()
        self._sender: Sender = self.client.sender(
            batch_size,
            flush_seconds,
            max_queue=max_queue,
            put_timeout_s=0,  # never block the thread that logs
            on_error=self._on_error,
        )
        self._closed = False

    def handle(self, record: logging.LogRecord) -> bool:
        """Ignore the sender thread's own records before taking the handler's lock.

        ``logging.shutdown()`` holds that lock while ``close()`` waits for the sender's
        thread; if that thread's httpx records queued for the lock, neither would go on.
        """
        if threading.get_ident() == self._sender.thread_id:
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` as an event (never blocks on the network)."""
        if self._closed:
            return
        user_id = getattr(record, "user_id", None) or self.user_id
        if user_id is None:
            self._drop()
            return
        try:
            message = self.format(record)[:MAX_EVENT_CHARS] or record.levelname
            self._sender.log(
                str(user_id),
                message,
                timestamp=int(record.created),
                level=record.levelname,
                logger=record.name,
            )
        except LogpipeError:
            self._drop()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Wait until every record queued so far has been posted (or given up on)."""
        if not self._closed:
            self._sender.flush()

    def close(self) -> None:
        """Post every queued record, stop the sender's thread and close the client."""
        with self._count_lock:
            if self._closed:
                super().close()
                return
            self._closed = True
        try:
            self._sender.close()
        finally:
            self.client.close()
            super().close()

    def _drop(self) -> None:
        with self._count_lock:
            self.dropped += 1

    def _on_error(self, exc: ClientError, events: int) -> None:
        with self._count_lock:
            self.failed += events

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.client.url} ({logging.getLevelName(self.level)})>"
