"""Redis Cluster hash slots: which slot a key is in, and a short tag for every slot.

A Redis Cluster script may only touch keys of one slot. The keys that are global in
standalone mode (the counters, the flush-id table) are kept once per slot in cluster mode,
so the script that writes a slot's lists can update its slot's copy: ``slot_tag(s)`` is a
string that hashes to slot ``s``, and ``{<tag>}`` in a key's name puts it there
(:mod:`logpipe_cli.keys` builds the names). Pure computation, no Redis.
"""

from __future__ import annotations

import functools
import itertools
import string
from binascii import crc_hqx

#: slots in a Redis Cluster
SLOTS = 16384

_ALPHABET = (string.ascii_letters + string.digits).encode()


def _key_slot(key: bytes) -> int:
    # Redis's rule: the part between the first "{" and the next "}" if not empty, else the
    # whole name; CRC16-XMODEM (binascii's crc_hqx) mod 16384. Not redis.crc: keys.py
    # imports this module, and the client library must not load redis-py
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % SLOTS


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key`` (CRC16 of its hash tag, or of the whole name)."""
    return _key_slot(key.encode() if isinstance(key, str) else key)


@functools.cache
def _tags() -> tuple[str, ...]:
    """For each slot, the first string of 1-3 letters and digits (in a fixed order)
    that hashes to it: every slot has one, found in ~0.1 s, once per process."""
    table: list[str | None] = [None] * SLOTS
    left = SLOTS
    for size in (1, 2, 3):
        for combo in itertools.product(_ALPHABET, repeat=size):
            name = bytes(combo)
            slot = _key_slot(name)
            if table[slot] is None:
                table[slot] = name.decode()
                left -= 1
                if not left:
                    return tuple(t for t in table if t is not None)
    raise AssertionError("a slot has no tag of 3 characters or fewer")  # pragma: no cover


def slot_tag(slot: int) -> str:
    """A short string whose hash slot is ``slot`` (the same in every process)."""
    return _tags()[slot]


def group_by_slot(names: list[str]) -> dict[int, list[str]]:
    """``names`` grouped by hash slot, each group in the order given."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(key_slot(name), []).append(name)
    return groups
