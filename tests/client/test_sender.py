"""``Client.sender()`` and ``AsyncClient.sender()``: buffering, batching, flushing, limits."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from logpipe_cli.appclient import (
    AsyncClient,
    Client,
    DeliveryError,
    QueueFullError,
    RetryPolicy,
)
from logpipe_cli.errors import ClientError, InvalidEventError
from tests.client.conftest import POLICY, FakeClock, FakeServer, stored
from tests.processes import wait_until


def client(server: FakeServer, clock: FakeClock | None = None) -> Client:
    clock = clock or FakeClock()
    return Client("http://t", transport=server.transport(), retry=POLICY, sleep=clock.sleep)


def test_leaving_the_block_posts_everything_in_batches(clock: FakeClock) -> None:
    server = FakeServer()
    with client(server, clock) as c:
        # flush_seconds is long: only batch_size and the exit may post
        with c.sender(batch_size=500, flush_seconds=3600) as s:
            ids = [s.log("u1", "tick", seq=i) for i in range(1234)]
        assert s.sent == 1234
    assert [len(r.events()) for r in server.seen] == [500, 500, 234]
    assert all(r.path == "/logs" for r in server.seen)
    assert [e["event_id"] for e in server.events()] == ids
    assert [e["seq"] for e in server.events()] == list(range(1234))


def test_a_partial_batch_is_posted_after_flush_seconds() -> None:
    server = FakeServer()
    with client(server) as c, c.sender(batch_size=500, flush_seconds=0.05) as s:
        s.log("u1", "tick")
        s.log("u1", "tock")
        # nothing else comes: the thread posts the two once 50 ms passed
        wait_until(lambda: server.seen, "the partial batch")
        assert [e["event"] for e in server.events()] == ["tick", "tock"]


def test_flush_returns_once_everything_queued_is_posted() -> None:
    server = FakeServer()
    with client(server) as c, c.sender(batch_size=500, flush_seconds=3600) as s:
        for i in range(10):
            s.log("u1", "tick", seq=i)
        assert s.flush(timeout=30)
        assert len(server.events()) == 10


def test_the_sender_retries_with_the_same_ids() -> None:
    clock = FakeClock()
    server = FakeServer(503, httpx.ReadTimeout, 200)
    with client(server, clock) as c, c.sender(batch_size=3, flush_seconds=3600) as s:
        for i in range(3):
            s.log("u1", "tick", seq=i)
    assert len(server.seen) == 3
    assert len({r.body for r in server.seen}) == 1
    assert clock.waits == [0.1, 0.2]
    assert s.sent == 3


def test_an_invalid_event_raises_in_the_caller_and_spoils_no_batch() -> None:
    server = FakeServer()
    with client(server) as c, c.sender() as s:
        s.log("u1", "ok")
        with pytest.raises(InvalidEventError) as err:
            s.log("not a user id!", "bad")
        assert err.value.field == "user_id"
        with pytest.raises(InvalidEventError):
            s.log("u1", "x" * 257)
        with pytest.raises(InvalidEventError, match="JSON"):
            s.log("u1", "bad", blob=object())
    assert [e["event"] for e in server.events()] == ["ok"]


def test_a_full_queue_blocks_for_put_timeout_then_raises() -> None:
    server = FakeServer()
    server.gate = threading.Event()  # the server holds every request
    with client(server) as c:
        s = c.sender(batch_size=1, flush_seconds=3600, max_queue=2, put_timeout_s=0.01)
        try:
            s.log("u1", "a")  # taken by the thread, which then hangs in its POST
            assert server.entered.wait(30)
            s.log("u1", "b")
            s.log("u1", "c")  # the queue now holds 2
            with pytest.raises(QueueFullError, match="stayed full"):
                s.log("u1", "d")
        finally:
            server.gate.set()
            s.close()
    assert [e["event"] for e in server.events()] == ["a", "b", "c"]


def test_undelivered_batches_raise_on_close_or_go_to_on_error() -> None:
    server = FakeServer(400, 200, 400)
    with client(server) as c:
        s = c.sender(batch_size=2)
        for i in range(6):
            s.log("u1", "tick", seq=i)
        with pytest.raises(DeliveryError) as err:
            s.close()
        assert err.value.failed == 4
        assert s.sent == 2
        assert len(err.value.errors) == 2

        lost: list[tuple[ClientError, int]] = []
        with c.sender(batch_size=2, on_error=lambda e, n: lost.append((e, n))) as s:
            s.log("u1", "tick")
        assert lost == []
    server2 = FakeServer(*[503] * 100)
    clock = FakeClock()
    with (
        Client(
            "http://t",
            transport=server2.transport(),
            retry=RetryPolicy(max_total_s=1.0, jitter=0.0),
            sleep=clock.sleep,
        ) as c,
        c.sender(on_error=lambda e, n: lost.append((e, n))) as s,
    ):
        s.log("u1", "tick")
    assert [n for _, n in lost] == [1]
    assert "answered 503" in lost[0][0].detail


def test_a_closed_sender_refuses_events() -> None:
    with client(FakeServer()) as c:
        s = c.sender()
        s.close()
        s.close()  # idempotent
        with pytest.raises(ClientError, match="closed"):
            s.log("u1", "late")


def test_async_sender_batches_and_flushes_on_exit() -> None:
    server = FakeServer(503)
    clock = FakeClock()

    async def go() -> list[str]:
        async with (
            AsyncClient(
                "http://t",
                transport=server.async_transport(),
                retry=POLICY,
                sleep=clock.asleep,
            ) as c,
            c.sender(batch_size=500, flush_seconds=3600) as s,
        ):
            return [await s.log("u1", "tick", seq=i) for i in range(1234)]

    ids = asyncio.run(go())
    assert [len(r.events()) for r in server.seen] == [500, 500, 500, 234]  # first one: 503
    assert [e["event_id"] for e in server.events()] == ids
    assert server.seen[0].body == server.seen[1].body


def test_async_sender_posts_a_partial_batch_after_flush_seconds() -> None:
    server = FakeServer()

    async def go() -> None:
        async with (
            AsyncClient("http://t", transport=server.async_transport()) as c,
            c.sender(batch_size=500, flush_seconds=0.05) as s,
        ):
            await s.log("u1", "tick")
            # nothing else comes: the task posts the one event once 50 ms passed
            assert await asyncio.to_thread(server.answered.wait, 30)
            assert len(server.events()) == 1

    asyncio.run(go())


# ---- against the real API -----------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.redis
def test_ten_thousand_events_through_a_sender_are_all_stored(live: str, redis_url: str) -> None:
    with Client(live) as c, c.sender(batch_size=500, flush_seconds=1.0) as s:
        ids = [s.log(f"user{i % 7}", "tick", timestamp=1_700_000_000, seq=i) for i in range(10_000)]
    assert s.sent == 10_000
    events = stored(redis_url)
    assert len(events) == 10_000
    assert sorted(e["event_id"] for e in events) == sorted(ids)
    assert {e["seq"] for e in events} == set(range(10_000))


@pytest.mark.e2e
@pytest.mark.redis
def test_async_sender_against_the_real_api(live: str, redis_url: str) -> None:
    async def go() -> list[str]:
        async with AsyncClient(live) as c, c.sender(batch_size=300) as s:
            return [await s.log("u1", "tick", timestamp=1_700_000_000) for _ in range(2000)]

    ids = asyncio.run(go())
    assert sorted(e["event_id"] for e in stored(redis_url)) == sorted(ids)


def test_an_event_queued_while_closing_is_still_sent() -> None:
    from logpipe_cli.clientcore import checked_line, make_event

    server = FakeServer()
    server.gate = threading.Event()
    with client(server) as c:
        s = c.sender(batch_size=1, flush_seconds=3600)
        s.log("u1", "a")
        assert server.entered.wait(30)  # the thread is stuck posting "a"
        closing = threading.Thread(target=s.close)
        closing.start()
        wait_until(lambda: s._queue.qsize() == 1, "close() to queue its stop marker")
        # what a log() that passed its "closed?" check just before close() would do
        late = make_event("u1", "b", None, None, {})
        s._queue.put((late, checked_line(late)))
        server.gate.set()
        closing.join(30)
        assert not closing.is_alive()
    assert [e["event"] for e in server.events()] == ["a", "b"]
