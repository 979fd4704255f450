"""What ``logpipe inspect`` asks of the library: pick and sort buffered keys, read
log files back through a filter, count what they hold.

No CLI and no rich here; the file functions are blocking.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from logpipe_cli.buffer import KeyInfo
from logpipe_cli.daystream import open_day_file
from logpipe_cli.errors import SinkError
from logpipe_cli.keys import USER_ID_RE, EventKey
from logpipe_cli.sink import FileInfo, LineRecord, day_of_file, kind_of, path_for

_EPOCH = dt.date(1970, 1, 1)
_CHUNK_BYTES = 1 << 20
#: below ``logs_dir`` every name is opened relative to its parent's descriptor and never
#: through a link, as the drainer writes them (see :mod:`logpipe_cli.sink`): a link
#: planted there (``user_x -> /home/alice``) must not make ``inspect`` read, count or
#: print anything outside. O_NONBLOCK: a planted FIFO must not block the open.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO date / datetime (UTC unless it names a zone).

    ``"1700000000"``, ``"2024-01-31"``, ``"2024-01-31T12:00"``, ``"2024-01-31 12:00:00+02:00"``.
    Raises :class:`ValueError` with a message fit for a person.
    """
    raw = text.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither Unix seconds nor an ISO date or datetime "
            "(e.g. 1700000000, 2024-01-31, 2024-01-31T12:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_day(text: str) -> int:
    """A day as logpipe numbers them (days since the epoch), or an ISO date."""
    raw = text.strip()
    if raw.isascii() and raw.isdigit():  # str.isdigit alone takes "²", which int() refuses
        return int(raw)
    try:
        date = dt.date.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a day number (days since 1970-01-01) nor an ISO date"
        ) from None
    if date < _EPOCH:
        raise ValueError(f"{text!r} is before 1970-01-01")
    return (date - _EPOCH).days


def day_date(day: int) -> dt.date:
    """The calendar date (UTC) of a day number (OverflowError past 9999-12-31)."""
    return _EPOCH + dt.timedelta(days=day)


def day_text(day: int) -> str:
    """A day number as an ISO date; the number itself when it has none (a key written by
    hand, ``logs:user_x:99999999``, is past the year 9999 and must not crash a listing)."""
    try:
        return day_date(day).isoformat()
    except OverflowError:
        return str(day)


def event_time(event: dict[str, Any]) -> dt.datetime | None:
    """The event's ``timestamp`` as an aware UTC datetime, or ``None`` if it has none."""
    ts = event.get("timestamp")
    if not isinstance(ts, int) or isinstance(ts, bool):
        return None
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


# ---- buffered keys -------------------------------------------------------------------

KEY_SORTS = ("events", "key", "age")


def _age_order(info: KeyInfo) -> tuple[int, str]:
    # keys that do not parse have no day: after every dated key
    return (info.event_key.day if info.event_key else 1 << 62, info.key)


def select_keys(
    infos: Iterable[KeyInfo], *, user: str | None = None, sort: str = "key"
) -> list[KeyInfo]:
    """One user's keys (or all), sorted by ``key``, ``events`` (most first) or ``age``
    (oldest day first)."""
    if sort not in KEY_SORTS:
        raise ValueError(f"sort must be one of {', '.join(KEY_SORTS)}, got {sort!r}")
    chosen = [
        k
        for k in infos
        if user is None or (k.event_key is not None and k.event_key.user_id == user)
    ]
    if sort == "events":
        chosen.sort(key=lambda k: (-k.events, k.key))
    elif sort == "age":
        chosen.sort(key=_age_order)
    else:
        chosen.sort(key=lambda k: k.key)
    return chosen


@dataclass(frozen=True)
class KeyTotals:
    keys: int
    events: int
    bytes: int

    def as_dict(self) -> dict[str, int]:
        return {"keys": self.keys, "events": self.events, "bytes": self.bytes}


def key_totals(infos: Iterable[KeyInfo]) -> KeyTotals:
    listed = list(infos)
    return KeyTotals(len(listed), sum(k.events for k in listed), sum(k.bytes for k in listed))


def key_as_dict(info: KeyInfo) -> dict[str, Any]:
    ek = info.event_key
    return {
        "key": info.key,
        "kind": info.kind,
        "user": ek.user_id if ek else None,
        "day": ek.day if ek else None,
        "date": day_text(ek.day) if ek else None,
        "events": info.events,
        "bytes": info.bytes,
        "ttl_s": info.ttl_s,
    }


# ---- log files -----------------------------------------------------------------------


def resolve_file(logs_dir: Path, user_id: str, day: str) -> Path:
    """``<logs_dir>/user_<id>/<day>.jsonl`` for a user and a day number or ISO date."""
    if not USER_ID_RE.fullmatch(user_id):
        raise ValueError(f"{user_id!r} is not a valid user id")
    return path_for(logs_dir, EventKey(user_id, parse_day(day)))


def open_user_file(logs_dir: Path, user_id: str, day: str) -> tuple[Path, int | None]:
    """:func:`resolve_file` and a read-only descriptor of it (``None``: no such file),
    opened as the drainer opens it: a link or a special file on the way is refused
    with :class:`~logpipe_cli.errors.UnsafeKeyError`. Raises :class:`ValueError` for
    a bad user id or day."""
    path = resolve_file(logs_dir, user_id, day)
    return path, open_day_file(logs_dir, EventKey(user_id, parse_day(day)))


@dataclass(frozen=True)
class LineFilter:
    """Which lines to keep. ``since`` is inclusive, ``until`` exclusive (Unix seconds).

    A line that is not a JSON object is always kept: no filter can tell whether it
    would have matched, and hiding damage from the person looking for it helps no one.
    """

    event: str | None = None
    since: float | None = None
    until: float | None = None

    def keeps(self, record: LineRecord) -> bool:
        e = record.event
        if e is None:
            return True
        if self.event is not None and e.get("event") != self.event:
            return False
        if self.since is None and self.until is None:
            return True
        ts = e.get("timestamp")
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            return False
        if self.since is not None and ts < self.since:
            return False
        return self.until is None or ts < self.until


def record_as_dict(record: LineRecord) -> dict[str, Any]:
    """A line as JSON output: the event and its time, or the raw text of a bad line."""
    if record.event is None:
        raw = record.raw.decode("utf-8", "replace")
        return {"line": record.lineno, "time": None, "event": None, "raw": raw}
    moment = event_time(record.event)
    return {
        "line": record.lineno,
        "time": moment.isoformat() if moment else None,
        "event": record.event,
        "raw": None,
    }


@dataclass
class FileView:
    """The lines of a file that were asked for, and what the whole file holds."""

    path: Path
    records: list[LineRecord] = field(default_factory=list)
    lines: int = 0  # lines in the file
    bad_lines: int = 0  # lines in the file that are not JSON objects
    matched: int = 0  # lines that passed the filter (before --limit / --tail)


def _records(fh: IO[bytes]) -> Iterator[LineRecord]:
    """The lines of an open file; a bad line is reported, never an exception."""
    for lineno, raw in enumerate(fh, 1):
        raw = raw.rstrip(b"\n")
        try:
            obj = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            obj = None  # a line too deep to decode is a bad line, not a crash
        yield LineRecord(lineno, raw, obj if isinstance(obj, dict) else None)


def view_file(
    path: Path,
    flt: LineFilter | None = None,
    *,
    limit: int | None = None,
    tail: int | None = None,
    fd: int | None = None,
) -> FileView:
    """Read ``path`` through ``flt``; keep the first ``limit`` or the last ``tail`` matches.

    ``fd``: read this descriptor (closed here) instead of opening ``path``, e.g. one
    :func:`open_user_file` opened safely. The whole file is read so the counts are true
    for all of it; a bad line is counted and returned, never raised. Raises
    :class:`SinkError` if it cannot be read.
    """
    flt = flt or LineFilter()
    view = FileView(path)
    kept: collections.deque[LineRecord] | list[LineRecord]
    kept = collections.deque(maxlen=tail) if tail is not None else []
    try:
        fh = open(path, "rb") if fd is None else os.fdopen(fd, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        for record in _records(fh):
            view.lines += 1
            if record.event is None:
                view.bad_lines += 1
            if not flt.keeps(record):
                continue
            view.matched += 1
            if limit is None or len(kept) < limit:
                kept.append(record)
    except OSError as exc:
        raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        fh.close()
    view.records = list(kept)
    return view


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without a newline counts), read in large chunks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _count_fd(fd, path)


def _count_fd(fd: int, path: Path) -> int:
    """:func:`count_lines` of an open descriptor, which it closes."""
    n = 0
    last = b"\n"
    try:
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(_CHUNK_BYTES):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from None
    return n + (last != b"\n")


@dataclass(frozen=True)
class FileSummary:
    """A log file with the number of events (lines) it holds."""

    info: FileInfo
    events: int

    def as_dict(self) -> dict[str, Any]:
        f = self.info
        return {
            "path": str(f.path),
            "user": f.user_id,
            "day": f.day,
            "date": day_text(f.day),
            "events": self.events,
            "bytes": f.size,
            "mtime": f.mtime,
        }


@dataclass(frozen=True)
class Refused:
    """A name under ``logs_dir`` where a directory or a log file belongs that is not one
    (a symbolic link, a FIFO, ...): not followed, not read."""

    path: Path
    why: str

    def describe(self) -> str:
        return f"{self.path} is {self.why}: refused, not read"


@dataclass
class FilesFound:
    files: list[FileSummary] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def _open_below(name: str, flags: int, dir_fd: int, path: Path) -> int | Refused | None:
    """``name`` under ``dir_fd`` opened with ``flags`` (never through a link); a
    :class:`Refused` for a link or a special file there, ``None`` for anything else that
    is not what is looked for (a plain file where a directory belongs, gone meanwhile)."""
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            if flags & os.O_DIRECTORY:
                return None  # a plain file where a directory belongs: not a user's
            raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from None
        return Refused(path, kind_of(st.st_mode))
    mode = os.fstat(fd).st_mode
    wanted = stat.S_ISDIR(mode) if flags & os.O_DIRECTORY else stat.S_ISREG(mode)
    if not wanted:
        os.close(fd)
        return None if stat.S_ISDIR(mode) or stat.S_ISREG(mode) else Refused(path, kind_of(mode))
    return fd


def summarize_files(logs_dir: Path, user_id: str | None = None) -> FilesFound:
    """The ``user_<id>/<day>.jsonl`` files under ``logs_dir`` (one user's, if given)
    with their line counts, and what was refused on the way.

    Walked as the drainer writes: each name opened below its parent's descriptor,
    following no link (``logs_dir`` itself is the operator's choice and may be one).
    """
    found = FilesFound()
    try:
        root_fd = os.open(logs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise SinkError(f"cannot read {logs_dir}: {exc.strerror or exc}") from None
    try:
        for name in sorted(os.listdir(root_fd)):
            if not name.startswith("user_") or (user_id is not None and name[5:] != user_id):
                continue
            user_dir = logs_dir / name
            dir_fd = _open_below(name, _DIR_FLAGS, root_fd, user_dir)
            if isinstance(dir_fd, Refused):
                found.refused.append(dir_fd)
            if not isinstance(dir_fd, int):
                continue
            try:
                _summarize_dir(dir_fd, user_dir, name[5:], found)
            finally:
                os.close(dir_fd)
    finally:
        os.close(root_fd)
    return found


def _summarize_dir(dir_fd: int, user_dir: Path, user_id: str, found: FilesFound) -> None:
    for fname in sorted(os.listdir(dir_fd)):
        day = day_of_file(fname)
        if day is None:
            continue
        path = user_dir / fname
        fd = _open_below(fname, _FILE_FLAGS, dir_fd, path)
        if isinstance(fd, Refused):
            found.refused.append(fd)
        if not isinstance(fd, int):
            continue
        st = os.fstat(fd)
        info = FileInfo(path, user_id, day, st.st_size, st.st_mtime)
        found.files.append(FileSummary(info, _count_fd(fd, path)))
