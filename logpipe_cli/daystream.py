"""One (user, day)'s events as one stream: its day file, then its claim, then its live list.

The drainer moves events from the head of the claim to the end of the file, and quarantines
values that are not one-line JSON objects; new events go to the end of the live list. So
if the stream counts the file's lines and then only the *valid* buffered values (those the
drainer would write, :func:`~logpipe_cli.events.is_valid_line`), an event's index in it
never changes while it is drained, and a quarantined value never had one. That index is
what a query cursor records.

A consistent picture of the stream (the file's acknowledged part and the Redis lists at
the same moment) is taken under a *shared* ``flock`` on the day file: a drainer holds the
exclusive lock for the whole time it works a key (BEGIN, append, ACK), so while we hold
the shared one the file and the claim cannot change, except for renames (the live list
becoming the claim) and appends to the live list, which keep the order. The Redis lists
and the pending offset are read in one ``MULTI``. Locks are per host: a drainer on
another host is not held off (see README's guarantees).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from logpipe_cli.buffer import Buffer, redis_errors
from logpipe_cli.errors import SinkError, UnsafeKeyError
from logpipe_cli.events import is_valid_line
from logpipe_cli.keys import EventKey
from logpipe_cli.scripts import parse_size
from logpipe_cli.sink import lock, path_for

#: bytes read from a day file per thread hop: large enough that a 1 GiB file costs a
#: thousand hops, small enough that memory stays flat whatever the file's size
CHUNK_BYTES = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO planted where a day file belongs must not block the open
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class BadAnchorError(Exception):
    """A cursor's file position does not fall on a line of the acknowledged file."""


@dataclass(frozen=True)
class Anchor:
    """A known point of the file: its first ``line`` lines take ``byte`` bytes.

    The acknowledged part of a day file never changes, so a cursor can carry one and a
    later page can seek there instead of counting lines from the start.
    """

    line: int = 0
    byte: int = 0


class Item(NamedTuple):
    """One stored value of a day's stream, at index ``seq``; ``resume_line``/``resume_byte``
    are the anchor for a cursor next to it (after it reading forward, before it reading
    backward). (A tuple: one is made per line read, several times faster than a frozen
    dataclass.)"""

    seq: int
    raw: bytes
    resume_line: int
    resume_byte: int

    @property
    def resume(self) -> Anchor:
        return Anchor(self.resume_line, self.resume_byte)


def open_day_file(logs_dir: Path, ek: EventKey) -> int | None:
    """A read-only descriptor of ``ek``'s day file, or ``None`` if there is none.

    Opened below a ``logs_dir`` descriptor, following no link, as the drainer does: a
    symlink or a special file where the file belongs is refused (:class:`UnsafeKeyError`).
    """
    path = path_for(logs_dir, ek)  # refuses a key that would leave logs_dir
    try:
        root_fd = os.open(logs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SinkError(f"cannot read {logs_dir}: {exc.strerror or exc}") from None
    try:
        try:
            dir_fd = os.open(path.parent.name, _DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            return None
        try:
            fd = os.open(path.name, _FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise UnsafeKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(root_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeKeyError(f"{path} is not a regular file: refused")
    return fd


@dataclass
class DayStream:
    """A consistent picture of one key's stream; :meth:`close` it (or use ``async with``).

    ``size`` is the file's acknowledged part: up to the pending offset if a drainer
    crashed between its append and its ACK (what lies beyond is still in the claim).
    ``buffered`` is the claim, then the live list, as one ``MULTI`` read them.
    """

    ek: EventKey
    path: Path
    fd: int | None
    size: int
    buffered: list[bytes]

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    async def __aenter__(self) -> DayStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    async def items(
        self, start: int = 0, stop: int | None = None, anchor: Anchor | None = None
    ) -> AsyncIterator[Item]:
        """The stream's values with ``start <= index < stop``, in order.

        ``anchor`` (from a cursor) lets the file be read from there; it must lie on a line
        boundary of the acknowledged part, or :class:`BadAnchorError` is raised.
        """
        anchor = anchor or Anchor()
        if anchor.line > start or anchor.byte > self.size or (anchor.byte and self.fd is None):
            raise BadAnchorError
        if anchor.byte and await asyncio.to_thread(self._byte_at, anchor.byte - 1) != b"\n":
            raise BadAnchorError
        index, pos = anchor.line, anchor.byte
        while pos < self.size and (stop is None or index < stop):
            lines, pos = await asyncio.to_thread(self._read_block, pos, index, start)
            if isinstance(lines, int):  # a block wholly before ``start``: only counted
                index += lines
                continue
            for raw, end in lines:
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    yield Item(index, raw, index + 1, end)
                index += 1
        file_lines = index
        for value in self.buffered:
            if stop is not None and index >= stop:
                return
            # what the drainer will quarantine never reaches the file: it has no index
            if not is_valid_line(value):
                continue
            if index >= start:
                yield Item(index, value, file_lines, self.size)
            index += 1

    async def items_backward(
        self, stop: int | None = None, anchor: Anchor | None = None
    ) -> AsyncIterator[Item]:
        """The stream's values with ``index < stop``, newest first.

        The file is read backward from its end (or from ``anchor``, a line boundary at or
        before ``stop``), a block at a time, after one pass that only counts its lines:
        a newest-first page costs that count, not a decode of the whole day.
        """
        anchor = anchor or Anchor()
        if (stop is not None and anchor.line > stop) or anchor.byte > self.size:
            raise BadAnchorError
        if anchor.byte and (
            self.fd is None or await asyncio.to_thread(self._byte_at, anchor.byte - 1) != b"\n"
        ):
            raise BadAnchorError
        file_lines = anchor.line
        if self.fd is not None:
            file_lines += await asyncio.to_thread(self._count_lines, anchor.byte)
        valid = [v for v in self.buffered if is_valid_line(v)]  # see items()
        for k in range(len(valid) - 1, -1, -1):
            seq = file_lines + k
            if stop is None or seq < stop:
                yield Item(seq, valid[k], file_lines, self.size)
        if stop is not None and stop == anchor.line:
            pos, seq = anchor.byte, anchor.line  # the cursor says where line `stop` starts
        else:
            pos, seq = self.size, file_lines
        while pos > 0:
            lines, pos = await asyncio.to_thread(self._read_back, pos)
            for raw, start in reversed(lines):
                seq -= 1
                if stop is None or seq < stop:
                    yield Item(seq, raw, seq, start)

    def _count_lines(self, pos: int) -> int:
        """Lines of the acknowledged part from ``pos`` (a last one without its newline
        counts, as :meth:`_read_block` reads it)."""
        assert self.fd is not None
        n = 0
        last = b"\n"
        while pos < self.size:
            data = os.pread(self.fd, min(CHUNK_BYTES, self.size - pos), pos)
            if not data:
                raise SinkError(f"{self.path} shrank while being read")
            n += data.count(b"\n")
            last = data[-1:]
            pos += len(data)
        return n + (last != b"\n")

    def _read_back(self, pos: int) -> tuple[list[tuple[bytes, int]], int]:
        """The whole lines in about CHUNK_BYTES before ``pos`` (a line start), oldest
        first, with their start offsets; and the start of the first of them."""
        assert self.fd is not None
        want = CHUNK_BYTES
        while True:
            begin = max(0, pos - want)
            data = os.pread(self.fd, pos - begin, begin)
            if len(data) != pos - begin:
                raise SinkError(f"{self.path} shrank while being read")
            # the block may start inside a line: that part belongs to the next (earlier)
            # block. The block's last byte ends the line before ``pos``: not a boundary.
            cut = 0 if begin == 0 else data.find(b"\n", 0, len(data) - 1) + 1
            if cut or begin == 0:
                break
            want *= 2  # one line longer than a block: read more
        out: list[tuple[bytes, int]] = []
        at = begin + cut
        for line in _split(data[cut:]):
            out.append((line, at))
            at += len(line) + 1
        return out, begin + cut

    def _byte_at(self, offset: int) -> bytes:
        assert self.fd is not None
        return os.pread(self.fd, 1, offset)

    def _read_block(
        self, pos: int, index: int, start: int
    ) -> tuple[list[tuple[bytes, int]] | int, int]:
        """Whole lines from ``pos`` (about CHUNK_BYTES of them) with their end offsets, or
        just their count when all of them lie before ``start``; and the next position."""
        assert self.fd is not None
        want = CHUNK_BYTES
        while True:
            data = os.pread(self.fd, min(want, self.size - pos), pos)
            if not data:
                raise SinkError(f"{self.path} shrank while being read")
            cut = data.rfind(b"\n") + 1
            if pos + len(data) >= self.size:
                cut = len(data)  # the acknowledged part ends on a line end (or the file's end)
            if cut:
                break
            want *= 2  # one line longer than a chunk: read more
        data = data[:cut]
        n = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        if index + n <= start:
            return n, pos + cut
        out: list[tuple[bytes, int]] = []
        at = 0
        for line in _split(data):
            at += len(line) + 1
            out.append((line, min(pos + at, pos + cut)))
        return out, pos + cut


def _split(data: bytes) -> Iterator[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return iter(lines)


async def open_stream(
    buffer: Buffer, logs_dir: Path, ek: EventKey, lock_timeout_s: float = 10.0
) -> DayStream:
    """Take a consistent picture of ``ek``'s stream (see the module's docstring)."""
    path = path_for(logs_dir, ek)
    while True:
        fd = await asyncio.to_thread(open_day_file, logs_dir, ek)
        try:
            if fd is not None:
                await asyncio.to_thread(
                    functools.partial(lock, fd, path, lock_timeout_s, shared=True)
                )
            async with buffer.client.pipeline(transaction=True) as pipe:
                pipe.lrange(ek.claim, 0, -1)
                pipe.lrange(ek.key, 0, -1)
                pipe.get(ek.offset)
                with redis_errors("reading buffered events"):
                    claim, live, offset = await pipe.execute()
            if fd is None:
                # A drainer makes the file before it acknowledges anything: if there is
                # still none, nothing had left Redis when the lists were read.
                if await asyncio.to_thread(os.path.lexists, path):
                    continue
                return DayStream(ek, path, None, 0, [*claim, *live])
            size = os.fstat(fd).st_size
            pending = None if offset is None else parse_size(offset.decode("ascii", "replace"))
            if pending is not None:
                size = min(size, pending)  # beyond it: an append not acknowledged
            fcntl.flock(fd, fcntl.LOCK_UN)
            return DayStream(ek, path, fd, size, [*claim, *live])
        except BaseException:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
