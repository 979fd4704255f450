"""The keys logpipe keeps for itself (not per user), the Redis type each must hold, and
what to tell an operator when one holds another.

Anyone with Redis access can overwrite ``logpipe:stats`` with a string: Redis then
answers ``WRONGTYPE`` to every script that touches it, which names no key. Rather than
calling that an outage (503, "retry"), the error path asks Redis for these keys' types
and names the one at fault and what to do; ``redis-check`` reports the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from logpipe_cli import keys

log = logging.getLogger(__name__)

#: each key logpipe keeps for itself and the type of value it holds there
OWN_TYPES: dict[str, str] = {
    keys.STATS: "hash",
    keys.LAST_DRAIN: "hash",
    keys.FLUSHES: "zset",
    keys.REPLICATED: "string",
}


@dataclass(frozen=True)
class Misplaced:
    """A key of :data:`OWN_TYPES` that holds another type."""

    key: str
    holds: str
    wanted: str

    def describe(self) -> str:
        return (
            f"Redis key {self.key} holds a {self.holds} where logpipe keeps a {self.wanted} "
            f"(written by something else?); rename it aside (redis-cli RENAME {self.key} "
            f"{self.key}.bad) and logpipe starts a new one"
        )


def is_wrongtype(exc: BaseException) -> bool:
    """Whether Redis refused a command for a key of another type (also inside a
    pipeline's or a script's error)."""
    return isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc)


async def misplaced(client: aioredis.Redis) -> list[Misplaced]:
    """The keys of :data:`OWN_TYPES` that exist with another type, in one round trip."""
    names = list(OWN_TYPES)
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.type(name)
        found = await pipe.execute()
    wrong: list[Misplaced] = []
    for name, raw in zip(names, found, strict=True):
        holds = raw.decode() if isinstance(raw, bytes) else str(raw)
        if holds not in ("none", OWN_TYPES[name]):
            wrong.append(Misplaced(name, holds, OWN_TYPES[name]))
    return wrong


def report_once(found: Misplaced, reported: set[str]) -> None:
    """Log ``found`` as an error unless its key is in ``reported`` (then add it): an
    operator is told once, not once per request."""
    if found.key not in reported:
        reported.add(found.key)
        log.error("%s", found.describe())
