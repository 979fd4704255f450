"""``logpipe migrate-keys``: rename the companion keys that older versions named without
a hash tag (``logpipe:claim:logs:user_<id>:<day>``) to today's names
(``logpipe:claim:{logs:user_<id>:<day>}``, see :mod:`logpipe_cli.keys`).

One atomic script per list moves its claim, lease, offset, holder record and quarantine
together, so a drainer never sees half of them renamed. Run it with the drainers stopped
(until then they leave an old-named claim alone and report it as unsafe); the API never
writes these keys, so it may keep running. Standalone and Sentinel only: a Redis Cluster
never held the old names, and they would sit in other slots than the new ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from logpipe_cli import keys
from logpipe_cli.buffer import Buffer, redis_errors
from logpipe_cli.errors import ConfigError
from logpipe_cli.keys import EventKey
from logpipe_cli.redis_conn import is_cluster

MIGRATE = """
-- KEYS[1..5] = a list's claim, lease, offset, holder and quarantine, named the old way;
-- KEYS[6..10] = the same, named today's way (hash-tagged)
-- Renames every old key that exists to its new name (a lease keeps its expiry), all or
-- none: if a new name is taken (a new-version drainer ran meanwhile) nothing moves and
-- {'taken', name} is returned, except the quarantine, whose old values go before the new
-- ones. Returns {'renamed', n}.
for i = 1, 4 do
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('EXISTS', KEYS[i + 5]) == 1 then
    return {'taken', KEYS[i + 5]}
  end
end
local n = 0
for i = 1, 4 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 5])
    n = n + 1
  end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  if redis.call('EXISTS', KEYS[10]) == 1 then
    local old = redis.call('LRANGE', KEYS[5], 0, -1)
    for j = #old, 1, -1 do redis.call('LPUSH', KEYS[10], old[j]) end
    redis.call('DEL', KEYS[5])
  else
    redis.call('RENAME', KEYS[5], KEYS[10])
  end
  n = n + 1
end
return {'renamed', n}
"""


@dataclass
class MigrationReport:
    """What ``migrate-keys`` found and did."""

    dry_run: bool
    #: lists whose old-named companions were found (all of them, renamed or not)
    lists: list[str] = field(default_factory=list)
    renamed: int = 0  # keys renamed (or, dry run, that would be)
    #: new names already taken: that list's keys were left as they were
    taken: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def find_legacy(buffer: Buffer) -> dict[EventKey, list[str]]:
    """Every list with companions named the old way, and those names (by ``SCAN``)."""
    found: dict[EventKey, list[str]] = {}
    for pattern in keys.LEGACY_PATTERNS:
        async for raw in buffer.scan(pattern):
            ek = keys.parse_legacy(raw)
            if ek is not None:
                name = raw.decode()
                names = found.setdefault(ek, [])
                if name not in names:  # SCAN may repeat a key
                    names.append(name)
    return found


async def migrate_keys(buffer: Buffer, *, dry_run: bool = False) -> MigrationReport:
    """Rename old-named companion keys to today's names (see the module's docstring)."""
    if is_cluster(buffer.client):
        raise ConfigError(
            "migrate-keys renames the keys of a standalone or Sentinel Redis; a Redis "
            "Cluster never held the old names (redis.mode is cluster)"
        )
    found = await find_legacy(buffer)
    report = MigrationReport(dry_run, lists=sorted(ek.key for ek in found))
    if dry_run:
        report.renamed = sum(map(len, found.values()))
        return report
    script = buffer.client.register_script(MIGRATE)
    for ek in sorted(found):
        with redis_errors("renaming keys"):
            status, detail = await script(keys=[*ek.legacy_companions, *ek.companions])
        if status == b"taken":
            report.taken.append(detail.decode())
        else:
            report.renamed += int(detail)
    return report
