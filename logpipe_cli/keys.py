"""Every Redis key logpipe uses is built and parsed here, and nowhere else.

Event lists are ``logs:user_<id>:<day>``. While a drainer works on one it is renamed
to a claim, guarded by a lease; the offset a claim's file had before an append is kept
beside it so a crash can be undone, and a holder record says who held the claim last and
how much of its file is acknowledged. Each of these companions carries the list's name as
its hash tag (``logpipe:claim:{logs:user_<id>:<day>}``), so in a Redis Cluster it lives in
the list's slot and every per-list script is single-slot (the same names in every mode).
Counters live in one hash (cluster mode: one per slot, see :mod:`logpipe_cli.slots`). The
event ids seen per user (dedupe) live in time-bucketed sets,
``logpipe:ids:{<user>}:<bucket>`` (cluster mode: per list, ``logpipe:ids:{<list>}:<bucket>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from logpipe_cli.slots import slot_tag

EVENT_PREFIX = "logs:user_"
_NS = "logpipe:"
CLAIM_PREFIX = _NS + "claim:"
LEASE_PREFIX = _NS + "lease:"
OFFSET_PREFIX = _NS + "offset:"
QUARANTINE_PREFIX = _NS + "quarantine:"
#: '<file size> <owner>' of a claim, as its holder's BEGIN recorded it (with the pending
#: offset) or its ACK left it: a pending offset is trusted only if it matches
HOLDER_PREFIX = _NS + "holder:"
#: sorted set of the write ids done in the last 60 s, so a write sent again is not done twice
FLUSHES = _NS + "flushes"
#: dedupe: per user and time bucket, a set of the event ids stored (see :func:`id_set`)
IDS_PREFIX = _NS + "ids:"
#: a rate limit's token bucket per principal (hash: tokens, ts in ms), expiring once full
RATE_PREFIX = _NS + "rate:"
#: hash of counters: buffered (events in Redis), buffered_bytes, accepted, drained_events, ...
STATS = _NS + "stats"
#: hash of the last drain's outcome
LAST_DRAIN = _NS + "last_drain"
#: a counter written before each WAIT (redis.min_replicas > 0): WAIT waits for this
#: connection's last write, and a flush sent again (its id already done) writes nothing
REPLICATED = _NS + "replicated"

#: cluster mode: the per-slot copies of STATS, FLUSHES and REPLICATED (see slot_key)
_PER_SLOT = {STATS: STATS + ":", FLUSHES: FLUSHES + ":", REPLICATED: REPLICATED + ":"}

#: user ids: 1-128 of ASCII letters, digits and . _ - @ +, not starting with "."
USER_ID_RE = re.compile(r"[A-Za-z0-9_@+\-][A-Za-z0-9._@+\-]{0,127}")
_DAY_RE = re.compile(r"0|[1-9][0-9]{0,8}")


@dataclass(frozen=True, order=True)
class EventKey:
    """A parsed ``logs:user_<id>:<day>`` key.

    Its name and its hash are worked out once, when it is made: a drain pass asks each
    key for its name a dozen times and hashes it ~16 times (the sets and dicts of a
    round), which made the generated ``__hash__`` and the ``key`` property the main
    thread's top Python items on 10,000 small keys (cProfile). (Not
    ``functools.cached_property``: on Python 3.11 it takes a lock on each first use.)
    The companions' names are not kept: ~500 bytes a key, 50 MB over 100,000 keys."""

    user_id: str
    day: int
    #: ``logs:user_<id>:<day>``
    key: str = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{EVENT_PREFIX}{self.user_id}:{self.day}")
        object.__setattr__(self, "_hash", hash((self.user_id, self.day)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[EventKey], tuple[str, int]]:
        # made again where it is unpickled: a str's hash differs from process to process
        return (EventKey, (self.user_id, self.day))

    @property
    def claim(self) -> str:
        return f"{CLAIM_PREFIX}{{{self.key}}}"

    @property
    def lease(self) -> str:
        return f"{LEASE_PREFIX}{{{self.key}}}"

    @property
    def offset(self) -> str:
        return f"{OFFSET_PREFIX}{{{self.key}}}"

    @property
    def quarantine(self) -> str:
        return f"{QUARANTINE_PREFIX}{{{self.key}}}"

    @property
    def holder(self) -> str:
        return f"{HOLDER_PREFIX}{{{self.key}}}"

    @property
    def companions(self) -> tuple[str, str, str, str, str]:
        """Claim, lease, offset, holder and quarantine: every key that belongs to it."""
        return (self.claim, self.lease, self.offset, self.holder, self.quarantine)

    @property
    def legacy_companions(self) -> tuple[str, str, str, str, str]:
        """:attr:`companions` as versions before the hash tag named them
        (``logpipe:claim:logs:user_<id>:<day>``; see ``logpipe migrate-keys``)."""
        prefixes = (CLAIM_PREFIX, LEASE_PREFIX, OFFSET_PREFIX, HOLDER_PREFIX, QUARANTINE_PREFIX)
        a, b, c, d, e = (p + self.key for p in prefixes)
        return (a, b, c, d, e)


def event_key(user_id: str, day: int) -> str:
    """The list that buffers ``user_id``'s events of ``day`` (no validation: hot path)."""
    return f"{EVENT_PREFIX}{user_id}:{day}"


def id_set(user_id: str, bucket: int) -> str:
    """The set of ``user_id``'s event ids stored in dedupe bucket ``bucket``
    (``floor(unix time / redis.dedupe_seconds)``): ``logpipe:ids:{<user>}:<bucket>``.

    The user is the hash tag, so a user's buckets share a slot; a bucket is dropped
    whole by its expiry, so no per-id bookkeeping is needed (see scripts.APPEND).
    """
    return f"{IDS_PREFIX}{{{user_id}}}:{bucket}"


def list_id_set(list_key: str, bucket: int) -> str:
    """Cluster mode's dedupe set: the ids stored into the list ``list_key`` in dedupe
    bucket ``bucket``, ``logpipe:ids:{<list>}:<bucket>`` (in the list's slot, so the
    script that appends to the list can check them: an id is unique per user and day)."""
    return f"{IDS_PREFIX}{{{list_key}}}:{bucket}"


def slot_key(name: str, slot: int) -> str:
    """Cluster mode's copy of the global key ``name`` (:data:`STATS`, :data:`FLUSHES` or
    :data:`REPLICATED`) that lives in hash slot ``slot``: ``logpipe:stats:{<tag>}``."""
    return f"{_PER_SLOT[name]}{{{slot_tag(slot)}}}"


def rate_bucket(principal: str) -> str:
    """The token bucket of ``principal`` (``token:<id>`` or ``addr:<client address>``)."""
    return RATE_PREFIX + principal


def parse_event_key(key: str | bytes) -> EventKey | None:
    """Parse a key in canonical form, or ``None`` for anything else.

    Canonical means building the key back gives the same string, so two different keys
    can never name the same file, and no key can name a path outside ``logs_dir``.
    """
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not key.startswith(EVENT_PREFIX):
        return None
    user_id, sep, day = key[len(EVENT_PREFIX) :].rpartition(":")
    if not sep or not USER_ID_RE.fullmatch(user_id) or not _DAY_RE.fullmatch(day):
        return None
    return EventKey(user_id, int(day))


def _tagged(key: bytes, prefix: bytes) -> EventKey | None:
    """The event key in ``<prefix>{<event key>}``, or ``None``."""
    if not (key.startswith(prefix + b"{") and key.endswith(b"}")):
        return None
    return parse_event_key(key[len(prefix) + 1 : -1])


def parse_claim_key(key: str | bytes) -> EventKey | None:
    """The event key behind a claim key, or ``None``."""
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogateescape")
    return _tagged(key, _CLAIM)


_CLAIM, _QUARANTINE = CLAIM_PREFIX.encode(), QUARANTINE_PREFIX.encode()
_COMPANION_PREFIXES = tuple(
    p.encode()
    for p in (CLAIM_PREFIX, LEASE_PREFIX, OFFSET_PREFIX, HOLDER_PREFIX, QUARANTINE_PREFIX)
)
#: SCAN patterns that find the companions named the old way (no hash tag)
LEGACY_PATTERNS = tuple(p + EVENT_PREFIX + "*" for p in (
    CLAIM_PREFIX, LEASE_PREFIX, OFFSET_PREFIX, HOLDER_PREFIX, QUARANTINE_PREFIX
))  # fmt: skip


#: one SCAN pattern for every companion named the old way: today's names have "{" after
#: the kind, so ":logs:user_" never follows a ":" in them
LEGACY_PATTERN = _NS + "*:" + EVENT_PREFIX + "*"


def parse_legacy(key: str | bytes) -> EventKey | None:
    """The event key behind a companion named the old way (``logpipe:claim:logs:...``,
    no hash tag), or ``None``."""
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogateescape")
    for prefix in _COMPANION_PREFIXES:
        if key.startswith(prefix + EVENT_PREFIX.encode()):
            return parse_event_key(key[len(prefix) :])
    return None


KeyKind = Literal["events", "claim", "quarantine"]


@dataclass(frozen=True)
class FoundKey:
    """A key found by a scan: its name, what it holds, and the event key behind it
    (``None`` when the name is not canonical, so it cannot map to a file)."""

    name: str
    kind: KeyKind
    event_key: EventKey | None
    raw: bytes  # the name as Redis has it (``name`` shows undecodable bytes escaped)


def classify(raw: str | bytes) -> FoundKey:
    """What a buffered key is: a claim, a quarantine, or (anything else) an event list."""
    if isinstance(raw, str):
        raw = raw.encode()
    name = raw.decode("utf-8", "backslashreplace")
    # a companion named the old way (no hash tag) has no event key: it is left alone
    # and reported until `logpipe migrate-keys` renames it
    if name.startswith(CLAIM_PREFIX):
        return FoundKey(name, "claim", _tagged(raw, _CLAIM), raw)
    if name.startswith(QUARANTINE_PREFIX):
        return FoundKey(name, "quarantine", _tagged(raw, _QUARANTINE), raw)
    return FoundKey(name, "events", parse_event_key(raw), raw)
