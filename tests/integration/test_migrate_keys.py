"""``logpipe migrate-keys`` on a real Redis: the companions an older version named without
a hash tag are renamed together, a taken name leaves its list alone, and a drainer then
finishes the renamed claim as its own."""

from __future__ import annotations

import json

import pytest
import redis

from logpipe_cli.keys import EventKey
from logpipe_cli.migration import migrate_keys
from tests.cli.conftest import Invoke
from tests.integration.conftest import Rig, line

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

DAY = 19675


def old_claim(raw: redis.Redis, ek: EventKey, n: int, *, lease: str | None = None) -> list[bytes]:
    """What an older drainer left: a claim (and a lease, offset, holder, quarantine)."""
    claim, lease_key, offset, holder, quarantine = ek.legacy_companions
    lines = [line(ek.user_id, i, ek.day) for i in range(n)]
    raw.rpush(claim, *lines)
    if lease is not None:
        raw.set(lease_key, lease, px=60_000)
    raw.set(offset, "0")
    raw.set(holder, "0 old-owner")
    raw.rpush(quarantine, b"old bad")
    return lines


async def test_old_names_are_renamed_together_and_then_drained(rig: Rig) -> None:
    a, b = EventKey("a", DAY), EventKey("b", DAY)
    lines = old_claim(rig.raw, a, 3, lease="old-drainer")
    old_claim(rig.raw, b, 1)
    rig.raw.rpush(b.claim, b"{}")  # b's new claim exists: a new drainer ran meanwhile
    rig.raw.rpush(a.quarantine, b"new bad")

    dry = await migrate_keys(rig.buffer, dry_run=True)
    assert dry.lists == [a.key, b.key]
    assert dry.renamed == 9
    assert rig.raw.exists(*a.legacy_companions) == 5  # a dry run changes nothing

    report = await migrate_keys(rig.buffer)
    assert report.taken == [b.claim]
    assert report.renamed == 5
    assert rig.raw.exists(*a.legacy_companions) == 0
    assert rig.raw.lrange(a.claim, 0, -1) == lines
    assert rig.raw.get(a.lease) == b"old-drainer"
    assert 0 < rig.raw.pttl(a.lease) <= 60_000  # the lease keeps its expiry
    assert rig.raw.get(a.holder) == b"0 old-owner"
    # the old quarantined values go before those quarantined since the upgrade
    assert rig.raw.lrange(a.quarantine, 0, -1) == [b"old bad", b"new bad"]
    assert rig.raw.exists(*b.legacy_companions) == 4  # left as it was (no lease given)

    # once the old drainer's lease is gone, the claim is finished as a stranded one
    rig.raw.delete(a.lease)
    report_drain = await rig.drainer().drain_once()
    assert rig.file_lines("a") == lines
    assert a.key not in report_drain.unsafe
    # b's old claim is still there, reported as unsafe rather than drained
    assert b.legacy_companions[0] in report_drain.unsafe


def test_the_command_reports_and_fails_on_a_taken_name(redis_url: str, invoke: Invoke) -> None:
    # a plain test (no event loop of its own): the command runs asyncio.run itself
    with redis.Redis.from_url(redis_url) as raw:
        a = EventKey("a", DAY)
        old_claim(raw, a, 2)
        env = {"LOGPIPE_REDIS_URL": redis_url}
        check = invoke("redis-check", "--json", env=env)
        assert json.loads(check.stdout)["legacy_keys"] == 4  # no lease: 4 keys
        assert any("migrate-keys" in w for w in json.loads(check.stdout)["warnings"])
        dry = invoke("migrate-keys", "--dry-run", "--json", env=env)
        assert dry.exit_code == 0, dry.output
        assert json.loads(dry.stdout)["renamed"] == 4
        done = invoke("migrate-keys", env=env)
        assert done.exit_code == 0, done.output
        assert "renamed 4 keys of 1 list" in done.stdout
        assert raw.exists(*a.companions) == 4
        assert json.loads(invoke("redis-check", "--json", env=env).stdout)["legacy_keys"] == 0

        old_claim(raw, a, 1)  # the same list again: its new names are taken now
        again = invoke("migrate-keys", env=env)
        assert again.exit_code == 1
        assert f"{a.claim} exists already" in again.stderr


async def test_a_list_with_old_named_keys_is_left_alone_until_they_are_renamed(
    rig: Rig,
) -> None:
    # an older drainer died half way through writing its claim's batch: 1.5 lines in the
    # file, the offset it recorded (0) beside the claim
    a = EventKey("a", DAY)
    old = old_claim(rig.raw, a, 3)
    rig.path("a").parent.mkdir(parents=True, exist_ok=True)
    rig.path("a").write_bytes(old[0] + b"\n" + old[1][:7])
    new = await rig.add("a", range(10, 12))  # sent since the upgrade
    await rig.add("other", range(2))

    report = await rig.drainer().drain_once()
    # drained around the old claim, a's file would take lines the repair then cuts
    assert rig.file("a") == old[0] + b"\n" + old[1][:7]
    assert rig.raw.llen(a.key) == 2
    assert any(u.startswith(a.key) and "migrate-keys" in u for u in report.unsafe)
    assert rig.file_lines("other") == [line("other", i) for i in range(2)]  # others go on

    await migrate_keys(rig.buffer)
    report = await rig.drainer().drain_once()
    assert report.ok, report
    assert rig.file_lines("a") == [*old, *new]  # the torn write repaired, nothing cut
    assert rig.raw.exists(a.key, a.claim, *a.legacy_companions) == 0
