"""Fault 6: keys and values written into Redis by hand, as an operator or a bug might.

Values that are not one-line JSON objects are moved to ``logpipe:quarantine:{<key>}``
(in order) while the good ones around them are written; keys that do not map to a file
inside ``logs_dir`` and keys of the wrong type are reported and left exactly as they
were. The drainer never crashes and never creates a file outside ``logs_dir``, and the
good keys next to the bad ones are drained as usual, by ``--once`` and by the loop.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.faults.report import record
from tests.processes import Launcher, json_documents, text, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.redis]

DAY = 19_000
GOOD = [
    b'{"user_id":"ok","event":"a","timestamp":1641600000,"n":1}',
    b'{"user_id":"ok","event":"b","timestamp":1641600000,"n":2}',
]
BAD_VALUES = [
    b"not json",
    b'{"torn": ',
    b"[1,2,3]",
    b'"a string"',
    b'{"a":1}\n{"b":2}',
    b"\xff\xfe",
]
#: keys that match logs:user_*:* but name no file inside logs_dir
UNSAFE = [
    b"logs:user_../../x:1",
    b"logs:user_..:1",
    b"logs:user_/etc/passwd:1",
    b"logs:user_a/../../b:1",
    b"logs:user_.hidden:1",
    b"logs:user_:1",
    b"logs:user_a:01",
    b"logs:user_a:-1",
    b"logs:user_a:1:2",
    b"logs:user_a b:1",
    b"logs:user_\xff:1",
    b"logs:user_a:99999999999",
]


def tree(root: Path, *skip: Path) -> dict[str, float]:
    """Every file under ``root`` except those under ``skip``, with its mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if any(Path(dirpath).is_relative_to(s) for s in skip):
            continue
        for f in files:
            p = Path(dirpath) / f
            out[str(p)] = p.stat().st_mtime
    return out


def delivered(logs: Path, expected: dict[str, list[bytes]]) -> dict[str, int]:
    """Lost, duplicated and torn lines: the files under ``logs`` against ``expected``
    (file path relative to ``logs`` -> its lines), counted, not assumed."""
    lost = duplicated = torn = 0
    found: dict[str, list[bytes]] = {}
    for p in sorted(logs.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            lines = data.split(b"\n")
            if lines[-1]:  # a last line without its newline
                torn += 1
            found[str(p.relative_to(logs))] = [x for x in lines[:-1] if x]
    for name in set(expected) | set(found):
        want, got = Counter(expected.get(name, [])), Counter(found.get(name, []))
        for line in got:
            try:
                whole = isinstance(json.loads(line), dict)
            except ValueError:
                whole = False
            torn += 0 if whole else got[line]
        lost += sum((want - got).values())
        duplicated += sum((got - want).values())
    return {"lost": lost, "duplicated": duplicated, "torn": torn}


def dump(client: redis.Redis, keys: list[bytes]) -> dict[bytes, object]:
    """The content of ``keys``, whatever their type."""
    out: dict[bytes, object] = {}
    for k in keys:
        kind = text(client.type(k))
        out[k] = (
            kind,
            client.lrange(k, 0, -1)
            if kind == "list"
            else client.hgetall(k)
            if kind == "hash"
            else client.dump(k),
        )
    return out


def test_bad_keys_and_values_are_reported_and_left_alone_never_a_crash(
    launcher: Launcher, redis_url: str, tmp_path: Path, fault_report: Path
) -> None:
    started = time.monotonic()
    logs = tmp_path / "deep" / "er" / "logs"
    logs.mkdir(parents=True)
    env = launcher.env(redis_url, logs, drainer_interval_seconds=0.1, drainer_lease_seconds=1)
    client = redis.Redis.from_url(redis_url)
    mixed = f"logs:user_ok:{DAY}".encode()
    client.rpush(mixed, GOOD[0], *BAD_VALUES, GOOD[1])
    for k in UNSAFE:
        client.rpush(k, b'{"user_id":"x","event":"escape","timestamp":1}')
    wrong_hash = f"logs:user_x:{DAY}".encode()
    client.hset(wrong_hash, mapping={"event": "not a list"})
    wrong_string = f"logs:user_y:{DAY}".encode()
    client.set(wrong_string, b'{"event":"not a list"}')
    # logpipe's own keys beside a good event list, overwritten with the wrong type: the
    # event list must be left alone too (not claimed, and not failing its neighbours)
    namespaced = {
        "claim": lambda k: client.sadd(k, b"member"),
        "lease": lambda k: client.hset(k, mapping={"owner": "me"}),
        "offset": lambda k: client.rpush(k, b"12"),
        "quarantine": lambda k: client.set(k, b"not a list"),
    }
    for name, overwrite in namespaced.items():
        event_list = f"logs:user_{name}:{DAY}".encode()
        client.rpush(event_list, GOOD[0])
        overwrite(f"logpipe:{name}:{{logs:user_{name}:{DAY}}}".encode())
    namespace_keys = [f"logpipe:{n}:{{logs:user_{n}:{DAY}}}".encode() for n in namespaced]
    namespace_lists = [f"logs:user_{n}:{DAY}".encode() for n in namespaced]
    left_alone = [*UNSAFE, wrong_hash, wrong_string, *namespace_keys, *namespace_lists]
    before = dump(client, left_alone)
    outside_before = tree(tmp_path, logs, launcher.workdir)

    once = launcher.run(["drain", "--once", "--json"], env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert "Traceback" not in once.stderr
    report = json.loads(once.stdout)
    assert report["quarantined"] == len(BAD_VALUES)
    assert report["events"] == len(GOOD)
    assert sorted(report["wrong_type"]) == sorted(
        k.decode() for k in (wrong_hash, wrong_string, *namespace_lists)
    )
    assert len(report["unsafe"]) == len(UNSAFE)
    for k in UNSAFE:
        assert k.decode("utf-8", "backslashreplace") in report["unsafe"]
    for k in [*UNSAFE, wrong_hash, wrong_string, *namespace_lists]:
        assert repr(k.decode("utf-8", "backslashreplace")) in once.stderr  # logged as well

    # good values written in order, bad ones quarantined in order, the list gone
    written = logs / "user_ok" / f"{DAY}.jsonl"
    assert written.read_bytes() == GOOD[0] + b"\n" + GOOD[1] + b"\n"
    assert client.lrange(b"logpipe:quarantine:{" + mixed + b"}", 0, -1) == BAD_VALUES
    assert client.exists(mixed, b"logpipe:claim:{" + mixed + b"}") == 0
    # bad keys untouched; no file outside logs_dir; only the good file inside it
    assert dump(client, left_alone) == before
    assert tree(tmp_path, logs, launcher.workdir) == outside_before
    assert [str(p.relative_to(logs)) for p in logs.rglob("*") if p.is_file()] == [
        f"user_ok/{DAY}.jsonl"
    ]

    # the loop meets the same keys pass after pass, keeps running, and drains new events
    loop = launcher.start(["drain", "--json"], env, name="drain-loop")
    fresh = f"logs:user_ok:{DAY + 1}".encode()
    client.rpush(fresh, GOOD[0])
    wait_until(
        lambda: (
            (logs / "user_ok" / f"{DAY + 1}.jsonl").is_file()
            and not client.exists(fresh, b"logpipe:claim:{" + fresh + b"}")
        ),
        "the loop to drain a new key",
        procs=[loop],
    )
    wait_until(
        lambda: len(json_documents(loop.stdout())) >= 3, "three passes of the loop", procs=[loop]
    )
    loop.signal(signal.SIGTERM)
    assert loop.wait() == 0, loop.output()
    passes = json_documents(loop.stdout())
    assert all(p["errors"] == [] and len(p["unsafe"]) == len(UNSAFE) for p in passes)
    assert all(len(p["wrong_type"]) == 2 + len(namespaced) for p in passes)
    left = dump(client, left_alone)
    outside_after = tree(tmp_path, logs, launcher.workdir)
    quarantined = client.lrange(b"logpipe:quarantine:{" + mixed + b"}", 0, -1)
    client.close()
    row = record(
        fault_report,
        "bad_keys",
        "6. Bad keys and values written by hand",
        trials=1 + len(passes),
        sent=len(GOOD) + len(BAD_VALUES) + 1,
        **delivered(
            logs,
            {f"user_ok/{DAY}.jsonl": GOOD, f"user_ok/{DAY + 1}.jsonl": [GOOD[0]]},
        ),
        quarantined=len(quarantined),
        unsafe_keys_left=sum(left.get(k) == before[k] for k in UNSAFE),
        wrong_type_keys_left=sum(
            left.get(k) == before[k] for k in [wrong_hash, wrong_string, *namespace_lists]
        ),
        files_outside_logs_dir=len(set(outside_after) - set(outside_before)),
        seconds=round(time.monotonic() - started, 1),
    )
    assert row["lost"] == row["duplicated"] == row["torn"] == 0
    assert quarantined == BAD_VALUES
    assert left == before
    assert outside_after == outside_before
