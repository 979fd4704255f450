"""LogsDir, the drainer's view of logs_dir: find without making, make only to write,
never wait for a lock in the calling thread."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpipe_cli.errors import SinkError, UnsafeKeyError
from logpipe_cli.keys import EventKey
from logpipe_cli.sink import LockedFile, LogsDir, UnlockedFile, path_for


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[LogsDir]:
    d = LogsDir(tmp_path / "logs")
    yield d
    d.close()


def test_find_makes_nothing_when_there_is_no_file(logs: LogsDir) -> None:
    assert logs.find(logs.root / "user_u" / "1.jsonl") is None
    (logs.root / "user_u").mkdir(parents=True)
    assert logs.find(logs.root / "user_u" / "1.jsonl") is None
    assert os.listdir(logs.root / "user_u") == []


def test_find_locks_a_free_file_and_hands_back_a_busy_one_unlocked(logs: LogsDir) -> None:
    path = logs.root / "user_u" / "1.jsonl"
    holder = LockedFile.open(path)
    holder.append(b'{"a":1}\n')
    try:
        found = logs.find(path)
        assert isinstance(found, UnlockedFile)  # returned at once, not waited for
        assert found.try_lock() is None
    finally:
        holder.close()
    file = found.try_lock()
    assert isinstance(file, LockedFile)
    assert file.size == 8
    assert found.fd == -1  # spent: the LockedFile owns the descriptor now
    file.close()
    again = logs.find(path)
    assert isinstance(again, LockedFile)
    again.close()


def test_find_refuses_a_symlinked_directory(logs: LogsDir, tmp_path: Path) -> None:
    logs.root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (logs.root / "user_x").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeKeyError):
        logs.find(logs.root / "user_x" / "1.jsonl")


def test_write_new_makes_the_file_with_its_data(logs: LogsDir) -> None:
    path = logs.root / "user_u" / "1.jsonl"
    new = logs.write_new(path, b'{"a":1}\n')
    assert new.written
    assert new.made
    assert isinstance(new.file, LockedFile)
    assert new.file.size == 8
    new.file.close()
    logs.sync()
    assert path.read_bytes() == b'{"a":1}\n'


def test_write_new_writes_nothing_into_a_file_that_is_there_by_then(logs: LogsDir) -> None:
    path = logs.root / "user_u" / "1.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"other":1}\n')  # made meanwhile, by a drainer that took over
    new = logs.write_new(path, b'{"a":1}\n')
    assert not new.written
    assert not new.made
    assert isinstance(new.file, LockedFile)
    assert new.file.size == 12  # begin again from here
    new.file.close()
    assert path.read_bytes() == b'{"other":1}\n'


def test_write_new_hands_back_a_file_locked_elsewhere_unwritten(logs: LogsDir) -> None:
    path = logs.root / "user_u" / "1.jsonl"
    holder = LockedFile.open(path)
    try:
        new = logs.write_new(path, b'{"a":1}\n')
        assert not new.written
        assert isinstance(new.file, UnlockedFile)
        new.file.close()
    finally:
        holder.close()
    assert path.read_bytes() == b""


# the strings that path_for's tests hold it to (tests/unit/test_sink.py), and some good ids
_IDS = ["u1", "a.b@c+d", "A-_9", "..", ".", "../x", "a/b", "", "a b", "x" * 129, "é"]


@pytest.mark.parametrize("user_id", _IDS)
@pytest.mark.parametrize("relative", [False, True])
def test_path_for_is_the_module_path_for_below_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_id: str, relative: bool
) -> None:
    """LogsDir.path_for normalizes logs_dir once instead of per key: the same path, or
    the same refusal, as sink.path_for, for a relative logs_dir too."""
    monkeypatch.chdir(tmp_path)
    root = Path("logs") if relative else tmp_path / "logs"
    logs = LogsDir(root)
    for day in (0, 19675, -1):
        ek = EventKey(user_id, day)
        try:
            want = path_for(root, ek)
        except UnsafeKeyError:
            with pytest.raises(UnsafeKeyError, match="does not map to a file inside"):
                logs.path_for(ek)
            continue
        assert logs.path_for(ek) == want
        assert logs.find(logs.path_for(ek)) is None  # passes the grandparent check


@pytest.mark.parametrize(
    "path",
    ["user_u/1.jsonl", "logs/user_u", "logs/a/user_u/1.jsonl", "other/user_u/1.jsonl"],
)
def test_find_and_write_new_refuse_a_path_not_two_levels_below_root(
    tmp_path: Path, path: str
) -> None:
    logs = LogsDir(tmp_path / "logs")
    with pytest.raises(UnsafeKeyError, match="is not <logs_dir>/<directory>/<file>"):
        logs.find(tmp_path / path)
    with pytest.raises(UnsafeKeyError, match="is not <logs_dir>/<directory>/<file>"):
        logs.write_new(tmp_path / path, b"{}\n")
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def _fds_on(path: Path) -> int:
    """How many of this process's descriptors point at ``path``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            n += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return n


def test_a_look_after_close_does_not_reopen_logs_dir_for_good(tmp_path: Path) -> None:
    """A drain pass closes its LogsDir in its finally, also when it is cancelled while
    a thread still looks at or makes a file: that thread's later use must not open
    logs_dir again (a descriptor nobody closes) nor use a closed one's number."""
    root = tmp_path / "logs"
    logs = LogsDir(root)
    ek = EventKey("u1", 1)
    logs.write_new(logs.path_for(ek), b"{}\n").file.close()
    assert _fds_on(root) == 1
    logs.close()
    assert _fds_on(root) == 0
    for call in (lambda: logs.find(logs.path_for(ek)), lambda: logs.sync()):
        with contextlib.suppress(SinkError):
            found = call()
            if found is not None:
                found.close()
        assert _fds_on(root) == 0, "logs_dir opened again after close, never closed"


def test_close_while_a_thread_uses_logs_dir_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while a thread is inside find/write_new (holding logs_dir's descriptor
    number): closed when that call ends, so the number cannot go to another file the
    process opens meanwhile and the call make a directory or file there."""
    import logpipe_cli.sink as sink

    root = tmp_path / "logs"
    logs = LogsDir(root)
    logs.sync()  # logs_dir open
    inside, go_on = threading.Event(), threading.Event()
    make_file = sink._make_file

    def slow_make_file(path: Path, root_fd: int, *args: object) -> object:
        inside.set()
        go_on.wait(5)
        return make_file(path, root_fd, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sink, "_make_file", slow_make_file)
    made: list[object] = []
    t = threading.Thread(
        target=lambda: made.append(logs.write_new(logs.path_for(EventKey("u2", 1)), b"{}\n"))
    )
    t.start()
    assert inside.wait(5)
    logs.close()  # the pass is over (cancelled) while the thread still works
    other = tmp_path / "other"
    other.mkdir()
    reused = os.open(other, os.O_RDONLY | os.O_DIRECTORY)  # takes a freed number
    try:
        go_on.set()
        t.join(5)
    finally:
        os.close(reused)
    for m in made:
        m.file.close()  # type: ignore[attr-defined]
    assert not any(other.iterdir()), "written below another directory"
    assert (root / "user_u2" / "1.jsonl").read_bytes() == b"{}\n"
    assert _fds_on(root) == 0
