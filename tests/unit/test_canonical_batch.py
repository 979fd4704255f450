"""canonical_batch: the whole-body check of the usual NDJSON batch gives exactly
validate_batch's events, or ``None`` (never an event validate_batch would refuse)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpipe_cli.events import (
    MAX_EVENT_CHARS,
    RULES,
    Event,
    canonical_batch,
    validate_batch,
)

NOW = 1_700_000_000.5
MAX_FUTURE_S = 86400
LIMIT = int(NOW) + MAX_FUTURE_S
KW: dict[str, Any] = {"now": NOW, "max_future_s": MAX_FUTURE_S}


def body_of(docs: list[Any]) -> bytes:
    return b"".join(msgspec.json.encode(d) + b"\n" for d in docs)


def line_by_line(body: bytes) -> tuple[list[Event], list[tuple[int, str]]]:
    return validate_batch([x for x in body.split(b"\n") if x.strip()], raw=True, **KW)


def one_by_one(array: bytes) -> tuple[list[Event], list[tuple[int, str]]]:
    return validate_batch(msgspec.json.decode(array), raw=False, **KW)


def ev(**fields: Any) -> dict[str, Any]:
    return {"user_id": "u1", "event": "e", "timestamp": 1_700_000_000, **fields}


def test_the_usual_batch_is_taken_whole_and_equals_the_line_by_line_check() -> None:
    docs = [ev(user_id=f"user_{i}", event_id=f"id-{i}" if i % 2 else None) for i in range(50)]
    docs = [{k: v for k, v in d.items() if v is not None} for d in docs]
    body = body_of(docs)
    got = canonical_batch(body, **KW)
    assert got is not None
    assert (got, []) == line_by_line(body)
    assert [e.line for e in got] == body.split(b"\n")[:-1]


#: one line each, spelled so that the whole-body check must not take it: a rule broken,
#: or valid but not the compact three (four) fields in order
NOT_TAKEN = [
    b'{"user_id":"a\\n","event":"e","timestamp":1}',  # "$" would let this through
    b'{"user_id":"a\\nb","event":"e","timestamp":1}',  # two valid ids, joined, would pass
    b'{"user_id":"u","event":"e","timestamp":1,"event_id":"x\\n"}',
    b'{"user_id":"u","event":"e","timestamp":1,"event_id":"x\\ny"}',
    b'{"user_id":"u","event":"e","timestamp":1,"event_id":null}',
    b'{"user_id":"u","event":"e","timestamp":1,"event_id":""}',
    b'{"user_id":"u","event":"e","timestamp":1,"event_id":"' + b"i" * 129 + b'"}',
    b'{"user_id":"a","user_id":"b","event":"e","timestamp":1}',
    b'{"event":"e","user_id":"u","timestamp":1}',
    b'{"user_id":"u","event_id":"x","event":"e","timestamp":1}',
    b'{"user_id": "u","event":"e","timestamp":1}',
    b'{"user_id":"u","event":"e","timestamp":1,"extra":1}',
    b'{"user_id":"u","event":"e","timestamp":true}',
    b'{"user_id":"u","event":"e","timestamp":1.0}',
    b'{"user_id":"u","event":"e","timestamp":-1}',
    b'{"user_id":"u","event":"e","timestamp":%d}' % (LIMIT + 1),
    b'{"user_id":"u","event":"e","timestamp":99999999999999999999999999}',
    b'{"user_id":"u","event":"","timestamp":1}',
    b'{"user_id":"u","event":"' + b"x" * (MAX_EVENT_CHARS + 1) + b'","timestamp":1}',
    b'{"user_id":"' + b"a" * 129 + b'","event":"e","timestamp":1}',
    b'{"user_id":".u","event":"e","timestamp":1}',
    b'{"user_id":"","event":"e","timestamp":1}',
    b'{"user_id":"a/b","event":"e","timestamp":1}',
    b'{"user_id":"u","event":"\xff","timestamp":1}',
    b'{"user_id":"u","event":"\\ud800","timestamp":1}',
    b'{"user_id":"u","event":"\\u00e9","timestamp":1}',  # valid; encodes as UTF-8
    b'{"user_id":"u","event":"e","timestamp":1}\r',
    b'{"user_id":"u","event":"e","timestamp":1} ',
    b"",
    b"null",
    b"[]",
    b'{"user_id":"u","event":"e","timestamp":1}{"user_id":"u","event":"e","timestamp":1}',
]


@pytest.mark.parametrize("line", NOT_TAKEN)
def test_any_other_line_sends_the_batch_line_by_line(line: bytes) -> None:
    good = msgspec.json.encode(ev()) + b"\n"
    for body in (line + b"\n", good + line + b"\n", line + b"\n" + good):
        assert canonical_batch(body, **KW) is None, body
    good = good.rstrip()
    for body in (b"[" + line + b"]", b"[" + good + b"," + line + b"]"):
        assert canonical_batch(body, ndjson=False, **KW) is None, body


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b" [" + msgspec.json.encode(ev()) + b"]",
        b"[" + msgspec.json.encode(ev()) + b"] ",
        b"[" + msgspec.json.encode(ev()) + b"]\n",
        b"[" + msgspec.json.encode(ev()) + b", " + msgspec.json.encode(ev()) + b"]",
        msgspec.json.encode(ev()),  # an object, not an array
    ],
)
def test_an_array_with_spaces_or_none_goes_one_by_one(body: bytes) -> None:
    assert canonical_batch(body, ndjson=False, **KW) is None


def test_a_compact_array_is_taken_whole() -> None:
    body = msgspec.json.encode([ev(), ev(user_id="u2", event_id="x")])
    got = canonical_batch(body, ndjson=False, **KW)
    assert got is not None
    assert (got, []) == one_by_one(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\n",
        msgspec.json.encode(ev()) + b"\n\n",
        b"\n" + msgspec.json.encode(ev()) + b"\n",
        msgspec.json.encode(ev()) + b"\r\n",
    ],
)
def test_blank_lines_and_other_endings_go_line_by_line(body: bytes) -> None:
    assert canonical_batch(body, **KW) is None


def test_the_last_line_may_go_without_its_newline() -> None:
    body = body_of([ev(), ev(user_id="u2")]).rstrip(b"\n")
    got = canonical_batch(body, **KW)
    assert got is not None
    assert (got, []) == line_by_line(body)
    assert len(got) == 2


def test_the_bounds_themselves_are_taken() -> None:
    docs = [
        ev(timestamp=LIMIT),
        ev(timestamp=RULES.timestamp_min),
        ev(event="x" * MAX_EVENT_CHARS),
        ev(event="é✓"),
        ev(user_id="a" * RULES.user_id_max_chars),
        ev(event_id="i" * RULES.event_id_max_chars),
    ]
    body = body_of(docs)
    got = canonical_batch(body, **KW)
    assert got is not None
    assert (got, []) == line_by_line(body)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64), st.text(max_size=5))
fields = {
    "user_id": st.one_of(
        st.from_regex(RULES.user_id_pattern, fullmatch=True),
        st.text(alphabet="ab.-_/@+ \n\x00é", max_size=130),
        # valid ids joined by a newline: each piece passes the pattern alone
        st.lists(st.from_regex(RULES.user_id_pattern, fullmatch=True), min_size=2, max_size=3).map(
            "\n".join
        ),
        scalars,
    ),
    "event": st.one_of(st.text(max_size=MAX_EVENT_CHARS + 2), scalars),
    "timestamp": st.one_of(st.integers(-2, 3), st.integers(LIMIT - 2, LIMIT + 2), scalars),
    "event_id": st.one_of(
        st.from_regex(RULES.event_id_pattern, fullmatch=True),
        st.text(alphabet="aZ9._:- /\n", max_size=130),
        st.lists(st.from_regex(RULES.event_id_pattern, fullmatch=True), min_size=2, max_size=3).map(
            "\n".join
        ),
        scalars,
    ),
    "extra": scalars,
}
docs = st.fixed_dictionaries(
    {},
    optional=fields,  # fields may be missing; the dict's order is hypothesis's
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(docs, min_size=1, max_size=5), st.booleans(), st.booleans())
def test_taken_whole_only_with_the_line_by_line_check_s_events(
    batch: list[dict[str, Any]], plain: bool, last_newline: bool
) -> None:
    if plain:  # in the fields' order, as a client library writes them
        order = ("user_id", "event", "timestamp", "event_id")
        batch = [{k: d[k] for k in order if k in d} for d in batch]
    body = body_of(batch) if last_newline else body_of(batch)[:-1]
    array = msgspec.json.encode(batch)
    for got, (events, errors) in (
        (canonical_batch(body, **KW), line_by_line(body)),
        (canonical_batch(array, ndjson=False, **KW), one_by_one(array)),
    ):
        if got is not None:
            assert errors == []
            assert got == events
        elif plain and not errors and all(len(d) >= 3 for d in batch):
            # every event valid and of just these fields, in order: the whole-body
            # check must take it (else it never would and this test would prove nothing)
            raise AssertionError(f"valid plain batch not taken: {body!r}")
