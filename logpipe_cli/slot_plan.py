"""What a Redis Cluster call looks like, before anything is sent: a flush split into one
single-slot ``APPEND`` per hash slot, the drain commands' global counters moved into the
command's slot, and the two rate-limit scripts that run on a principal's bucket on its own.
Pure (no Redis), so each is tested alone; :mod:`logpipe_cli.sharded` sends them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from logpipe_cli import keys, scripts
from logpipe_cli.settings import RedisSettings
from logpipe_cli.slots import key_slot

RATE = """
-- KEYS[1] = a principal's rate bucket (hash: tokens, ts in ms, flush)
-- ARGV[1] = events per second, ARGV[2] = burst, ARGV[3] = the flush's id,
-- ARGV[4..] = the costs of its requests in the flush, in order
-- APPEND's token bucket, for one bucket on its own (cluster mode: the bucket is in another
-- slot than the lists). Charges every request if the bucket holds them all and returns
-- {}; else charges nothing and returns {request, ms, ...}: the refused requests (1-based)
-- and the wait in ms after which each would pass. A flush sent again (the id the bucket
-- last charged) is not charged again.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- pcall: a bucket overwritten by hand with another type counts as full, and is replaced
local h, have, stale = redis.pcall('HMGET', KEYS[1], 'tokens', 'ts', 'flush'), burst, false
if h['err'] then
  stale = true
else
  if h[3] == ARGV[3] then return {} end
  local left, ts = tonumber(h[1]), tonumber(h[2])
  if left and ts then have = math.min(burst, left + math.max(0, now_ms - ts) * rate / 1000) end
end
local limited = {}
for i = 4, #ARGV do
  local cost = tonumber(ARGV[i])
  if have + 1e-9 >= cost then
    have = have - cost
  else
    limited[#limited + 1] = i - 3
    limited[#limited + 1] = math.ceil((cost - have) * 1000 / rate)
  end
end
if #limited > 0 then return limited end
if stale then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', have), 'ts', now_ms, 'flush', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return limited
"""

REFUND = """
-- KEYS[1] = a principal's rate bucket; ARGV[1] = tokens to give back, ARGV[2] = burst
-- Undoes RATE's charge of a flush that another bucket refused (nothing was stored).
local h = redis.pcall('HGET', KEYS[1], 'tokens')
if type(h) ~= 'string' then return 0 end
local back = math.min(tonumber(ARGV[2]), tonumber(h) + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', back), 'flush', '')
return 1
"""


@dataclass(frozen=True)
class SlotCall:
    """One slot's share of a flush: its APPEND's keys and arguments, and the flush's item
    indexes in the order the script sees its values (to map duplicates back)."""

    slot: int
    lists: list[str]
    script_keys: list[str]
    argv: list[Any]
    order: list[int]


def plan_flush(
    items: Sequence[tuple[str, bytes]],
    flush_id: str,
    cfg: RedisSettings,
    ids: Sequence[str | None] | None,
    now: float,
) -> list[SlotCall]:
    """The per-slot APPEND calls of one flush (see scripts.APPEND for the arguments).

    Limits are not in them (0 = none; :class:`Sharded` checks them before), nor rate
    buckets. Pure: no Redis, so it is tested on its own.
    """
    by_slot: dict[int, dict[str, list[int]]] = {}
    for i, (key, _) in enumerate(items):
        lists = by_slot.setdefault(key_slot(key), {})
        where = lists.get(key)
        if where is None:
            lists[key] = [i]
        else:
            where.append(i)
    window = cfg.dedupe_seconds
    dedupe = bool(ids) and window > 0 and any(ids or ())
    bucket = int(now // window) if dedupe else 0
    calls = []
    for slot, lists in by_slot.items():
        argv: list[Any] = [0, cfg.key_expiration_seconds, flush_id]
        nbytes = 0
        section: list[str] = []
        for where in lists.values():
            values = [items[i][1] for i in where]
            joined = b"\n".join(values)
            if joined.count(b"\n") == len(values) - 1:
                argv += (len(values), joined)
                nbytes += len(joined) - len(values) + 1
            else:
                argv.append(-len(values))
                argv.extend(values)
                nbytes += sum(map(len, values))
            if dedupe:
                assert ids is not None
                section.append(scripts.ids_entry([ids[i] or "" for i in where]))
        # the ids' scope: per list (2), the set named from the list (keys.list_id_set), so
        # in the list's slot
        scope = 2 if any(s != "0" for s in section) else 0
        if scope:
            argv += (" ".join(section), (bucket + 2) * window, bucket)
        else:
            argv += ("", 0, 0)
        argv += (0, nbytes, 0, 0, 0, scope)
        script_keys = [
            keys.slot_key(keys.STATS, slot),
            *lists,
            keys.slot_key(keys.FLUSHES, slot),
        ]
        order = [i for where in lists.values() for i in where]
        calls.append(SlotCall(slot, list(lists), script_keys, argv, order))
    return calls


def localize(cmd: tuple[Any, ...]) -> tuple[Any, ...]:
    """A drain command with the global counters' key (``keys.STATS``) among its script
    keys replaced by the copy in the slot of its first key (see scripts.ACK)."""
    if cmd[0] != "EVALSHA":
        return cmd
    n = int(cmd[2])
    script_keys = cmd[3 : 3 + n]
    if keys.STATS not in script_keys:
        return cmd
    slot = key_slot(script_keys[0])
    local = tuple(keys.slot_key(k, slot) if k == keys.STATS else k for k in script_keys)
    return (*cmd[:3], *local, *cmd[3 + n :])


def first_key(cmd: tuple[Any, ...]) -> Any:
    """The first key a command names (the drain protocol's: EVALSHA or a one-key read)."""
    return cmd[3] if cmd[0] == "EVALSHA" else cmd[1]
