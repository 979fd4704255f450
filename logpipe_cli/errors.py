"""The errors the library raises.

Every error carries the exit code the CLI should use and the HTTP status the API
should answer with, so both edges map errors the same way without knowing the
concrete classes.
"""

from __future__ import annotations


class LogpipeError(Exception):
    """Base of every error logpipe raises on purpose."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(LogpipeError):
    """A configuration file, variable or flag that cannot be used."""

    exit_code = 2
    http_status = 500


class ListenError(LogpipeError):
    """The API cannot listen on its address (the port is taken, say): uvicorn's own code
    for a server that could not start."""

    exit_code = 3


class InvalidEventError(LogpipeError):
    """An event that a client sent and that logpipe refuses (its own fault)."""

    exit_code = 2
    http_status = 400

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class BufferFullError(LogpipeError):
    """Redis already holds `max_buffered_events`: back off and retry."""

    exit_code = 1
    http_status = 503


class RateLimitedError(LogpipeError):
    """A client sent more events than `[limits]` allows: retry after ``retry_after_s``."""

    exit_code = 1
    http_status = 429

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class WrongTypeError(LogpipeError):
    """A Redis key logpipe writes to holds another type (written by something else)."""

    exit_code = 1
    http_status = 500

    def __init__(self, detail: str, keys: list[str]) -> None:
        super().__init__(detail)
        self.keys = keys


class RedisUnavailableError(LogpipeError):
    """Redis could not be reached or answered with an error."""

    exit_code = 1
    http_status = 503


class ReplicationError(RedisUnavailableError):
    """A write reached the master but not ``redis.min_replicas`` replicas in time.

    It did happen on the master: it is kept unless the master dies before a replica
    has it. A subclass of :class:`RedisUnavailableError` so that it is answered and
    retried the same way (the API resends under the same flush id).
    """

    def __init__(self, detail: str, replicas: int, wanted: int) -> None:
        super().__init__(detail)
        self.replicas = replicas
        self.wanted = wanted


class ReplicasMissingError(ReplicationError):
    """A write fell short of ``redis.min_replicas`` because its master has fewer replicas
    connected than that (a Redis Cluster master whose replica took over when it died):
    sending it again at once cannot help, so it is answered ``503`` without retrying."""


class SinkError(LogpipeError):
    """The log files could not be written (disk full, permissions, ...)."""

    exit_code = 1
    http_status = 500


class FileBusyError(SinkError):
    """Another process holds the file's lock (a drainer that lost its lease but lives)."""


class UnsafeKeyError(LogpipeError):
    """A Redis key that does not map to a file inside `logs_dir`."""

    exit_code = 1
    http_status = 500


class ClientError(LogpipeError):
    """The `send` client could not deliver an event."""

    exit_code = 1
    http_status = 502
