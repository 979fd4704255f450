"""The JSON Lines files: a safe path under ``logs_dir``, locked append + fsync, repair.

Every function here is blocking and is meant to run in a worker thread.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from logpipe_cli.errors import FileBusyError, SinkError, UnsafeKeyError
from logpipe_cli.keys import USER_ID_RE, EventKey

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


def path_for(logs_dir: Path, ek: EventKey) -> Path:
    """``<logs_dir>/user_<id>/<day>.jsonl``, refusing anything that would leave ``logs_dir``."""
    if not USER_ID_RE.fullmatch(ek.user_id) or ek.day < 0:
        raise UnsafeKeyError(f"key {ek.key!r} does not map to a file inside {logs_dir}")
    root = os.path.normpath(os.path.abspath(logs_dir))
    path = os.path.normpath(os.path.join(root, f"user_{ek.user_id}", f"{ek.day}.jsonl"))
    if os.path.dirname(os.path.dirname(path)) != root:
        raise UnsafeKeyError(f"key {ek.key!r} does not map to a file inside {logs_dir}")
    return Path(path)


def _fail(action: str, path: Path, exc: OSError) -> SinkError:
    return SinkError(f"cannot {action} {path}: {exc.strerror or exc}")


@dataclass
class LockedFile:
    """An append-only file held under an exclusive ``flock`` until :meth:`close`.

    The lock keeps a drainer that lost its lease (a long pause) from writing while
    the drainer that took over repairs the same file: on one host, at most one of
    them holds the file at a time. A killed process drops its lock with its fd.
    """

    path: Path
    fd: int
    size: int

    @classmethod
    def open(cls, path: Path, lock_timeout_s: float = 10.0) -> LockedFile:
        """Open (creating it durably if new) and lock ``path``.

        Waits at most ``lock_timeout_s`` for the lock, then raises
        :class:`FileBusyError`: a holder that never lets go (a stopped process) must not
        stall a drainer, and the threads it drains with, for good.
        """
        try:
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except FileNotFoundError:
                fd = cls._create(path)
            try:
                _lock(fd, path, lock_timeout_s)
                size = os.fstat(fd).st_size
            except (OSError, FileBusyError):
                os.close(fd)
                raise
        except OSError as exc:
            raise _fail("open", path, exc) from None
        return cls(path, fd, size)

    @staticmethod
    def _create(path: Path) -> int:
        parent = path.parent
        made_dir = not parent.is_dir()
        if made_dir:
            parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _OPEN_FLAGS | os.O_CREAT, 0o644)
        # A new name is durable only once its directory is fsynced; done once per new
        # file (and per new directory), never per append.
        _fsync_dir(parent)
        if made_dir:
            _fsync_dir(parent.parent)
        return fd

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes: undo an append that was not acknowledged."""
        if size >= self.size:
            return
        try:
            os.ftruncate(self.fd, size)
            os.fsync(self.fd)
        except OSError as exc:
            raise _fail("repair", self.path, exc) from None
        self.size = size

    def append(self, data: bytes, *, fsync: bool = True) -> None:
        """Append ``data`` whole and make it durable; on failure cut the partial tail off."""
        start = self.size
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self.fd, view[written:])
            if fsync:
                os.fsync(self.fd)
        except OSError as exc:
            error = _fail("write", self.path, exc)
            try:
                os.ftruncate(self.fd, start)
                os.fsync(self.fd)
            except OSError:
                pass  # the next drain truncates to the recorded offset instead
            raise error from None
        self.size = start + len(data)

    def close(self) -> None:
        """Close the file, which drops the lock. Safe to call twice."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _lock(fd: int, path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() + delay > deadline:
                raise FileBusyError(f"{path} is locked by another process") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_lines(values: list[bytes]) -> bytes:
    """Values as JSON Lines: one per line, each ending in a newline."""
    return b"\n".join([*values, b""])  # one copy of the data, not two


@dataclass(frozen=True)
class FileInfo:
    path: Path
    user_id: str
    day: int
    size: int
    mtime: float


def list_files(logs_dir: Path) -> list[FileInfo]:
    """The ``user_<id>/<day>.jsonl`` files under ``logs_dir``."""
    out: list[FileInfo] = []
    if not logs_dir.is_dir():
        return out
    for user_dir in sorted(logs_dir.iterdir()):
        if not user_dir.is_dir() or not user_dir.name.startswith("user_"):
            continue
        for f in sorted(user_dir.glob("*.jsonl")):
            if not f.stem.isdigit():
                continue
            st = f.stat()
            out.append(FileInfo(f, user_dir.name[5:], int(f.stem), st.st_size, st.st_mtime))
    return out


@dataclass(frozen=True)
class LineRecord:
    """One line of a log file: the event, or ``None`` if the line is not a JSON object."""

    lineno: int
    raw: bytes
    event: dict[str, Any] | None


def read_lines(path: Path) -> Iterator[LineRecord]:
    """Read a log file back, line by line; a bad line is reported, never an exception."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise _fail("read", path, exc) from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\n")
            try:
                obj = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                obj = None
            yield LineRecord(lineno, raw, obj if isinstance(obj, dict) else None)
