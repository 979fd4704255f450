"""When one syncfs(2) stands in for a round's fsyncs, and how it reports a failed write."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path

import pytest

from logpipe_cli import durable
from logpipe_cli.durable import Barrier
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import load_settings


@pytest.mark.parametrize(
    ("release", "usable"),
    [
        ("5.7.19", False),
        ("4.19.0-26-amd64", False),
        ("5.8.0", True),
        ("5.10.0-30-cloud-amd64", True),
        ("6.18.44-fc-v1045", True),
        ("not a version", False),
    ],
)
def test_only_a_kernel_that_reports_write_back_errors_to_syncfs_is_used(
    release: str, usable: bool
) -> None:
    problem = durable.kernel_problem(release)
    assert (problem is None) == usable
    if not usable:
        assert release in problem  # type: ignore[operator]


def test_this_test_machine_can_use_syncfs() -> None:
    """The suite's drain tests run the syncfs path: on a kernel without it, they would
    all quietly test the fsync path alone."""
    assert durable.kernel_problem() is None, durable.kernel_problem()


def test_asking_for_syncfs_where_it_cannot_be_trusted_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(durable, "_this_kernel_problem", lambda: "Linux 5.4.0 does not ...")
    with pytest.raises(ConfigError) as err:
        load_settings({"drainer": {"sync": "filesystem"}}, {})
    assert "drainer.sync" in str(err.value)
    assert "Linux 5.4.0" in str(err.value)
    # auto and file are fine anywhere: auto falls back to fsync file by file
    assert load_settings({"drainer": {"sync": "auto"}}, {}).drainer.sync == "auto"
    assert load_settings({"drainer": {"sync": "file"}}, {}).drainer.sync == "file"


def test_an_unknown_sync_mode_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"drainer": {"sync": "fast"}}, {})
    assert "drainer.sync" in str(err.value)


def test_a_barrier_is_opened_on_a_trusted_local_filesystem(tmp_path: Path) -> None:
    barrier = Barrier.open(str(tmp_path), "auto")
    assert barrier is not None
    assert durable.filesystem_of(barrier.fd) in durable.TRUSTED
    (tmp_path / "f").write_bytes(b"x")
    barrier.sync_and_close()
    assert barrier.fd == -1


def test_file_mode_never_opens_one(tmp_path: Path) -> None:
    assert Barrier.open(str(tmp_path), "file") is None


def test_auto_fsyncs_file_by_file_on_a_filesystem_it_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nfs = 0x6969
    opened: list[int] = []
    real_open = os.open

    def counting_open(*args: object, **kw: object) -> int:
        fd = real_open(*args, **kw)  # type: ignore[arg-type]
        opened.append(fd)
        return fd

    monkeypatch.setattr(durable, "filesystem_of", lambda fd: nfs)
    monkeypatch.setattr(os, "open", counting_open)
    assert Barrier.open(str(tmp_path), "auto") is None
    monkeypatch.undo()
    assert len(opened) == 1
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(opened[0])  # closed again, not leaked
    # asked for by name, it is used on any filesystem (the operator's call)
    monkeypatch.setattr(durable, "filesystem_of", lambda fd: nfs)
    forced = Barrier.open(str(tmp_path), "filesystem")
    assert forced is not None
    forced.close()


def test_a_logs_dir_that_cannot_be_opened_falls_back_to_fsync(tmp_path: Path) -> None:
    assert Barrier.open(str(tmp_path / "missing"), "auto") is None


class _FailingLibc:
    """A libc whose syncfs reports a write-back error, as the kernel does after one."""

    def __init__(self) -> None:
        self.synced: list[int] = []

    def syncfs(self, fd: int) -> int:
        self.synced.append(fd)
        ctypes.set_errno(errno.EIO)
        return -1


def test_a_write_back_error_is_an_oserror_and_the_descriptor_is_closed_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    barrier = Barrier.open(str(tmp_path), "filesystem")
    assert barrier is not None
    fd = barrier.fd
    libc = _FailingLibc()
    monkeypatch.setattr(durable, "_LIBC", libc)
    with pytest.raises(OSError, match="Input/output error") as err:
        barrier.sync_and_close()
    assert err.value.errno == errno.EIO
    assert libc.synced == [fd]
    assert barrier.fd == -1
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


class _SlowLibc:
    """libc whose syncfs waits until told to go on (a long write-back)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go_on = threading.Event()

    def syncfs(self, fd: int) -> int:
        self.started.set()
        assert self.go_on.wait(10)
        return 0


def test_a_close_during_the_syncfs_leaves_the_descriptor_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round cancelled while its syncfs runs: closed under it, the descriptor's number
    could go to the next file the process opens."""
    barrier = Barrier.open(str(tmp_path), "filesystem")
    assert barrier is not None
    fd = barrier.fd
    libc = _SlowLibc()
    monkeypatch.setattr(durable, "_LIBC", libc)
    thread = threading.Thread(target=barrier.sync_and_close)
    thread.start()
    assert libc.started.wait(10)
    barrier.close()
    os.fstat(fd)  # still open: the syncfs uses it
    libc.go_on.set()
    thread.join(10)
    assert barrier.fd == -1
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_a_barrier_closed_before_its_syncfs_ran_is_not_synced(tmp_path: Path) -> None:
    """A task cancelled in the pool's queue never runs: the round closes the barrier,
    and a syncfs that starts after all (it had just been picked up) refuses."""
    barrier = Barrier.open(str(tmp_path), "filesystem")
    assert barrier is not None
    fd = barrier.fd
    barrier.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    with pytest.raises(OSError, match="barrier was closed"):
        barrier.sync_and_close()
