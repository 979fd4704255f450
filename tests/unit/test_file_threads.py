"""The drainer's two sets of file threads: quick work (looks, closes, logs_dir's fsync)
never queues behind the appends that other groups handed over."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from logpipe_cli import drainer

pytestmark = pytest.mark.anyio


@pytest.fixture
def fresh_pools(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(drainer, "FILE_THREADS", 2)
    monkeypatch.setattr(drainer, "QUICK_THREADS", 2)
    monkeypatch.setattr(drainer, "_file_pool", None)
    monkeypatch.setattr(drainer, "_quick_pool", None)
    yield
    for pool in (drainer._file_pool, drainer._quick_pool):
        if pool is not None:
            pool.shutdown(wait=True)


async def test_quick_work_runs_while_every_file_thread_is_busy(fresh_pools: None) -> None:
    release = threading.Event()

    def slow_append(n: int) -> int:
        release.wait(10)  # an fsync that takes long
        return n

    # every file thread busy, and more appends queued behind them
    appends = asyncio.ensure_future(drainer._in_file_threads(slow_append, list(range(6))))
    try:
        looked = await asyncio.wait_for(
            drainer._in_file_threads(lambda n: n * 2, [1, 2, 3], quick=True), timeout=5
        )
        assert looked == [2, 4, 6]
        assert not appends.done()
    finally:
        release.set()
    assert await appends == list(range(6))


async def test_each_item_gets_its_own_result_or_error_in_order(fresh_pools: None) -> None:
    def half(n: int) -> float:
        if n == 3:
            raise ValueError("three")
        return n / 2

    for quick in (False, True):
        out = await drainer._in_file_threads(half, [1, 2, 3, 4, 5], quick=quick)
        assert out[:2] == [0.5, 1.0]
        assert out[3:] == [2.0, 2.5]
        assert isinstance(out[2], ValueError)
