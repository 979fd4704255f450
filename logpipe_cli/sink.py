"""The JSON Lines files: a safe path under ``logs_dir``, locked append + fsync, repair.

Every function here is blocking and is meant to run in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from logpipe_cli.durable import Barrier
from logpipe_cli.errors import FileBusyError, SinkError, UnsafeKeyError
from logpipe_cli.heldfd import ClosedError, HeldFd
from logpipe_cli.keys import USER_ID_RE, EventKey

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
#: Every name under ``logs_dir`` is opened relative to its parent's descriptor and
#: never through a symlink: a link planted in ``logs_dir`` (``user_x -> /etc``) must
#: not make the drainer create, append to or truncate anything outside. O_NONBLOCK
#: keeps a planted FIFO from blocking the open (it fails with ENXIO, or opens and is
#: refused by the fstat below); it changes nothing for a regular file.
_FILE_FLAGS = _OPEN_FLAGS | os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: Log files hold what clients sent: readable by the owner's group, not by everyone
#: (the process umask still applies on top).
FILE_MODE = 0o640
DIR_MODE = 0o750


def path_for(logs_dir: Path, ek: EventKey) -> Path:
    """``<logs_dir>/user_<id>/<day>.jsonl``, refusing anything that would leave ``logs_dir``."""
    root = os.path.normpath(os.path.abspath(logs_dir))
    path = os.path.normpath(_path_text(root, ek, logs_dir))
    if os.path.dirname(os.path.dirname(path)) != root:
        raise UnsafeKeyError(f"key {ek.key!r} does not map to a file inside {logs_dir}")
    return Path(path)


def _path_text(root: str, ek: EventKey, logs_dir: Path) -> str:
    """``ek``'s file below ``root`` (``logs_dir`` normalized), as text: the user id's rule
    (no ``/``, no leading ``.``) and the ``user_`` prefix keep it inside."""
    if not USER_ID_RE.fullmatch(ek.user_id) or ek.day < 0:
        raise UnsafeKeyError(f"key {ek.key!r} does not map to a file inside {logs_dir}")
    return os.path.join(root, f"user_{ek.user_id}", f"{ek.day}.jsonl")


def _names(path: Path) -> tuple[str, str]:
    """``(directory name, file name)`` of ``<logs_dir>/<dir>/<file>``: string splits of
    the path's text, not pathlib's ``parent``/``name``, which build and parse a new path
    object each (a file thread takes these several times per key, under the GIL)."""
    head, name = os.path.split(str(path))
    return os.path.basename(head), name


def _fail(action: str, path: Path, exc: OSError) -> SinkError:
    return SinkError(f"cannot {action} {path}: {exc.strerror or exc}")


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, for a message that refuses it (not a regular file or
    directory)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file or directory"


def _unsafe(path: Path, what: str) -> UnsafeKeyError:
    return UnsafeKeyError(f"{path} is {what}: refused, nothing written")


def _refuse_special(name: str, dir_fd: int, path: Path, exc: OSError) -> Exception:
    """Why opening ``name`` failed: an :class:`UnsafeKeyError` for a link or a special
    file in the way, otherwise the :class:`SinkError` for ``exc``."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return _fail("open", path, exc)
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return _fail("open", path, exc)  # e.g. a plain file where a directory belongs
    return _unsafe(path, kind_of(st.st_mode))


def _open_dir(
    name: str, parent_fd: int, path: Path, dir_mode: int, create: bool = True
) -> tuple[int, bool]:
    """Open (with ``create``, making it if missing) the directory ``name`` under
    ``parent_fd``: its fd and whether it was made. Without ``create`` a missing
    directory raises :class:`FileNotFoundError`."""
    made = False
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd), made
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, dir_mode, dir_fd=parent_fd)
                made = True
            except FileExistsError:
                pass  # made by another drainer meanwhile
        except OSError as exc:
            raise _refuse_special(name, parent_fd, path, exc) from None
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd), made


def _check_one_spelling(name: str, root_fd: int, dir_fd: int, path: Path) -> None:
    """Refuse a user directory that another spelling of the same name already owns.

    On a case-insensitive filesystem (macOS, Windows, ext4 casefold) the keys for
    ``Bob`` and ``bob`` are two keys, each with its own recorded offset, but one file:
    the crash repair of one would cut the other's acknowledged lines. Locks alone cannot
    prevent it (the two keys drain one after the other, legitimately), and a folded
    directory layout would rename every existing directory on the case-sensitive
    filesystems logpipe mostly runs on. So the spelling stored on disk (the first one
    drained) keeps the directory and any other spelling is refused as an unsafe key: its
    events wait in Redis, reported on each pass, instead of destroying data.

    Cost on a case-sensitive filesystem: one failed ``stat`` per open.
    """
    other = name.swapcase()
    if other == name:
        return
    try:
        st = os.stat(other, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return  # no such name: the filesystem tells cases apart here
    mine = os.fstat(dir_fd)
    if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
        return  # both spellings exist as two directories: case-sensitive
    if name not in os.listdir(root_fd):
        raise _unsafe(
            path.parent,
            "another spelling of an existing directory on a case-insensitive filesystem",
        )


@dataclass
class LockedFile:
    """An append-only file held under an exclusive ``flock`` until :meth:`close`.

    The lock keeps a drainer that lost its lease (a long pause) from writing while
    the drainer that took over repairs the same file: on one host, at most one of
    them holds the file at a time. A killed process drops its lock with its fd.

    The lock belongs to the file itself (its inode), not to the path: two keys whose
    paths reach one file (a case-insensitive filesystem, a hard link) wait for each
    other. Both are refused at open anyway (see :func:`_check_one_spelling`, and the
    link count check), since serializing them would not keep one's repair from cutting
    the other's lines.

    A close asked for while an append or a truncate runs (in a file thread: the drain
    that owns the file stopped meanwhile, and a thread cannot be stopped) waits for it
    to end, without blocking the caller: closed at once, the descriptor's number would
    go to the next file the process opens, and the write on its way would land there.
    """

    path: Path
    opened_fd: InitVar[int]
    size: int
    #: the descriptor, closed after the appends and truncates under way (see above)
    _held: HeldFd = field(init=False, repr=False, compare=False)

    def __post_init__(self, opened_fd: int) -> None:
        self._held = HeldFd(opened_fd, closed="file closed")

    @property
    def fd(self) -> int:
        """The file's descriptor; -1 once closed."""
        return self._held.fd

    @classmethod
    def open(
        cls,
        path: Path,
        lock_timeout_s: float = 10.0,
        *,
        logs_dir: Path | None = None,
        file_mode: int = FILE_MODE,
        dir_mode: int = DIR_MODE,
    ) -> LockedFile:
        """Open (creating it durably if new) and lock ``path``, ``<logs_dir>/<dir>/<file>``.

        ``logs_dir`` defaults to ``path``'s grandparent (as :func:`path_for` builds it).
        Below ``logs_dir`` nothing is followed: a symlink, FIFO, socket or device where
        the directory or the file belongs, or a file with more than one name (a hard
        link: another key's file or one outside), is refused with
        :class:`UnsafeKeyError` and nothing is created or written. New files get
        ``file_mode``, new directories ``dir_mode`` (``logs_dir`` too if missing),
        both less the umask.

        Waits at most ``lock_timeout_s`` for the lock (in this thread), then raises
        :class:`FileBusyError`: a holder that never lets go (a stopped process) must not
        stall the caller for good. The drainer does not wait this way (see
        :meth:`LogsDir.find`).
        """
        root = path.parent.parent if logs_dir is None else logs_dir
        if path.parent.parent != root:
            raise UnsafeKeyError(f"{path} is not <logs_dir>/<directory>/<file> in {root}")
        try:
            root_fd = _open_root(root, dir_mode)
        except OSError as exc:
            raise _fail("open", path, exc) from None
        try:
            opened = _open_file(path, root_fd, file_mode, dir_mode, create=True)
            assert opened is not None  # made if missing
            fd, dir_fd, made_dir, made_file = opened
            try:
                # new names are durable before anything is written under them
                if made_file:
                    os.fsync(dir_fd)
                if made_dir:
                    os.fsync(root_fd)
            except OSError as exc:
                os.close(fd)
                raise _fail("open", path, exc) from None
            finally:
                os.close(dir_fd)
        finally:
            os.close(root_fd)
        try:
            lock(fd, path, lock_timeout_s)
            size = os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            raise _fail("open", path, exc) from None
        except FileBusyError:
            os.close(fd)
            raise
        return cls(path, fd, size)

    @contextlib.contextmanager
    def _using(self, action: str) -> Iterator[int]:
        """The descriptor, kept open until the block ends (see the class)."""
        try:
            with self._held.using() as fd:
                yield fd
        except ClosedError as exc:
            raise _fail(action, self.path, exc) from None

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes: undo an append that was not acknowledged."""
        if size >= self.size:
            return
        with self._using("repair") as fd:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError as exc:
                raise _fail("repair", self.path, exc) from None
        self.size = size

    def append(self, data: bytes, *, fsync: bool = True) -> None:
        """Append ``data`` whole and make it durable; on failure cut the partial tail off."""
        start = self.size
        view = memoryview(data)
        written = 0
        with self._using("write") as fd:
            try:
                while written < len(view):
                    written += os.write(fd, view[written:])
                if fsync:
                    os.fsync(fd)
            except OSError as exc:
                error = _fail("write", self.path, exc)
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError:
                    pass  # the next drain truncates to the recorded offset instead
                raise error from None
        self.size = start + len(data)

    def close(self) -> None:
        """Close the file, which drops the lock. Safe to call twice. While an append or
        a truncate runs, it is closed when that ends."""
        self._held.close()


def _open_root(root: Path, dir_mode: int) -> int:
    """``logs_dir`` itself, made if missing. It is the operator's choice, so it may be a
    symlink; only what lies below it is held to the no-follow rule."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(root, flags)
    except FileNotFoundError:
        os.makedirs(root, dir_mode, exist_ok=True)
        return os.open(root, flags)


def _open_file(
    path: Path, root_fd: int, file_mode: int, dir_mode: int, *, create: bool
) -> tuple[int, int, bool, bool] | None:
    """Open ``<dir>/<file>`` below ``root_fd``: ``(file fd, directory fd, made the
    directory, made the file)``, the file's fd blocking again and unlocked; the caller
    closes both fds. With ``create`` the directory and the file are made if missing
    (nothing is fsynced here: the caller makes the new names durable, see
    :meth:`LogsDir.write_new`); without it, ``None`` when either is missing."""
    dir_name, file_name = _names(path)
    try:
        dir_fd, made_dir = _open_dir(dir_name, root_fd, path, dir_mode, create)
    except FileNotFoundError:
        return None  # no directory yet, and create is false
    except OSError as exc:
        raise _fail("open", path, exc) from None
    made_file = False
    try:
        _check_one_spelling(dir_name, root_fd, dir_fd, path)
        try:
            fd = os.open(file_name, _FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                os.close(dir_fd)
                return None
            fd = os.open(file_name, _FILE_FLAGS | os.O_CREAT, file_mode, dir_fd=dir_fd)
            made_file = True
        except OSError as exc:
            raise _refuse_special(file_name, dir_fd, path, exc) from None
    except OSError as exc:
        os.close(dir_fd)
        raise _fail("open", path, exc) from None
    except UnsafeKeyError:
        os.close(dir_fd)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(path, kind_of(st.st_mode))
        if st.st_nlink > 1:
            raise _unsafe(path, f"a file with {st.st_nlink} names (hard links)")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except OSError as exc:
        os.close(fd)
        os.close(dir_fd)
        raise _fail("open", path, exc) from None
    except UnsafeKeyError:
        os.close(fd)
        os.close(dir_fd)
        raise
    return fd, dir_fd, made_dir, made_file


#: a file made here: never a FIFO or a link (O_EXCL fails on any name that is there)
_NEW_FILE_FLAGS = _OPEN_FLAGS | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def _make_file(
    path: Path, root_fd: int, file_mode: int, dir_mode: int
) -> tuple[int, int, bool, bool]:
    """:func:`_open_file` with ``create``, for a file that was not there a moment ago:
    ``mkdir`` and ``O_EXCL`` first, so a new directory and file cost 4 system calls,
    not the 11 of lookups that fail first (each call releases and takes the GIL again,
    which the file threads contend for). A name that is there by now, or anything
    unusual, takes :func:`_open_file`'s way with all its checks."""
    name, file_name = _names(path)
    made_dir = False
    try:
        os.mkdir(name, dir_mode, dir_fd=root_fd)
        made_dir = True
    except FileExistsError:
        pass
    except OSError:
        return _open_file_made(path, root_fd, file_mode, dir_mode)
    try:
        dir_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return _open_file_made(path, root_fd, file_mode, dir_mode, made_dir=made_dir)
    try:
        # made here, no other spelling of it can exist (on a case-insensitive
        # filesystem mkdir would have failed): only an older directory is checked
        if not made_dir:
            _check_one_spelling(name, root_fd, dir_fd, path)
        fd = os.open(file_name, _NEW_FILE_FLAGS, file_mode, dir_fd=dir_fd)
    except OSError:
        os.close(dir_fd)
        return _open_file_made(path, root_fd, file_mode, dir_mode, made_dir=made_dir)
    except BaseException:
        os.close(dir_fd)
        raise
    return fd, dir_fd, made_dir, True


def _open_file_made(
    path: Path, root_fd: int, file_mode: int, dir_mode: int, *, made_dir: bool = False
) -> tuple[int, int, bool, bool]:
    opened = _open_file(path, root_fd, file_mode, dir_mode, create=True)
    assert opened is not None  # made if missing
    fd, dir_fd, made, made_file = opened
    return fd, dir_fd, made or made_dir, made_file


def try_lock(fd: int) -> bool:
    """One attempt at an exclusive ``flock`` of ``fd`` that never waits."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock(fd: int, path: Path, timeout_s: float, *, shared: bool = False) -> None:
    """``flock`` ``fd``, exclusive (a drainer appending) or ``shared`` (a reader that must
    not see an append half-acknowledged); wait at most ``timeout_s``, then raise
    :class:`FileBusyError`."""
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, op)
            return
        except BlockingIOError:
            if time.monotonic() + delay > deadline:
                raise FileBusyError(f"{path} is locked by another process") from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@dataclass
class UnlockedFile:
    """A log file found open but locked by another process (:meth:`LogsDir.find`).

    Its lock is tried again with :meth:`try_lock`, one attempt that never waits, so a
    caller can wait for it on an event loop (with backoff, up to a deadline) instead of
    holding a worker thread for as long as the other holder keeps it.
    """

    path: Path
    fd: int

    def try_lock(self) -> LockedFile | None:
        """The file, locked, if the lock is free now (this object is then spent)."""
        if not try_lock(self.fd):
            return None
        fd, self.fd = self.fd, -1
        try:
            size = os.fstat(fd).st_size
        except OSError as exc:
            os.close(fd)
            raise _fail("open", self.path, exc) from None
        return LockedFile(self.path, fd, size)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


@dataclass(frozen=True)
class NewFile:
    """What :meth:`LogsDir.write_new` did: ``written`` (the data is in ``file``, durable
    with its name) or not, because the file was there by then (``file`` holds it as it
    is, to begin again with its real size; an :class:`UnlockedFile` if another process
    holds its lock). ``made`` says whether it made a directory or a file: then
    ``logs_dir`` needs :meth:`LogsDir.sync` before anything written is relied on."""

    file: LockedFile | UnlockedFile
    written: bool
    made: bool


class LogsDir:
    """``logs_dir`` held open for a drain pass: many files opened below one descriptor.

    Opens files as :meth:`LockedFile.open` does, with the same refusals and modes, but
    in two steps that suit a drain: :meth:`find` opens a file only if it exists (and
    never waits for its lock), :meth:`write_new` makes a file only once there is
    something to write to it. One fsync of ``logs_dir`` (:meth:`sync`) covers all the
    user directories made since the last one. Thread-safe: files are opened in many
    threads at once.
    """

    def __init__(self, root: Path, *, file_mode: int = FILE_MODE, dir_mode: int = DIR_MODE) -> None:
        self.root = root
        #: ``root``'s text and the way :func:`path_for` spells it: a path's grandparent
        #: must be one of them
        self._root_text = str(root)
        self._normal_root = os.path.normpath(os.path.abspath(root))
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        #: ``logs_dir``'s descriptor, opened when first needed (see :meth:`_root_fd`)
        self._fd = HeldFd(opener=self._open, closed="logs_dir closed: the drain pass is over")

    @contextlib.contextmanager
    def _root_fd(self, path: Path) -> Iterator[int]:
        """``logs_dir``'s descriptor, kept open until the block ends: a :meth:`close`
        meanwhile (a drain pass cancelled while a thread still looks at or makes a file)
        closes it when the last user is done (:class:`HeldFd`). Closed at once, its
        number would go to the next directory the process opens, and the thread would
        make its directory and file below that one. After :meth:`close` it is not opened
        again (a descriptor nobody would close): :class:`SinkError`."""
        try:
            with self._fd.using() as fd:
                yield fd
        except ClosedError as exc:
            raise _fail("open", path, exc) from None

    def _open(self) -> int:
        try:
            return _open_root(self.root, self.dir_mode)
        except OSError as exc:
            raise _fail("open", self.root, exc) from None

    def _check(self, path: Path) -> None:
        # the text of Path's parent.parent, without making two paths and comparing
        # their parts (a Path's text is normalized as its parts are)
        grandparent = os.path.dirname(os.path.dirname(str(path)))
        if grandparent != self._root_text and grandparent != self._normal_root:
            raise UnsafeKeyError(f"{path} is not <logs_dir>/<directory>/<file> in {self.root}")

    def path_for(self, ek: EventKey) -> Path:
        """:func:`path_for` below this ``root``, normalized once rather than per key (the
        user id's rule keeps the joined name inside, as :func:`path_for`'s own check
        would find)."""
        return Path(_path_text(self._normal_root, ek, self.root))

    def find(self, path: Path) -> LockedFile | UnlockedFile | None:
        """Open ``path`` (``<root>/<dir>/<file>``, as :func:`path_for` builds it) if it
        exists, and lock it if its lock is free now: the file locked, the file unlocked
        (another process holds it: see :meth:`UnlockedFile.try_lock`), or ``None`` when
        there is no such file (nothing is made)."""
        self._check(path)
        with self._root_fd(path) as root_fd:
            opened = _open_file(path, root_fd, self.file_mode, self.dir_mode, create=False)
        if opened is None:
            return None
        fd, dir_fd, _, _ = opened
        os.close(dir_fd)
        file = UnlockedFile(path, fd)
        try:
            locked = file.try_lock()
        except BaseException:
            file.close()
            raise
        return file if locked is None else locked

    def write_new(self, path: Path, data: bytes, *, fsync: bool = True) -> NewFile:
        """Make ``path`` (and its directory) if missing, lock it and append ``data``, in
        the order a plain loop would: write, fsync the file, then fsync its directory.

        The second fsync is then all but free on a journaling filesystem (ext4: the
        file's fsync committed the transaction that holds its new directory entry),
        where fsyncing the directory first, at the file's creation, cost a journal
        commit of its own per file. The guarantee is the same: before this returns, the
        data and the file's name are durable; the directory's own name is durable after
        :meth:`sync`. Without ``fsync`` neither fsync is made (the caller makes the round
        durable in one ``syncfs``, see :mod:`logpipe_cli.durable`). If the file exists
        and is not empty by now (made by a drainer that took this key over), or is
        locked, nothing is written (see :class:`NewFile`).
        """
        self._check(path)
        with self._root_fd(path) as root_fd:
            made = _make_file(path, root_fd, self.file_mode, self.dir_mode)
        fd, dir_fd, made_dir, made_file = made
        try:
            pending = UnlockedFile(path, fd)
            try:
                file = pending.try_lock()
            except BaseException:
                pending.close()
                raise
            if file is None:
                return NewFile(pending, False, made_dir or made_file)
            if file.size != 0:
                return NewFile(file, False, made_dir or made_file)
            try:
                file.append(data, fsync=fsync)
                if made_file and fsync:
                    os.fsync(dir_fd)
            except OSError as exc:
                file.close()
                raise _fail("sync", path.parent, exc) from None
            except BaseException:
                file.close()
                raise
            return NewFile(file, True, made_dir or made_file)
        finally:
            os.close(dir_fd)

    def sync(self, barrier: Barrier | None = None) -> None:
        """fsync ``logs_dir``: every directory made below it so far is durable. With a
        ``barrier``, ``syncfs`` instead: everything written on the filesystem since the
        barrier was opened is durable, files and directories (see
        :mod:`logpipe_cli.durable`); the barrier is closed."""
        if barrier is not None:
            try:
                barrier.sync_and_close()
            except OSError as exc:
                raise _fail("sync", self.root, exc) from None
            return
        with self._root_fd(self.root) as fd:
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _fail("sync", self.root, exc) from None

    def close(self) -> None:
        """Close ``logs_dir`` (when the calls using it end, see :meth:`_root_fd`); no
        file is opened or made through this object after."""
        self._fd.close()


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


def day_of_file(name: str) -> int | None:
    """The day of a day file's name, ``<day>.jsonl`` (ASCII digits: ``str.isdigit``
    alone takes "²", which ``int`` refuses), or None for any other name."""
    stem, dot, ext = name.partition(".")
    if dot and ext == "jsonl" and stem.isascii() and stem.isdigit():
        return int(stem)
    return None


def list_files(logs_dir: Path) -> list[FileInfo]:
    """The ``user_<id>/<day>.jsonl`` files under ``logs_dir``."""
    out: list[FileInfo] = []
    if not logs_dir.is_dir():
        return out
    for user_dir in sorted(logs_dir.iterdir()):
        if not user_dir.is_dir() or not user_dir.name.startswith("user_"):
            continue
        for f in sorted(user_dir.glob("*.jsonl")):
            day = day_of_file(f.name)
            if day is None:
                continue
            st = f.stat()
            out.append(FileInfo(f, user_dir.name[5:], day, st.st_size, st.st_mtime))
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
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                obj = None  # a line too deep to decode is a bad line, not a crash
            yield LineRecord(lineno, raw, obj if isinstance(obj, dict) else None)
