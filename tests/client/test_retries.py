"""What the clients retry, how long they wait, and that every attempt carries the same id.

Against a scripted fake server (tests/client/conftest.py); waits are read from a fake
clock, never measured.
"""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from logpipe_cli.appclient import (
    AsyncClient,
    Client,
    RefusedError,
    RetryPolicy,
    UnavailableError,
)
from logpipe_cli.errors import ClientError, LogpipeError
from tests.client.conftest import POLICY, FakeClock, FakeServer


def client(server: FakeServer, clock: FakeClock, **kw: object) -> Client:
    return Client(
        "http://logpipe.test/",
        transport=server.transport(),
        retry=POLICY,
        sleep=clock.sleep,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def assert_same_attempts(server: FakeServer) -> None:
    """Every attempt sent the very same bytes (hence the same event_id)."""
    bodies = {s.body for s in server.seen}
    assert len(bodies) == 1, bodies


@pytest.mark.parametrize(
    "failure",
    [503, 429, 502, 504, httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError],
)
def test_log_retries_each_transient_failure_with_the_same_event_id(
    failure: int | type[httpx.TransportError], clock: FakeClock
) -> None:
    server = FakeServer(failure, failure, 200)
    with client(server, clock) as c:
        receipt = c.log("u1", "clicked", timestamp=1712345678, page="home")
    assert receipt.attempts == len(server.seen) == 3
    assert_same_attempts(server)
    sent = server.seen[0].events()[0]
    assert sent["event_id"] == receipt.event_id
    assert sent == {
        "user_id": "u1",
        "event": "clicked",
        "timestamp": 1712345678,
        "event_id": receipt.event_id,
        "page": "home",
    }
    assert clock.waits == [0.1, 0.2]  # POLICY's backoff, no jitter


def test_retry_after_is_honoured(clock: FakeClock) -> None:
    server = FakeServer((503, {"Retry-After": "5"}), (429, {"Retry-After": "2"}), 200)
    with client(server, clock) as c:
        receipt = c.log("u1", "clicked", event_id="given-id")
    assert receipt.attempts == 3
    assert receipt.event_id == "given-id"
    assert clock.waits == [5.0, 2.0]
    assert_same_attempts(server)


def test_retrying_stops_when_the_total_time_would_pass_the_bound(clock: FakeClock) -> None:
    server = FakeServer(*[503] * 100)
    with client(server, clock) as c, pytest.raises(UnavailableError) as err:
        c.log("u1", "clicked")
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 2 + 2 = 7.1; one more 2 s wait fits (9.1), then no more
    assert clock.waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert sum(clock.waits) <= POLICY.max_total_s
    assert err.value.attempts == len(server.seen) == 9
    assert err.value.status == 503
    assert "answered 503 (9 attempts)" in err.value.detail
    assert isinstance(err.value, LogpipeError)
    assert_same_attempts(server)


def test_a_retry_after_beyond_the_bound_gives_up_at_once(clock: FakeClock) -> None:
    server = FakeServer((503, {"Retry-After": "30"}))
    policy = RetryPolicy(max_total_s=10.0, max_retry_after_s=60.0)
    with (
        Client("http://t", transport=server.transport(), retry=policy, sleep=clock.sleep) as c,
        pytest.raises(UnavailableError),
    ):
        c.log("u1", "clicked")
    assert clock.waits == []
    assert len(server.seen) == 1


def test_transport_errors_that_never_end_become_unavailable(clock: FakeClock) -> None:
    server = FakeServer(*[httpx.ConnectError] * 100)
    with client(server, clock) as c, pytest.raises(UnavailableError) as err:
        c.log("u1", "clicked")
    assert err.value.status is None
    assert "failed: scripted failure" in err.value.detail
    assert err.value.reason == "scripted failure"


def test_unavailable_says_what_the_server_said_last(clock: FakeClock) -> None:
    server = FakeServer(503, 429)
    policy = RetryPolicy(jitter=0.0, max_retries=1)
    with (
        Client("http://t", transport=server.transport(), retry=policy, sleep=clock.sleep) as c,
        pytest.raises(UnavailableError) as err,
    ):
        c.log("u1", "clicked")
    assert (err.value.status, err.value.attempts) == (429, 2)
    assert err.value.reason == "scripted 429"
    assert clock.waits == [0.1]


def test_post_body_sends_the_bytes_as_they_are_with_the_retries(clock: FakeClock) -> None:
    server = FakeServer(503, 200)
    body = b'{"user_id":"u1","event":"a","timestamp":1,"event_id":"e1"}\n'
    with client(server, clock) as c:
        answer = c.post_body("/logs", body, "application/x-ndjson")
    assert (answer.status, answer.body, answer.attempts) == (200, {"accepted": 1}, 2)
    assert [s.body for s in server.seen] == [body, body]
    assert server.seen[0].headers["content-type"] == "application/x-ndjson"
    with client(FakeServer(400), clock) as c, pytest.raises(RefusedError):
        c.post_body("/log", b"{}")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415])
def test_a_refusal_raises_at_once_with_what_the_server_said(status: int, clock: FakeClock) -> None:
    server = FakeServer(status)
    with client(server, clock) as c, pytest.raises(RefusedError) as err:
        c.log("u1", "clicked")
    assert len(server.seen) == 1
    assert clock.waits == []
    assert err.value.status == status
    assert isinstance(err.value, ClientError)
    if status == 400:
        assert err.value.detail == "user_id: must be 1-128 characters"
        assert err.value.field == "user_id"
    else:
        assert err.value.detail == f"scripted {status}"


def test_a_server_error_other_than_503_is_not_retried(clock: FakeClock) -> None:
    server = FakeServer(500)
    with client(server, clock) as c, pytest.raises(ClientError, match="answered 500") as err:
        c.log("u1", "clicked")
    assert not isinstance(err.value, RefusedError)
    assert len(server.seen) == 1


def test_the_token_is_sent_as_a_bearer_header(clock: FakeClock) -> None:
    server = FakeServer()
    with client(server, clock, token="s3cret") as c:
        c.log("u1", "clicked")
    with client(server, clock) as c:
        c.log("u1", "clicked")
    assert server.seen[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in server.seen[1].headers


def test_log_many_fills_ids_keeps_given_ones_and_gzips_big_bodies(clock: FakeClock) -> None:
    server = FakeServer(503, 200)
    small = [
        {"user_id": "u1", "event": "a", "event_id": "keep-me"},
        {"user_id": "u2", "event": "b"},
    ]
    big = [{"user_id": "u1", "event": "x", "pad": "p" * 100} for _ in range(200)]
    with client(server, clock) as c:
        first = c.log_many(small)
        second = c.log_many(big)
    assert first.attempts == 2
    assert server.seen[0].body == server.seen[1].body  # the retry resent the same ids
    small_req, big_req = server.seen[1], server.seen[2]
    assert small_req.headers["content-type"] == "application/x-ndjson"
    assert "content-encoding" not in small_req.headers
    assert big_req.headers["content-encoding"] == "gzip"
    assert len(gzip.decompress(big_req.body)) > 8 * 1024
    sent = small_req.events()
    assert first.event_ids[0] == "keep-me"
    assert [e["event_id"] for e in sent] == first.event_ids
    assert all(isinstance(e["timestamp"], int) for e in sent)
    assert [e["event_id"] for e in big_req.events()] == second.event_ids
    assert len(set(second.event_ids)) == 200
    assert second.accepted == 200
    assert second.duplicates == []  # the answer had none


def test_a_refused_batch_lists_the_bad_events(clock: FakeClock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "detail": "1 of 2 events invalid; nothing stored",
                "errors": [{"index": 1, "detail": "event: field is required"}],
            },
        )

    with (
        Client("http://t", transport=httpx.MockTransport(refuse)) as c,
        pytest.raises(RefusedError) as err,
    ):
        c.log_many([{"user_id": "u1", "event": "a"}, {"user_id": "u1"}])
    assert err.value.errors == [(1, "event: field is required")]


def test_a_batch_receipt_lists_the_duplicates() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"accepted": 3, "duplicates": 2, "duplicate_indexes": [0, 2]}
        )

    with Client("http://t", transport=httpx.MockTransport(answer)) as c:
        receipt = c.log_many([{"user_id": "u1", "event": "a"}] * 3)
    assert receipt.duplicates == [0, 2]
    assert receipt.accepted == 3


def test_a_body_that_is_not_json_is_refused_before_sending(clock: FakeClock) -> None:
    server = FakeServer()
    with client(server, clock) as c, pytest.raises(LogpipeError, match="JSON"):
        c.log("u1", "clicked", value=float("nan"))
    assert server.seen == []


# ---- the async client ---------------------------------------------------------------


def async_client(server: FakeServer, clock: FakeClock) -> AsyncClient:
    return AsyncClient(
        "http://logpipe.test",
        transport=server.async_transport(),
        retry=POLICY,
        sleep=clock.asleep,
        clock=clock,
    )


def test_async_log_retries_with_the_same_event_id_and_honours_retry_after(
    clock: FakeClock,
) -> None:
    server = FakeServer((503, {"Retry-After": "3"}), httpx.ReadTimeout, 429, 200)

    async def go() -> str:
        async with async_client(server, clock) as c:
            return (await c.log("u1", "clicked")).event_id

    event_id = asyncio.run(go())
    assert len(server.seen) == 4
    assert_same_attempts(server)
    assert json.loads(server.seen[0].body)["event_id"] == event_id
    assert clock.waits == [3.0, 0.2, 0.4]


def test_async_refusal_and_give_up(clock: FakeClock) -> None:
    async def go(server: FakeServer) -> None:
        async with async_client(server, clock) as c:
            await c.log("u1", "clicked")

    with pytest.raises(RefusedError):
        asyncio.run(go(FakeServer(400)))
    with pytest.raises(UnavailableError):
        asyncio.run(go(FakeServer(*[503] * 100)))
    assert sum(clock.waits) <= POLICY.max_total_s


def test_async_post_body(clock: FakeClock) -> None:
    server = FakeServer(httpx.ReadTimeout)

    async def go() -> int:
        async with async_client(server, clock) as c:
            return (await c.post_body("/log", b'{"user_id":"u1"}')).attempts

    assert asyncio.run(go()) == 2
    assert [s.body for s in server.seen] == [b'{"user_id":"u1"}'] * 2


def test_async_log_many(clock: FakeClock) -> None:
    server = FakeServer(503)

    async def go() -> list[str]:
        async with async_client(server, clock) as c:
            return (await c.log_many([{"user_id": "u1", "event": "a"}] * 3)).event_ids

    ids = asyncio.run(go())
    assert_same_attempts(server)
    assert [e["event_id"] for e in server.events()] == ids
