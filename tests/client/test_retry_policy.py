"""The retry decision (one pure function, as a table), Retry-After parsing, event ids."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

from logpipe_cli.appclient import (
    EVENT_ID_RE,
    RetryPolicy,
    make_event,
    new_event_id,
    parse_retry_after,
    retry_delay,
)
from logpipe_cli.clientcore import Exchange, RefusedError, line_with_id, with_id
from logpipe_cli.errors import InvalidEventError
from tests.client.conftest import POLICY, FakeClock

P = RetryPolicy(
    initial_backoff_s=0.1, max_backoff_s=2.0, max_total_s=10.0, max_retry_after_s=5.0, jitter=0.5
)


@pytest.mark.parametrize(
    ("attempt", "elapsed_s", "retry_after_s", "rand", "expected"),
    [
        # exponential backoff from initial_backoff_s, doubling per attempt
        (1, 0.0, None, 0.0, 0.1),
        (2, 0.1, None, 0.0, 0.2),
        (3, 0.3, None, 0.0, 0.4),
        (5, 1.5, None, 0.0, 1.6),
        # ... capped at max_backoff_s
        (6, 3.1, None, 0.0, 2.0),
        (30, 3.1, None, 0.0, 2.0),
        # jitter takes off up to `jitter` of the wait, scaled by rand
        (1, 0.0, None, 0.5, 0.075),
        (6, 3.1, None, 0.999, 2.0 * (1 - 0.5 * 0.999)),
        # Retry-After replaces the backoff, jitter or not ...
        (1, 0.0, 3.0, 0.9, 3.0),
        (7, 1.0, 0.0, 0.0, 0.0),
        # ... capped at max_retry_after_s; a negative one (clock skew) means now
        (1, 0.0, 3600.0, 0.0, 5.0),
        (1, 0.0, -4.0, 0.0, 0.0),
        # the total is bounded: no wait that would end after max_total_s
        (6, 8.0, None, 0.0, 2.0),
        (6, 8.1, None, 0.0, None),
        (1, 9.0, 3.0, 0.0, None),
        (1, 10.0, 0.0, 0.0, 0.0),
        (1, 10.5, 0.0, 0.0, None),
    ],
)
def test_retry_delay(
    attempt: int, elapsed_s: float, retry_after_s: float | None, rand: float, expected: float | None
) -> None:
    got = retry_delay(P, attempt, elapsed_s, retry_after_s, rand)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("max_retries", "attempt", "expected"),
    [
        (None, 30, 2.0),  # only the time bounds it
        (0, 1, None),  # no retry at all
        (2, 1, 0.1),
        (2, 2, 0.2),
        (2, 3, None),  # the third failure: two retries were made
    ],
)
def test_max_retries_bounds_the_number_of_retries(
    max_retries: int | None, attempt: int, expected: float | None
) -> None:
    policy = RetryPolicy(max_backoff_s=2.0, jitter=0.0, max_retries=max_retries)
    assert retry_delay(policy, attempt, 0.0) == expected
    if expected is None:  # a Retry-After does not buy another retry
        assert retry_delay(policy, attempt, 0.0, retry_after_s=1.0) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("-3", None),
        ("1.5", None),  # RFC 9110: delay-seconds is a non-negative integer
        ("²", None),  # str.isdigit says yes, float() raised
        ("\u0663", None),  # ARABIC-INDIC THREE: float() takes it, but RFC 9110 DIGITs are ASCII
        (email.utils.formatdate(1_000_030, usegmt=True), 30.0),
        (email.utils.formatdate(999_000, usegmt=True), 0.0),  # a date in the past: now
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000.0) == expected


def test_new_event_ids_are_valid_unique_and_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert all(EVENT_ID_RE.fullmatch(i) and len(i) == 32 for i in ids)
    assert len(set(ids)) == len(ids)
    # the first 12 hex digits are milliseconds: never decreasing within a process
    prefixes = [i[:12] for i in ids]
    assert prefixes == sorted(prefixes)


def test_make_event_fills_in_what_is_missing_and_keeps_what_is_given() -> None:
    ev = make_event("u1", "clicked", None, None, {"page": "home"})
    assert EVENT_ID_RE.fullmatch(ev["event_id"])
    assert isinstance(ev["timestamp"], int)
    assert ev["page"] == "home"
    given = make_event("u1", "clicked", 1712345678.9, "order-17:a", {})
    assert (given["timestamp"], given["event_id"]) == (1712345678, "order-17:a")


@pytest.mark.parametrize(
    ("event_id", "fields", "field"),
    [
        ("has space", {}, "event_id"),
        ("x" * 129, {}, "event_id"),
        ("", {}, "event_id"),
        (None, {"user_id": "other"}, None),
        (None, {"timestamp": 1}, None),
    ],
)
def test_make_event_refuses_bad_ids_and_shadowed_fields(
    event_id: str | None, fields: dict[str, object], field: str | None
) -> None:
    with pytest.raises(InvalidEventError) as err:
        make_event("u1", "clicked", None, event_id, fields)
    assert err.value.field == field


def test_an_event_given_an_id_is_given_its_time_too() -> None:
    # the dedupe check is per user and day: were the time left to the server, a retry
    # that crossed midnight UTC would land in the next day's list, stored twice
    before = int(time.time())
    for event in (
        {"user_id": "u1", "event": "a"},
        {"user_id": "u1", "event": "a", "event_id": "x"},
    ):
        filled = with_id(event)
        assert before <= filled["timestamp"] <= int(time.time())
        assert EVENT_ID_RE.fullmatch(filled["event_id"])
    assert with_id({"user_id": "u1", "event": "a", "timestamp": 7})["timestamp"] == 7


@pytest.mark.parametrize(
    ("line", "gets_an_id"),
    [
        (b'{"user_id":"u","event":"e","timestamp":1}', True),
        (b'{"user_id": "u", "event": "e"}', True),  # the server will judge the rest
        (b'{"user_id":"u","event":"e","event_id":"mine"}', False),
        (b"{not json", False),
        (b"[1, 2]", False),
        (b'"a string"', False),
    ],
)
def test_line_with_id_adds_an_id_and_nothing_else(line: bytes, gets_an_id: bool) -> None:
    out = line_with_id(line)
    if not gets_an_id:
        assert out == line
        return
    event = json.loads(out)
    assert EVENT_ID_RE.fullmatch(event.pop("event_id"))
    assert event == json.loads(line)


def test_an_exchange_is_driven_without_any_io() -> None:
    # the core alone: answers and errors go in, waits and the result come out
    clock = FakeClock()
    exchange = Exchange("http://t/log", b"{}", {}, POLICY, clock, lambda a: (a.body, a.attempts))
    req = httpx.Request("POST", "http://t/log")
    with pytest.raises(RuntimeError):
        exchange.result  # noqa: B018 - nothing succeeded yet
    assert exchange.outcome(httpx.Response(503, headers={"retry-after": "3"}, request=req)) == 3
    assert exchange.outcome(httpx.ConnectError("refused", request=req)) == 0.2
    assert exchange.outcome(httpx.Response(200, json={"stored": True}, request=req)) is None
    assert exchange.result == ({"stored": True}, 3)
    with pytest.raises(RefusedError) as err:
        Exchange("http://t/log", b"{}", {}, POLICY, clock, id).outcome(
            httpx.Response(403, json={"detail": "wrong scope"}, request=req)
        )
    assert (err.value.status, err.value.detail) == (403, "wrong scope")
