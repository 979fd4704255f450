"""The disk fails: the drain says so, the events stay in Redis, the next pass delivers once."""

from __future__ import annotations

import errno
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli.keys import EventKey
from tests.integration.conftest import DAY, Rig, logpipe_env, run_python

pytestmark = pytest.mark.anyio

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing(real: Callable[..., Any], *, after_bytes: int | None = None) -> Callable[..., Any]:
    """os.write that fails with ENOSPC, optionally after letting ``after_bytes`` through."""
    budget = [after_bytes or 0]

    def write(fd: int, data: Any) -> int:
        if budget[0] > 0:
            n: int = real(fd, bytes(data)[: budget[0]])
            budget[0] -= n
            return n
        raise ENOSPC

    return write


@pytest.mark.parametrize("partial", [None, 30], ids=["nothing-written", "partial-write"])
async def test_disk_full_keeps_events_and_next_pass_delivers_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, partial: int | None
) -> None:
    first = await rig.add("u", range(3))
    await rig.drainer().drain_once()
    second = await rig.add("u", range(3, 8))
    other = await rig.add("v", range(2))

    monkeypatch.setattr(os, "write", failing(os.write, after_bytes=partial))
    report = await rig.drainer().drain_once()
    monkeypatch.undo()

    assert not report.ok
    assert any("No space left on device" in e and "user_u" in e for e in report.errors)
    assert rig.file_lines("u") == first  # cut back to whole lines
    assert rig.file("v") == b""
    ek = EventKey("u", DAY)
    assert rig.raw.lrange(ek.claim, 0, -1) == second  # still in Redis, in order
    assert rig.raw.exists(ek.lease) == 0  # released, so anyone can retry at once
    assert rig.stats()["buffered"] == len(second) + len(other)

    retry = await rig.drainer().drain_once()
    assert retry.ok, retry.errors
    assert retry.events == len(second) + len(other)
    assert rig.file_lines("u") == first + second
    assert rig.file_lines("v") == other
    assert rig.redis_keys() == []
    assert rig.stats()["buffered"] == 0


async def test_fsync_failure_is_a_failed_write(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    events = await rig.add("u", range(4))
    rig.path("u").parent.mkdir(parents=True)
    rig.path("u").touch()  # no directory fsync needed: only the append's fsync runs

    def no_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", no_fsync)
    report = await rig.drainer().drain_once()
    monkeypatch.undo()
    assert any("Input/output error" in e for e in report.errors)
    assert rig.file("u") == b""
    assert rig.stats()["buffered"] == 4

    retry = await rig.drainer().drain_once()
    assert retry.ok
    assert rig.file_lines("u") == events


async def test_logs_dir_that_cannot_be_created(rig: Rig) -> None:
    """(Tests run as root, so chmod cannot block them: a file where the dir goes does.)"""
    events = await rig.add("u", range(2))
    rig.logs.parent.mkdir(parents=True, exist_ok=True)
    rig.logs.write_text("not a directory")
    report = await rig.drainer().drain_once()
    assert not report.ok
    assert "cannot open" in report.errors[0]
    assert str(rig.logs) in report.errors[0]
    assert rig.stats()["buffered"] == 2
    assert rig.raw.exists(EventKey("u", DAY).lease) == 0

    rig.logs.unlink()
    retry = await rig.drainer().drain_once()
    assert retry.ok, retry.errors
    assert rig.file_lines("u") == events
    assert rig.redis_keys() == []


async def test_file_size_limit_in_a_real_drain_process(rig: Rig, tmp_path: Path) -> None:
    """`logpipe drain --once` under RLIMIT_FSIZE: a real short write, then EFBIG."""
    events = await rig.add("u", range(40))
    env = logpipe_env(rig)
    limited = textwrap.dedent(
        """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        sys.argv = ["logpipe", "drain", "--once", "--json"]
        from logpipe_cli.cli.app import main
        main()
        """
    )
    run = await run_python(["-c", limited], tmp_path, env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "File too large" in run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads(run.stdout)["ok"] is False
    assert rig.file("u") == b""  # the part that fit was cut off again
    assert rig.stats()["buffered"] == 40

    ok = await run_python(["-m", "logpipe_cli", "drain", "--once", "--json"], tmp_path, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["events"] == 40
    assert rig.file_lines("u") == events
