"""One ``syncfs(2)`` for a drain round's many files, where it is as sure as their fsyncs.

A drain round writes up to 256 files, each new one with a new directory. Made durable
one by one, that is two fsyncs per file (the file, then its directory), each waiting for
its own write-back. ``syncfs`` writes back everything dirty on the filesystem and
flushes the disk's cache once, for all of them: on this project's machines a plain loop
of 20,000 new files went from 1,800 files/s (fsync each file and directory, 16 threads)
to 3,900-4,300 (one ``syncfs`` per 256 files), and the drain of 100,000 small keys
from 0.55x to 0.74-0.83x of the per-file loop (`bench/HISTORY.md`).

It is as sure only where it says when a write did not reach the disk. Since Linux 5.8 a
write-back error anywhere on the filesystem is recorded on its superblock (``errseq``),
and ``syncfs`` on a descriptor reports every such error since that descriptor was
opened. So each round opens a descriptor of its own (:class:`Barrier`) *before* it
writes: a shared one would be advanced past an error by whichever round synced first,
and a round syncing after it would be told nothing of its own lost write. An error
anywhere fails the whole round: its keys are given back unacknowledged, and the next
pass cuts their files back to the offsets BEGIN recorded and writes them again, as
after a failed fsync. Before 5.8 ``syncfs`` returned 0 whatever happened, so it is
never used there.

``auto`` uses it only on local filesystems whose ``sync_fs`` is a full barrier (ext2/3/4,
xfs, btrfs, f2fs; tmpfs, which has nothing to write back): not on NFS, FUSE, overlayfs
or anything else this module does not know, which fsync file by file as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import re
import sys
from typing import Literal

from logpipe_cli.heldfd import HeldFd

Mode = Literal["auto", "file", "filesystem"]
MODES: tuple[Mode, ...] = ("auto", "file", "filesystem")

#: a round writing fewer files fsyncs each: a syncfs also writes back what every other
#: writer on the filesystem left dirty, worth it only when it saves many fsyncs
MIN_FILES = 16

#: ``statfs.f_type`` of the filesystems ``auto`` trusts (linux/magic.h)
TRUSTED: dict[int, str] = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0xF2F52010: "f2fs",
    0x01021994: "tmpfs",
}

#: ``struct statfs`` is 120 bytes on 64-bit Linux; its first field, ``f_type``, a long
_STATFS_BYTES = 256


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def kernel_problem(release: str | None = None) -> str | None:
    """Why this kernel's ``syncfs`` cannot stand in for fsyncs, or None if it can.

    ``release`` is ``uname -r``'s text (this machine's by default)."""
    if _LIBC is None or not hasattr(_LIBC, "syncfs"):
        return f"syncfs(2) is Linux's, and this is {sys.platform}"
    text = os.uname().release if release is None else release
    found = re.match(r"(\d+)\.(\d+)", text)
    if found is None:
        return f"cannot tell the Linux version from {text!r}"
    if (int(found[1]), int(found[2])) < (5, 8):
        return f"Linux {text} does not report write-back errors to syncfs(2) (5.8 and later do)"
    return None


@functools.cache
def _this_kernel_problem() -> str | None:
    return kernel_problem()


def mode_problem(mode: str) -> str | None:
    """Why ``drainer.sync = mode`` cannot be honoured here, or None (settings' check)."""
    if mode != "filesystem":
        return None
    problem = _this_kernel_problem()
    return None if problem is None else f'{problem}: use "file" or "auto"'


def filesystem_of(fd: int) -> int | None:
    """``statfs.f_type`` of the filesystem ``fd`` lies on, or None if it cannot be read."""
    if _LIBC is None:
        return None
    buf = ctypes.create_string_buffer(_STATFS_BYTES)
    if _LIBC.fstatfs(fd, buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


class Barrier:
    """A descriptor of ``logs_dir`` opened before a round writes, to ``syncfs`` it after.

    :meth:`sync_and_close` runs in a file thread; a :meth:`close` meanwhile (the round
    cancelled) leaves the descriptor to it, and one before it ran makes it refuse
    (:class:`~logpipe_cli.heldfd.HeldFd`): a task cancelled in the pool's queue never
    runs, so the round always closes its barrier on the way out.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._held = HeldFd(fd, closed=f"{root}: the round's barrier was closed")

    @property
    def fd(self) -> int:
        """The descriptor; -1 once closed."""
        return self._held.fd

    @classmethod
    def open(cls, root: str, mode: str) -> Barrier | None:
        """A barrier for a round under ``root``, or None to fsync file by file (mode
        ``file``; an old kernel; ``auto`` on a filesystem it does not trust; ``root``
        cannot be opened)."""
        if mode == "file" or _this_kernel_problem() is not None:
            return None
        try:
            barrier = cls(root)
        except OSError:
            return None
        if mode == "auto" and filesystem_of(barrier.fd) not in TRUSTED:
            barrier.close()
            return None
        return barrier

    def sync_and_close(self) -> None:
        """``syncfs``: everything written on the filesystem since this barrier was opened
        is on disk, or ``OSError`` (any write-back error there since, ours or not; or the
        barrier was closed before this ran)."""
        try:
            with self._held.using() as fd:
                assert _LIBC is not None  # opened only where there is a syncfs
                if _LIBC.syncfs(fd) != 0:
                    code = ctypes.get_errno() or errno.EIO
                    raise OSError(code, os.strerror(code))
        finally:
            self.close()

    def close(self) -> None:
        """Close the descriptor, now or when a :meth:`sync_and_close` under way ends."""
        self._held.close()
