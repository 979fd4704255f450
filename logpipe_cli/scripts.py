"""Lua scripts that make each multi-step Redis change atomic (one round trip each).

Beside each script sits the one function that decodes its reply into a named outcome,
so no caller has to remember what ``-1``, ``false`` or position 2 of a table means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from logpipe_cli import keys


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


APPEND = """
-- KEYS[1] = stats hash, KEYS[2..k+1] = event lists (distinct),
-- KEYS[k+2..k+b+1] = rate buckets (distinct), KEYS[#KEYS] = flush ids (zset)
-- (b = ARGV[#ARGV-1], k = #KEYS - 2 - b)
-- ARGV[1] = max buffered events (0 = no limit), ARGV[2] = key TTL in seconds (0 = none),
-- ARGV[3] = this flush's id
-- ARGV[4..] = per list, in KEYS order: n > 0 and its n values joined by newlines in one
--   argument (one argument per list, not per event: packing arguments is what costs
--   the client most), or -n and its n values one per argument (a value holds a newline)
-- then, per rate-limited request in flush order: its bucket (1..b) and its cost (events,
--   duplicates included: they were sent)
-- then a fixed tail of 9 values (T = #ARGV - 9):
-- ARGV[T+1] = the ids (scope > 0; else ''): one argument, per list in KEYS order and
--   joined by spaces, '0' (no ids in this list) or '1' then its events' ids, joined by
--   newlines (an empty line for an event without one); '2' instead of '1' when the
--   caller knows the list's id set of this bucket already expires (its TTL is not read)
-- ARGV[T+2] = the Unix time at which the current bucket expires, ARGV[T+3] = the
--   current bucket's number (both unused when scope = 0)
-- ARGV[T+4] = max buffered bytes (0 = no limit), ARGV[T+5] = this flush's bytes,
-- ARGV[T+6] = events per second, ARGV[T+7] = burst (both unused when b = 0),
-- ARGV[T+8] = b, the number of rate buckets,
-- ARGV[T+9] = the ids' scope: 0 = no ids, 1 = per user (the list's dedupe set is its
--   user's, @IDS@{<user>}:<bucket>), 2 = per list (@IDS@{<list>}:<bucket>, cluster
--   mode: the list's slot). The sets are named here, not passed in KEYS: packing a key
--   per user cost the client more than the rest of the ids' work; in cluster mode a
--   set carries its list's name as hash tag, so it is in the slot of a declared key.
-- Returns the number of events buffered afterwards, -1 if the buffer is full (events),
-- -2 if it is full (bytes), {positions of the lists that hold another type},
-- {'limited', request, ms, request, ms, ...}: the rate-limited requests (1-based among
-- the rate-limited ones) and the wait in ms after which each would pass, or
-- {'duplicates', buffered, 0-based positions (over all values, in ARGV order) of the
-- events not stored because their id was stored before}. A refusal writes no event,
-- id or bucket (only refused_full): a script that fails half-way keeps its earlier
-- writes, so every check comes before any write. The limits are checked before the
-- ids are known (duplicates count there); what is counted afterwards (accepted,
-- buffered, buffered_bytes) leaves the duplicates out.
-- A flush id seen in the last 60 s writes nothing again: a flush whose answer was lost
-- (Redis died after running it) can be sent again without duplicates.
local T = #ARGV - 9
local nbuckets, scope = tonumber(ARGV[T + 8]), tonumber(ARGV[T + 9])
local nkeys = #KEYS - 2 - nbuckets
local flushes, id = KEYS[#KEYS], ARGV[3]
if redis.call('ZSCORE', flushes, id) then
  return tonumber(redis.call('HGET', KEYS[1], 'buffered') or '0')
end
local counts, total, a = {}, 0, 4
-- Redis's clock, read once a call (the rate limits', the trust in a known expiry's, the
-- flush id's): {seconds, microseconds}
local clock = nil
local function time_now()
  if not clock then clock = redis.call('TIME') end
  return clock
end
for i = 1, nkeys do
  local n = tonumber(ARGV[a])
  counts[i] = n
  if n > 0 then
    total, a = total + n, a + 2
  else
    total, a = total - n, a + 1 - n
  end
end
-- ---- limits: checks (nothing written here; the buckets are saved at the end) ----
-- Token buckets: a bucket holds up to burst tokens and gains events-per-second tokens
-- a second; a request passes if its bucket holds its cost. Requests of one bucket in
-- this flush are charged in order, so a refusal's wait counts those before it.
local tokens, stale, now_ms = {}, {}, 0
if nbuckets > 0 then
  local rate, burst = tonumber(ARGV[T + 6]), tonumber(ARGV[T + 7])
  local t = time_now()
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for b = 1, nbuckets do
    -- pcall: a bucket overwritten by hand with another type counts as full (and is
    -- replaced at the end), rather than failing every write of its flush
    local h, have = redis.pcall('HMGET', KEYS[nkeys + 1 + b], 'tokens', 'ts'), burst
    if h['err'] then
      stale[b] = true
    else
      local left, ts = tonumber(h[1]), tonumber(h[2])
      if left and ts then have = math.min(burst, left + math.max(0, now_ms - ts) * rate / 1000) end
    end
    tokens[b] = have
  end
  local limited = {'limited'}
  for c = a, T - 1, 2 do
    local b, cost = tonumber(ARGV[c]), tonumber(ARGV[c + 1])
    if tokens[b] + 1e-9 >= cost then
      tokens[b] = tokens[b] - cost
    else
      limited[#limited + 1] = (c - a) / 2 + 1
      limited[#limited + 1] = math.ceil((cost - tokens[b]) * 1000 / rate)
    end
  end
  if #limited > 1 then return limited end
end
local limit = tonumber(ARGV[1])
if limit > 0 then
  local buffered = tonumber(redis.call('HGET', KEYS[1], 'buffered') or '0')
  if buffered + total > limit then
    redis.call('HINCRBY', KEYS[1], 'refused_full', total)
    return -1
  end
end
local nbytes, max_bytes = tonumber(ARGV[T + 5]), tonumber(ARGV[T + 4])
if max_bytes > 0 then
  local held = tonumber(redis.call('HGET', KEYS[1], 'buffered_bytes') or '0')
  if held + nbytes > max_bytes then
    redis.call('HINCRBY', KEYS[1], 'refused_full', total)
    return -2
  end
end
-- ---- end of the limits' checks ----
local ttl = tonumber(ARGV[2])
local find, sub, byte = string.find, string.sub, string.byte
-- dedupe: state of the list being written, and seen(): whether its next event's id was
-- stored before (it is in the current bucket now either way). pcall: an id set of
-- another type (written by hand) must not fail the script half-way; its events are
-- stored (at least once) rather than refused.
local dups, p, idall, idnext, idblob, idpos, cur, prev = {'duplicates', 0}, 0, '', 1
local expire_at, expiring, suffix, before, known, trusted = nil, {}, '', '', false, nil
if scope > 0 then
  idall, expire_at = ARGV[T + 1], ARGV[T + 2]
  suffix, before = '}:' .. ARGV[T + 3], '}:' .. tostring(tonumber(ARGV[T + 3]) - 1)
end
-- writes: each RPUSH through pcall. A list of another type (or any refusal, maxmemory's)
-- met half-way is undone, not kept: the values pushed so far are cut off again and the
-- ids added removed, and the script refuses as a whole. (A TYPE per list before any
-- write cost a fifth of APPEND's instructions per event.) What a list pushed: all its
-- values, but where ids left some out (pushed[i]) and in the list that failed (np).
local failed, pushed, added, na, at, np = nil, {}, {}, 0, 0, 0
local function push(key, ...)
  local r = redis.pcall('RPUSH', key, ...)
  if type(r) == 'table' and r['err'] then
    failed = r['err']
    return false
  end
  return true
end
local function seen()
  local stop, eid = find(idblob, '\\n', idpos, true), idblob
  if stop or idpos > 1 then
    stop = stop or (#idblob + 1)
    eid = sub(idblob, idpos, stop - 1)
  else
    stop = #idblob + 1 -- the list's one id: the argument as it came
  end
  idpos = stop + 1
  if eid == '' then return false end
  local fresh = redis.pcall('SADD', cur, eid)
  if fresh == 0 then return true end
  if fresh == 1 then
    na = na + 2
    added[na - 1], added[na] = cur, eid
  end
  return redis.pcall('SISMEMBER', prev, eid) == 1
end
-- end dedupe
a = 4
for i = 1, nkeys do
  local key, n = KEYS[i + 1], counts[i]
  at, np = i, 0
  -- dedupe: this list's ids, if it has any
  local tag = nil
  if scope > 0 then
    local stop, flag = find(idall, ' ', idnext, true) or (#idall + 1), byte(idall, idnext)
    if flag ~= 48 then -- '1' or '2' (its set known to expire), not '0'
      idblob, idpos, known = sub(idall, idnext + 2, stop - 1), 1, flag == 50
      if known then
        -- trusted only while Redis's own clock is still in the caller's bucket: the
        -- EXPIREAT time is the caller's, applied by Redis's clock, so a caller whose
        -- clock is a window or more behind set (or will see) its set expire while it
        -- still takes it to expire, and would make it again without one. Once a call.
        if trusted == nil then
          local b = tonumber(ARGV[T + 3])
          trusted = tonumber(time_now()[1]) < tonumber(expire_at) / (b + 2) * (b + 1)
        end
        known = trusted
      end
      -- the user: between 'logs:user_' and the day's ':' (a user id holds no ':'; a
      -- name without a day, never the API's, is a user of its own)
      local colon = scope == 1 and find(key, ':', @USER_AT@, true)
      tag = colon and sub(key, @USER_AT@, colon - 1) or key
    end
    idnext = stop + 1
  end
  if tag then
    cur, prev = '@IDS@{' .. tag .. suffix, '@IDS@{' .. tag .. before
    local count, blob, pos, vals, m = math.abs(n), ARGV[a + 1], 1, nil, 0
    if n == 1 then
      -- one value, the usual in a batch over many users: pushed as it came (see below),
      -- and its one id, the list's whole entry (seen() inlined)
      local fresh, dup = redis.pcall('SADD', cur, idblob), false
      if fresh == 0 then
        dup = true
      elseif fresh == 1 then
        na = na + 2
        added[na - 1], added[na] = cur, idblob
        dup = redis.pcall('SISMEMBER', prev, idblob) == 1
      end
      if dup then
        dups[#dups + 1] = p
        nbytes = nbytes - #blob
      else
        local r = redis.pcall('RPUSH', key, blob)
        if type(r) == 'number' then np = 1 else failed = r['err'] end
      end
      p, count = p + 1, 0
    else
      vals = {}
    end
    for j = 1, count do
      local v
      if n > 0 then
        local stop = find(blob, '\\n', pos, true) or (#blob + 1)
        v = sub(blob, pos, stop - 1)
        pos = stop + 1
      else
        v = ARGV[a + j]
      end
      if seen() then
        dups[#dups + 1] = p
        nbytes = nbytes - #v
      else
        m = m + 1
        vals[m] = v
        if m == 1000 then
          if not push(key, unpack(vals, 1, m)) then break end
          np, m = np + m, 0
        end
      end
      p = p + 1
    end
    if m > 0 and not failed and push(key, unpack(vals, 1, m)) then np = np + m end
    if np ~= math.abs(n) then pushed[i] = np end
    -- the set's expiry, once: a TTL is read, an EXPIREAT written (and sent to the AOF
    -- and the replicas), so it is set only on the set's first write. A caller that
    -- saw this set written (and so expiring) in this bucket says so ('2'): no TTL.
    if not known and not expiring[cur] then
      expiring[cur] = true
      if redis.call('TTL', cur) == -1 then redis.call('EXPIREAT', cur, expire_at) end
    end
    a = (n > 0) and a + 2 or a + 1 - n
  -- end dedupe
  elseif n == 1 then
    -- one value, the usual in a batch over many users: pushed as it came, with no
    -- table, no search for a newline and no copy (a third of APPEND's instructions
    -- per event under callgrind, 100-event batches over 1,000 users)
    -- (push() inlined: its varargs cost 1,800 instructions per event)
    local r = redis.pcall('RPUSH', key, ARGV[a + 1])
    if type(r) == 'number' then np = 1 else failed = r['err'] end
    a = a + 2
    p = p + 1
  elseif n > 0 then
    local blob, vals, m, pos = ARGV[a + 1], {}, 0, 1
    for _ = 1, n do
      local stop = find(blob, '\\n', pos, true) or (#blob + 1)
      m = m + 1
      vals[m] = sub(blob, pos, stop - 1)
      pos = stop + 1
      if m == 1000 then
        if not push(key, unpack(vals, 1, m)) then break end
        np, m = np + m, 0
      end
    end
    if m > 0 and not failed and push(key, unpack(vals, 1, m)) then np = np + m end
    a = a + 2
    p = p + n
  else
    local first, last = a + 1, a - n
    while first <= last do
      local stop = math.min(last, first + 999)
      if not push(key, unpack(ARGV, first, stop)) then break end
      np, first = np + stop - first + 1, stop + 1
    end
    a = last + 1
    p = p - n
  end
  if failed then break end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
if failed then
  for j = 1, at do
    local c = (j == at) and np or pushed[j] or math.abs(counts[j])
    if c > 0 then redis.call('LTRIM', KEYS[j + 1], 0, -c - 1) end
  end
  for j = 1, na, 2 do redis.call('SREM', added[j], added[j + 1]) end
  if find(failed, 'WRONGTYPE', 1, true) ~= 1 then return redis.error_reply(failed) end
  -- the lists of another type, for the caller to name
  local wrong = {}
  for j = 1, nkeys do
    local t = redis.call('TYPE', KEYS[j + 1])['ok']
    if t ~= 'none' and t ~= 'list' then wrong[#wrong + 1] = j end
  end
  return wrong
end
-- dedupe: duplicates were not stored
total = total - (#dups - 2)
-- end dedupe
-- ---- limits: counters (after the writes) ----
redis.call('HINCRBY', KEYS[1], 'buffered_bytes', nbytes)
if nbuckets > 0 then
  -- a bucket left alone refills to burst within this time; then it may as well be gone
  local full_ms = math.ceil(tonumber(ARGV[T + 7]) * 1000 / tonumber(ARGV[T + 6])) + 1000
  for b = 1, nbuckets do
    local key = KEYS[nkeys + 1 + b]
    if stale[b] then redis.call('DEL', key) end
    redis.call('HSET', key, 'tokens', string.format('%.17g', tokens[b]), 'ts', now_ms)
    redis.call('PEXPIRE', key, full_ms)
  end
end
-- ---- end of the limits' counters ----
redis.call('HINCRBY', KEYS[1], 'accepted', total)
local now = tonumber(time_now()[1])
redis.call('ZADD', flushes, now, id)
redis.call('ZREMRANGEBYSCORE', flushes, '-inf', now - 60)
local buffered = redis.call('HINCRBY', KEYS[1], 'buffered', total)
-- dedupe: which events were duplicates, so each request of the flush learns its own
if #dups > 2 then
  dups[2] = buffered
  return dups
end
-- end dedupe
return buffered
""".replace("@IDS@", keys.IDS_PREFIX).replace("@USER_AT@", str(len(keys.EVENT_PREFIX) + 1))


def ids_entry(line_ids: list[str], expiring: bool = False) -> str:
    """One list's entry in APPEND's ids argument: ``'0'`` when none of its events has an
    id, else ``'1'`` (``'2'`` if the caller knows the list's id set of this bucket
    already expires) and its events' ids ('' for one without), one per line."""
    head = "2\n" if expiring else "1\n"
    if len(line_ids) == 1:  # the usual in a flush over many users
        return head + line_ids[0] if line_ids[0] else "0"
    return head + "\n".join(line_ids) if any(line_ids) else "0"


@dataclass(frozen=True)
class Limited:
    """A request APPEND refused for its rate limit, and how long until it would pass."""

    #: 0-based position among the rate-limited requests (the charges) of the call
    request: int
    retry_after_ms: int


@dataclass(frozen=True)
class Appended:
    """APPEND's reply: stored (``buffered`` events now), refused as full (of events or
    of bytes), wrong types, or rate-limited requests."""

    outcome: Literal["stored", "full", "full_bytes", "wrongtype", "limited"]
    buffered: int = 0
    #: 0-based positions (in KEYS order, after the stats hash) of lists of another type
    #: (or whose user's dedupe id sets are of another type)
    wrong: tuple[int, ...] = ()
    #: 0-based positions, over all values in the order sent, of the events not stored
    #: because their id was stored before (dedupe)
    duplicates: tuple[int, ...] = ()
    limited: tuple[Limited, ...] = ()


def appended(reply: Any) -> Appended:
    """Decode APPEND's reply."""
    if isinstance(reply, list):
        if reply and _text(reply[0]) == "duplicates":
            return Appended(
                "stored", buffered=int(reply[1]), duplicates=tuple(int(i) for i in reply[2:])
            )
        if reply and _text(reply[0]) == "limited":
            pairs = zip(reply[1::2], reply[2::2], strict=True)
            limited = tuple(Limited(int(i) - 1, int(ms)) for i, ms in pairs)
            return Appended("limited", limited=limited)
        return Appended("wrongtype", wrong=tuple(int(i) - 1 for i in reply))
    n = int(reply)
    if n == -2:
        return Appended("full_bytes")
    return Appended("full") if n < 0 else Appended("stored", buffered=n)


CLAIM = """
-- KEYS[1] = event list, KEYS[2] = claim list, KEYS[3] = lease, KEYS[4] = pending offset,
-- KEYS[5] = quarantine list, KEYS[6] = holder record
-- ARGV[1] = owner token, ARGV[2] = lease in ms
-- Returns {status, detail}: status is claimed | resume | busy | empty | wrongtype.
-- A fresh claim is never begun here (no offset recorded at a size the caller saw): a
-- claim whose answer never came can still run after its drainer let the file go, and
-- by then the size may be behind lines another drainer acknowledged. BEGIN records it,
-- sent once the claim is known to be the caller's, with the file locked.
-- A lease, offset or quarantine overwritten by hand with another type would make this
-- or a later script fail (for every key in its pipeline, or after ACK's LTRIM): refuse.
local function wrong(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then return t .. ' at ' .. key end
end
local bad = wrong(KEYS[3], 'string') or wrong(KEYS[4], 'string') or wrong(KEYS[5], 'list')
  or wrong(KEYS[6], 'string')
if bad then return {'wrongtype', bad} end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return {'busy', holder} end
local ct = redis.call('TYPE', KEYS[2])['ok']
if ct ~= 'none' then
  if ct ~= 'list' then return {'wrongtype', ct} end
  -- a claim left by a drainer whose lease ran out: finish it before taking more
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  return {'resume', redis.call('GET', KEYS[4]) or ''}
end
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {'empty', ''} end
if t ~= 'list' then return {'wrongtype', t} end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[4], KEYS[6])
return {'claimed', ''}
"""


class ClaimStatus(StrEnum):
    """What CLAIM did with a key."""

    CLAIMED = "claimed"  # renamed to its claim list, lease taken
    RESUME = "resume"  # a stranded claim (its lease ran out) is now ours to finish
    BUSY = "busy"  # another drainer holds the lease
    EMPTY = "empty"  # nothing buffered
    WRONGTYPE = "wrongtype"  # a key of the set holds another type: left alone


@dataclass(frozen=True)
class Claimed:
    """CLAIM's reply: the status, and the holder (busy), type (wrongtype) or raw
    pending offset (resume)."""

    status: ClaimStatus
    detail: str


def claimed(reply: Any) -> Claimed:
    """Decode CLAIM's reply."""
    return Claimed(ClaimStatus(_text(reply[0])), _text(reply[1]))


PREPARE = """
-- KEYS[1] = lease, KEYS[2] = pending offset, KEYS[3] = holder record
-- ARGV[1] = owner token, ARGV[2] = lease in ms
-- Returns {pending offset or '', holder record or ''}, or false if the lease is no
-- longer ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or ''}
"""

_SIZE = re.compile(r"0|[1-9][0-9]{0,17}")
_RECORD = re.compile(rf"({_SIZE.pattern}) (\S+)")


def parse_size(text: str) -> int | None:
    """A byte count written the way BEGIN writes one, or ``None``."""
    return int(text) if _SIZE.fullmatch(text) else None


@dataclass(frozen=True)
class Record:
    """A holder record, ``'<size> <owner>'``: the file size BEGIN saw (what was
    acknowledged then, and the pending offset it recorded with it) or ACK left."""

    size: int
    owner: str

    @classmethod
    def parse(cls, text: str) -> Record | None:
        """The record in ``text``, or ``None`` if it is not one (e.g. written by hand)."""
        m = _RECORD.fullmatch(text)
        return cls(int(m[1]), m[2]) if m else None


class Pending(StrEnum):
    """Whether a resumed claim's file has an unacknowledged append to undo."""

    LOST = "lost"  # the lease is no longer ours: leave the key
    CLEAN = "clean"  # no append was in progress
    OFFSET = "offset"  # an append was in progress: check ``offset`` and cut back to it


@dataclass(frozen=True)
class Prepared:
    """PREPARE's reply; ``offset`` and ``holder`` are the stored text, not yet trusted."""

    pending: Pending
    offset: str = ""
    holder: str = ""


def prepared(reply: Any) -> Prepared:
    """Decode PREPARE's reply."""
    if reply is None:
        return Prepared(Pending.LOST)
    offset, holder = _text(reply[0]), _text(reply[1])
    return Prepared(Pending.OFFSET if offset else Pending.CLEAN, offset, holder)


BEGIN = """
-- KEYS[1] = claim list, KEYS[2] = lease, KEYS[3] = pending offset, KEYS[4] = holder record
-- ARGV[1] = owner token, ARGV[2] = lease in ms, ARGV[3] = file size now
-- Records where the append will start, and beside it who recorded it ('<size> <owner>'
-- in the holder record: an offset is trusted only if it matches); false if not our
-- lease. The caller reads the
-- batch with a plain LRANGE right after, in the same pipeline: returning it from here
-- would copy every value into Lua and back (4x the Redis time). Only the lease
-- holder trims a claim, and a new holder cannot append before it has the file's
-- lock, so the LRANGE reads what this script saw.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[4], ARGV[3] .. ' ' .. ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Began:
    """BEGIN's reply with the LRANGE after it: the batch, or the lease lost."""

    lease: Literal["held", "lost"]
    values: list[bytes]


def began(reply: Any, values: Any) -> Began:
    """Decode BEGIN's reply and the batch the LRANGE after it read."""
    return Began("lost", []) if reply is None else Began("held", list(values))


ACK = """
-- KEYS[1] = claim list, KEYS[2] = lease, KEYS[3] = pending offset, KEYS[4] = stats hash,
-- KEYS[5] = quarantine list, KEYS[6] = holder record
-- ARGV[1] = owner token, ARGV[2] = lease in ms, ARGV[3] = events acknowledged,
-- ARGV[4] = events written, ARGV[5] = bytes written, ARGV[6] = file size now,
-- ARGV[7..] = quarantined values
-- Drops the batch that is now safely on disk; returns what is left, or -1 if not our lease.
-- The bytes it drops from the buffer (buffered_bytes, as APPEND counted them: the values'
-- lengths) are the bytes written less their newlines, plus the quarantined values.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[3])
redis.call('LTRIM', KEYS[1], n, -1)
redis.call('DEL', KEYS[3])
local dropped = tonumber(ARGV[5]) - tonumber(ARGV[4])
if #ARGV > 6 then
  for i = 7, #ARGV do dropped = dropped + #ARGV[i] end
  for i = 7, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[5], unpack(ARGV, i, math.min(#ARGV, i + 999)))
  end
  redis.call('HINCRBY', KEYS[4], 'quarantined', #ARGV - 6)
end
if tonumber(redis.call('HINCRBY', KEYS[4], 'buffered', -n)) < 0 then
  redis.call('HSET', KEYS[4], 'buffered', 0)
end
if tonumber(redis.call('HINCRBY', KEYS[4], 'buffered_bytes', -dropped)) < 0 then
  redis.call('HSET', KEYS[4], 'buffered_bytes', 0)
end
redis.call('HINCRBY', KEYS[4], 'drained_events', tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[4], 'drained_bytes', tonumber(ARGV[5]))
local left = redis.call('LLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[2], KEYS[6])
  redis.call('HINCRBY', KEYS[4], 'drained_keys', 1)
else
  redis.call('SET', KEYS[6], ARGV[6] .. ' ' .. ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return left
"""


@dataclass(frozen=True)
class Acked:
    """ACK's reply: events left in the claim, or the lease lost (nothing done)."""

    lease: Literal["held", "lost"]
    left: int = 0


def acked(reply: Any) -> Acked:
    """Decode ACK's reply."""
    n = int(reply)
    return Acked("lost") if n < 0 else Acked("held", n)


RENEW = """
-- KEYS[1] = lease; ARGV[1] = owner token, ARGV[2] = lease in ms
-- Returns 1 if the lease is still ours (and now extended), else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def renewed(reply: Any) -> Literal["held", "lost"]:
    """Decode RENEW's reply."""
    return "held" if int(reply) == 1 else "lost"


RELEASE = """
-- KEYS[1] = lease; ARGV[1] = owner token
-- Gives up a lease early so another drainer need not wait for it to run out.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def released(reply: Any) -> Literal["released", "not ours"]:
    """Decode RELEASE's reply."""
    return "released" if int(reply) == 1 else "not ours"
