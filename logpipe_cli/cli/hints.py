"""The next step, appended to an error line when the cause is plain from its text.

A Redis that wants a password answers ``NOAUTH``/``WRONGPASS`` (or, to redis-py's
``HELLO``, "must be called with the client already authenticated"), and an API with
tokens answers ``401``: a newcomer meets both on a first run, and the raw messages do
not say which option fixes them.
"""

from __future__ import annotations

import re

REDIS_AUTH = "give the password in redis.url: redis://:PASSWORD@host:port"
API_TOKEN = "pass --token T or set LOGPIPE_TOKEN; `logpipe token new` makes one"

_REDIS_AUTH_SIGNS = (
    "noauth",
    "wrongpass",
    "authentication required",
    "client already authenticated",
    "invalid password",
    "invalid username-password",
)
# "refused with 401: ...", "GET .../stats answered 401: ...", "(first: 401: ...)"
_API_401 = re.compile(r"\b401\b.*\b(bearer|token)\b", re.IGNORECASE)


def with_hint(detail: str) -> str:
    """``detail``, and the fix in parentheses when it is known and not given already."""
    low = detail.lower()
    if any(sign in low for sign in _REDIS_AUTH_SIGNS) and "redis.url" not in low:
        return f"{detail} ({REDIS_AUTH})"
    if _API_401.search(detail) and "LOGPIPE_TOKEN" not in detail:
        return f"{detail} ({API_TOKEN})"
    return detail
