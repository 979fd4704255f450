"""The files: a path that cannot leave logs_dir, a locked append that is whole or nothing."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from logpipe_cli import sink
from logpipe_cli.errors import SinkError, UnsafeKeyError
from logpipe_cli.keys import EventKey
from logpipe_cli.sink import (
    LockedFile,
    _check_one_spelling,
    encode_lines,
    list_files,
    path_for,
    read_lines,
)

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


def test_read_lines_reports_a_line_too_deep_to_decode(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    deep = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path.write_bytes(b'{"a":1}\n' + deep + b'\n{"b":2}\n')
    records = list(read_lines(path))
    assert [r.event for r in records] == [{"a": 1}, None, {"b": 2}]
    assert records[1].raw == deep


# ---- nothing below logs_dir is followed (defect 4) -------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside logs_dir, holding a file an attacker wants appended to."""
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / "f").write_bytes(b"precious\n")
    return out


def unchanged(outside: Path) -> bool:
    return (
        sorted(p.name for p in outside.iterdir()) == ["f"]
        and (outside / "f").read_bytes() == b"precious\n"
    )


def test_a_linked_user_directory_is_refused(tmp_path: Path, outside: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "user_x").symlink_to(outside)
    with pytest.raises(UnsafeKeyError, match="symbolic link"):
        LockedFile.open(logs / "user_x" / "5.jsonl")
    assert unchanged(outside)


def test_a_dangling_directory_link_is_refused_and_not_created(
    tmp_path: Path, outside: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "user_x").symlink_to(outside / "new")
    with pytest.raises(UnsafeKeyError, match="symbolic link"):
        LockedFile.open(logs / "user_x" / "5.jsonl")
    assert unchanged(outside)


@pytest.mark.parametrize("target", ["f", "missing"])
def test_a_linked_day_file_is_refused(tmp_path: Path, outside: Path, target: str) -> None:
    user = tmp_path / "logs" / "user_x"
    user.mkdir(parents=True)
    (user / "5.jsonl").symlink_to(outside / target)
    with pytest.raises(UnsafeKeyError, match="symbolic link"):
        LockedFile.open(user / "5.jsonl")
    assert unchanged(outside)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    user = tmp_path / "logs" / "user_x"
    user.mkdir(parents=True)
    os.mkfifo(user / "5.jsonl")
    with pytest.raises(UnsafeKeyError, match="FIFO"):
        LockedFile.open(user / "5.jsonl")


def test_a_fifo_with_a_reader_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "logs" / "user_x"
    user.mkdir(parents=True)
    os.mkfifo(user / "5.jsonl")
    reader = os.open(user / "5.jsonl", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(UnsafeKeyError, match="FIFO"):
            LockedFile.open(user / "5.jsonl")
    finally:
        os.close(reader)


def test_a_fifo_where_the_directory_belongs_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "user_x")
    with pytest.raises(UnsafeKeyError, match="FIFO"):
        LockedFile.open(logs / "user_x" / "5.jsonl")


def test_a_socket_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "logs" / "user_x"
    user.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(user / "5.jsonl"))
        with pytest.raises(UnsafeKeyError, match="socket"):
            LockedFile.open(user / "5.jsonl")


@pytest.mark.parametrize(
    ("mode", "named"),
    [(stat.S_IFCHR, "a device"), (stat.S_IFBLK, "a device"), (stat.S_IFSOCK, "a socket")],
)
def test_every_kind_of_special_file_is_named(mode: int, named: str) -> None:
    # a device node cannot be made in every container (mknod): its refusal is the same
    # check on the file's mode, tested on the mode itself
    assert sink.kind_of(mode | 0o600) == named


def test_logs_dir_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "logs").symlink_to(real)
    f = LockedFile.open(tmp_path / "logs" / "user_x" / "5.jsonl")
    f.append(b"{}\n")
    f.close()
    assert (real / "user_x" / "5.jsonl").read_bytes() == b"{}\n"


def test_a_path_outside_the_given_logs_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeKeyError):
        LockedFile.open(tmp_path / "a" / "b" / "c.jsonl", logs_dir=tmp_path)


# ---- modes (defect 13) ----------------------------------------------------------------


def test_new_files_and_directories_are_not_world_readable(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "logs" / "user_x" / "5.jsonl"
        LockedFile.open(path).close()
        custom = tmp_path / "logs" / "user_y" / "5.jsonl"
        LockedFile.open(custom, file_mode=0o600, dir_mode=0o700).close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.parent.stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o750
    assert custom.stat().st_mode & 0o777 == 0o600
    assert custom.parent.stat().st_mode & 0o777 == 0o700


def test_the_umask_still_applies(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = tmp_path / "logs" / "user_x" / "5.jsonl"
        LockedFile.open(path).close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


# ---- two keys, one file (defect 6) ----------------------------------------------------


def test_a_day_file_with_a_second_name_is_refused_under_both(tmp_path: Path) -> None:
    """A hard link stands in for two keys reaching one file (as ``Bob`` and ``bob`` do
    on a case-insensitive filesystem): neither key may write or repair it."""
    a = tmp_path / "logs" / "user_a" / "5.jsonl"
    f = LockedFile.open(a)
    f.append(b'{"acked":1}\n')
    f.close()
    b = tmp_path / "logs" / "user_b" / "5.jsonl"
    b.parent.mkdir()
    os.link(a, b)
    for path in (a, b):
        with pytest.raises(UnsafeKeyError, match="2 names"):
            LockedFile.open(path)
    assert a.read_bytes() == b'{"acked":1}\n'


def test_another_spelling_of_a_directory_on_a_case_insensitive_fs_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: a lookup of any spelling of ``user_bob`` reaches ``user_Bob``, as it
    does on macOS; the spelling on disk keeps the directory, another one is refused."""
    logs = tmp_path / "logs"
    LockedFile.open(logs / "user_Bob" / "5.jsonl").close()
    real_stat = os.stat

    def folding_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, str) and path.lower() == "user_bob":
            path = "user_Bob"
        return real_stat(path, *args, **kwargs)

    root_fd = os.open(logs, os.O_RDONLY | os.O_DIRECTORY)
    dir_fd = os.open(logs / "user_Bob", os.O_RDONLY | os.O_DIRECTORY)
    monkeypatch.setattr(os, "stat", folding_stat)
    try:
        _check_one_spelling("user_Bob", root_fd, dir_fd, logs / "user_Bob" / "5.jsonl")
        with pytest.raises(UnsafeKeyError, match="another spelling"):
            _check_one_spelling("user_bob", root_fd, dir_fd, logs / "user_bob" / "5.jsonl")
    finally:
        os.close(dir_fd)
        os.close(root_fd)


def test_two_spellings_on_a_case_sensitive_fs_are_two_directories(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for user in ("Bob", "bob"):
        f = LockedFile.open(logs / f"user_{user}" / "5.jsonl")
        f.append(user.encode() + b"\n")
        f.close()
    assert (logs / "user_Bob" / "5.jsonl").read_bytes() == b"Bob\n"
    assert (logs / "user_bob" / "5.jsonl").read_bytes() == b"bob\n"


def test_a_directory_that_cannot_be_made_is_a_sink_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "logs").mkdir()

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "mkdir", no_space)
    with pytest.raises(SinkError, match=r"cannot open .*No space left on device"):
        LockedFile.open(tmp_path / "logs" / "user_x" / "5.jsonl")
