"""LogsDir, the drainer's view of logs_dir: find without making, make only to write,
never wait for a lock in the calling thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpipe_cli.errors import UnsafeKeyError
from logpipe_cli.sink import LockedFile, LogsDir, UnlockedFile


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
