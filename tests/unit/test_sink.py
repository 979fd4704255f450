"""The files: a path that cannot leave logs_dir, a locked append that is whole or nothing."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logpipe_cli.errors import SinkError, UnsafeKeyError
from logpipe_cli.keys import EventKey
from logpipe_cli.sink import LockedFile, encode_lines, list_files, path_for, read_lines

EVIL_USER_IDS = [
    "..",
    ".",
    "../etc",
    "../../etc",
    "a/../../b",
    "a/b",
    "/abs",
    "a\\b",
    "",
    ".hidden",
    "a\x00b",
    "x" * 129,
    "a:b",
    "é",
    "a b",
]


def test_path_for_layout(tmp_path: Path) -> None:
    assert path_for(tmp_path, EventKey("u1", 19675)) == tmp_path / "user_u1" / "19675.jsonl"
    assert path_for(tmp_path, EventKey("a.b@c+d", 0)) == tmp_path / "user_a.b@c+d" / "0.jsonl"


def test_path_for_relative_logs_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_for(Path("logs"), EventKey("u", 1)) == tmp_path / "logs" / "user_u" / "1.jsonl"


@pytest.mark.parametrize("user_id", EVIL_USER_IDS)
def test_path_for_refuses_anything_that_could_escape(tmp_path: Path, user_id: str) -> None:
    logs = tmp_path / "logs"
    with pytest.raises(UnsafeKeyError, match="does not map to a file inside"):
        path_for(logs, EventKey(user_id, 1))


def test_path_for_refuses_negative_day(tmp_path: Path) -> None:
    with pytest.raises(UnsafeKeyError):
        path_for(tmp_path, EventKey("u", -1))


def test_every_accepted_path_is_two_levels_under_logs_dir(tmp_path: Path) -> None:
    logs = (tmp_path / "logs").resolve()
    alphabet = "aZ9._-@+/\\:."
    for a in alphabet:
        for b in alphabet:
            for c in ("", ".", ".."):
                uid = a + b + c
                try:
                    p = path_for(logs, EventKey(uid, 3))
                except UnsafeKeyError:
                    continue
                assert p.parent.parent == logs, uid
                assert p.parent.name == f"user_{uid}"
                assert p.name == "3.jsonl"


# ---- LockedFile -----------------------------------------------------------------------


def test_open_creates_dirs_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "user_u" / "1.jsonl"
    f = LockedFile.open(path)
    try:
        assert f.size == 0
        f.append(b'{"a":1}\n')
        f.append(b'{"b":2}\n', fsync=False)
        assert f.size == 16
    finally:
        f.close()
    f.close()  # twice is fine
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    again = LockedFile.open(path)
    try:
        assert again.size == 16
    finally:
        again.close()


def test_open_holds_an_exclusive_lock_until_close(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    f = LockedFile.open(path)
    other = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.close()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    finally:
        os.close(other)


def test_truncate_cuts_back_and_never_grows(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"0123456789")
    f = LockedFile.open(path)
    try:
        f.truncate(20)
        assert f.size == 10
        f.truncate(4)
        assert f.size == 4
        f.append(b"ab")
    finally:
        f.close()
    assert path.read_bytes() == b"0123ab"


def test_open_failure_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "user_u"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(SinkError, match="cannot open"):
        LockedFile.open(blocker / "1.jsonl")


def test_append_failure_after_a_partial_write_truncates_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"old":1}\n')
    f = LockedFile.open(path)
    real_write = os.write
    calls = 0

    def half_then_enospc(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_enospc)
    try:
        with pytest.raises(SinkError) as info:
            f.append(b'{"new":1}\n{"new":2}\n')
        assert calls == 2
        assert "No space left on device" in info.value.detail
        assert str(path) in info.value.detail
        assert f.size == 10
    finally:
        monkeypatch.undo()
        f.close()
    assert path.read_bytes() == b'{"old":1}\n'


def test_append_failure_on_fsync_truncates_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"old":1}\n')
    f = LockedFile.open(path)
    real_fsync = os.fsync
    failed = False

    def fsync_once(fd: int) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_once)
    try:
        with pytest.raises(SinkError, match="Input/output error"):
            f.append(b'{"new":1}\n')
    finally:
        monkeypatch.undo()
        f.close()
    assert path.read_bytes() == b'{"old":1}\n'


def test_append_past_the_file_size_limit_leaves_no_partial_line(tmp_path: Path) -> None:
    """A real short write: RLIMIT_FSIZE in a child process lets only part of the batch in."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"old":1}\n')
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from logpipe_cli.errors import SinkError
        from logpipe_cli.sink import LockedFile
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        f = LockedFile.open(Path({str(path)!r}))
        try:
            f.append(b'{{"n":1}}\\n' * 20)
        except SinkError as exc:
            print("refused:", exc.detail, "size:", f.size)
            sys.exit(0)
        sys.exit("append past the limit did not fail")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "File too large" in result.stdout
    assert "size: 10" in result.stdout
    assert path.read_bytes() == b'{"old":1}\n'


# ---- reading back ---------------------------------------------------------------------


def test_encode_lines() -> None:
    assert encode_lines([]) == b""
    assert encode_lines([b"{}", b'{"a":1}']) == b'{}\n{"a":1}\n'


def test_read_lines_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\nnot json\n[1,2]\n{"b":2}\n{"torn":')
    records = list(read_lines(path))
    assert [r.lineno for r in records] == [1, 2, 3, 4, 5]
    assert [r.event for r in records] == [{"a": 1}, None, None, {"b": 2}, None]
    assert records[1].raw == b"not json"
    assert records[4].raw == b'{"torn":'


def test_read_lines_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="cannot read"):
        list(read_lines(tmp_path / "nope.jsonl"))


def test_list_files_finds_only_the_layout(tmp_path: Path) -> None:
    assert list_files(tmp_path / "missing") == []
    (tmp_path / "user_a").mkdir()
    (tmp_path / "user_a" / "1.jsonl").write_bytes(b"{}\n")
    (tmp_path / "user_a" / "2.jsonl").write_bytes(b"")
    (tmp_path / "user_a" / "notes.jsonl").write_bytes(b"")
    (tmp_path / "user_a" / "3.txt").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "1.jsonl").write_bytes(b"")
    (tmp_path / "user_stray.jsonl").write_bytes(b"")
    found = list_files(tmp_path)
    assert [(f.user_id, f.day, f.size) for f in found] == [("a", 1, 3), ("a", 2, 0)]
