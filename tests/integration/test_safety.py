"""Keys and values nobody should have written: left in Redis or quarantined, never a path out."""

from __future__ import annotations

import pytest

from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, Rig, line

pytestmark = pytest.mark.anyio

UNSAFE = [
    "logs:user_../../etc:1",
    "logs:user_a/b:1",
    "logs:user_..:1",
    "logs:user_.ssh:1",
    "logs:user_/abs:1",
    "logs:user_a:01",
    "logs:user_a:-1",
    "logs:user_a:b:1",
    "logs:user_a:1:",
    "logs:user_x\\y:1",
]


async def test_unsafe_keys_are_reported_and_left(rig: Rig) -> None:
    root = rig.logs.parent  # logs_dir is <tmp>/logs: a file written outside it shows up here
    for key in UNSAFE:
        rig.raw.rpush(key, line("x", 1))
    rig.raw.rpush("logpipe:claim:{logs:user_../x:1}", line("x", 2))
    good = await rig.add("ok", range(2))

    report = await rig.drainer().drain_once()
    assert sorted(report.unsafe) == sorted([*UNSAFE, "logpipe:claim:{logs:user_../x:1}"])
    assert report.events == 2
    assert rig.file_lines("ok") == good
    for key in [*UNSAFE, "logpipe:claim:{logs:user_../x:1}"]:
        assert rig.raw.lrange(key, 0, -1) in ([line("x", 1)], [line("x", 2)]), key
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == [f"logs/user_ok/{DAY}.jsonl"]
    assert not (root / "etc").exists()
    assert not (root.parent / "etc").exists()


async def test_wrong_type_keys_are_reported_and_left(rig: Rig) -> None:
    rig.raw.set("logs:user_s:1", "a string")
    rig.raw.hset("logs:user_h:1", "f", "v")
    rig.raw.sadd("logpipe:claim:{logs:user_c:1}", "member")
    good = await rig.add("ok", range(3))
    report = await rig.drainer().drain_once()
    assert sorted(report.wrong_type) == ["logs:user_c:1", "logs:user_h:1", "logs:user_s:1"]
    assert report.events == 3
    assert rig.file_lines("ok") == good
    assert rig.raw.get("logs:user_s:1") == b"a string"
    assert rig.raw.hgetall("logs:user_h:1") == {b"f": b"v"}
    assert rig.raw.smembers("logpipe:claim:{logs:user_c:1}") == {b"member"}
    assert not (rig.logs / "user_s").exists()
    assert not (rig.logs / "user_h").exists()


async def test_invalid_values_are_quarantined_and_the_rest_written(rig: Rig) -> None:
    ek = EventKey("u", DAY)
    bad = [
        b"not json",
        b"[1,2]",
        b'{"a":1}\n{"b":2}',
        b'{"a":[1',
        b"2]}",
        b'{"bad utf8":"\xff"}',
        b"",
    ]
    good = [line("u", n) for n in range(3)]
    rig.raw.rpush(
        ek.key, good[0], bad[0], bad[1], good[1], bad[2], bad[3], bad[4], bad[5], bad[6], good[2]
    )
    report = await rig.drainer().drain_once()
    assert report.ok, report.errors
    assert report.events == 3
    assert report.quarantined == len(bad)
    assert rig.file_lines("u") == good
    assert rig.raw.lrange(ek.quarantine, 0, -1) == bad
    assert rig.stats()["quarantined"] == len(bad)
    assert rig.raw.exists(ek.key, ek.claim) == 0


async def test_custom_log_pattern_only_drains_what_it_matches(rig: Rig) -> None:
    a = await rig.add("a1", range(2))
    await rig.add("b1", range(2))
    report = await rig.drainer(log_pattern="logs:user_a*:*").drain_once()
    assert report.events == 2
    assert rig.file_lines("a1") == a
    assert rig.raw.llen(EventKey("b1", DAY).key) == 2
