"""HTTP answers as plain data (status, JSON body, headers), shared by both ways of serving.

Litestar handlers wrap them in a ``Response``; the ``POST /log`` fast path sends them
over ASGI directly. Keeping them here keeps both byte-for-byte the same.
"""

from __future__ import annotations

import msgspec

from logpipe_cli.errors import (
    BufferFullError,
    InvalidEventError,
    LogpipeError,
    RateLimitedError,
    RedisUnavailableError,
)

_encode = msgspec.json.encode

#: an answer as plain data: status, JSON body, extra headers (the ASGI fast path sends it)
Answer = tuple[int, bytes, dict[str, str]]


def problem_answer(status: int, detail: str, field: str | None = None, **headers: str) -> Answer:
    """``{"detail": ..., "field": ...}`` with ``status`` and extra ``headers``."""
    body = {"detail": detail} if field is None else {"detail": detail, "field": field}
    return status, _encode(body), headers


def error_answer(exc: LogpipeError) -> Answer:
    """The answer for a library error: its status, Retry-After on 429s and 503s, the
    field at fault."""
    if isinstance(exc, RateLimitedError):
        return problem_answer(429, exc.detail, **{"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, BufferFullError):
        return problem_answer(503, exc.detail, **{"Retry-After": "5"})
    if exc.http_status == 503:
        return problem_answer(503, exc.detail, **{"Retry-After": "1"})
    field = exc.field if isinstance(exc, InvalidEventError) else None
    return problem_answer(exc.http_status, exc.detail, field)


def refusal_reason(exc: LogpipeError) -> str:
    """The `logpipe_events_refused` label for an error."""
    if isinstance(exc, BufferFullError):
        return "buffer_full"
    if isinstance(exc, RedisUnavailableError):
        return "redis_unavailable"
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    return "too_large" if exc.http_status == 413 else "invalid"


#: what Litestar says when the client disconnects before its body is read
DISCONNECTED = "client disconnected prematurely"
#: the status a request whose client went away is counted under (nginx's "client closed
#: request"); never sent, as there is no one to send it to
CLIENT_CLOSED = 499

#: what Litestar answers for an exception no handler takes (debug off)
INTERNAL_ERROR: Answer = (
    500,
    _encode({"status_code": 500, "detail": "Internal Server Error"}),
    {},
)
