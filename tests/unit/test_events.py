"""The event model: what is accepted, what is refused and why, and how it is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logpipe_cli.errors import InvalidEventError
from logpipe_cli.events import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_EXTRA_FIELDS,
    MAX_FIELD_NAME_CHARS,
    MILLISECONDS_THRESHOLD,
    RULES,
    day_of,
    decode_json,
    is_valid_line,
    parse_event,
    split_lines,
    split_valid,
    validate_batch,
    validate_event,
)
from logpipe_cli.sink import encode_lines

NOW = 1_700_000_000  # 2023-11-14
MAX_FUTURE = 86400


def good(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"user_id": "123", "event": "login", "timestamp": NOW - 60}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def check(obj: Any) -> Any:
    return validate_event(obj, now=NOW, max_future_s=MAX_FUTURE)


def refused(obj: Any) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as info:
        check(obj)
    assert info.value.http_status == 400
    return info.value


# ---- user_id -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    [
        "1",
        "123",
        "alice",
        "a.b",
        "a_b-c",
        "me@example.com",
        "x+tag",
        "_x",
        "-x",
        "@x",
        "+x",
        "Z" * 128,
        "a..b",
        "a.",
    ],
)
def test_user_id_accepted(user_id: str) -> None:
    assert check(good(user_id=user_id)).user_id == user_id


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        "Z" * 129,
        ".hidden",
        "..",
        "../etc",
        "a/b",
        "a\\b",
        "a:b",
        "a b",
        "tab\t",
        "é",
        "a\nb",
        "a\x00b",
        "a*",
        "a?",
    ],
)
def test_user_id_refused(user_id: str) -> None:
    err = refused(good(user_id=user_id))
    assert err.field == "user_id"
    assert "1-128 characters" in err.detail
    assert "not starting with '.'" in err.detail


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(123, "integer"), (["a"], "array"), ({"a": 1}, "object"), (True, "boolean"), (1.5, "number")],
)
def test_user_id_mistyped(value: Any, type_name: str) -> None:
    err = refused(good(user_id=value))
    assert err.field == "user_id"
    assert f"must be a string, got {type_name}" in err.detail


# ---- event ---------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["x", "e" * 256, "é" * 256, "with spaces and\nnewline"])
def test_event_accepted(event: str) -> None:
    stored = check(good(event=event))
    assert json.loads(stored.line)["event"] == event
    assert b"\n" not in stored.line


@pytest.mark.parametrize(("event", "length"), [("", 0), ("e" * 257, 257), ("é" * 257, 257)])
def test_event_length_refused(event: str, length: int) -> None:
    err = refused(good(event=event))
    assert err.field == "event"
    assert f"1-256 characters, got {length}" in err.detail


def test_event_mistyped() -> None:
    err = refused(good(event=5))
    assert err.field == "event"
    assert "must be a string, got integer" in err.detail


# ---- timestamp -------------------------------------------------------------------------


@pytest.mark.parametrize("ts", [0, 1, NOW, NOW + MAX_FUTURE])
def test_timestamp_accepted(ts: int) -> None:
    assert check(good(timestamp=ts)).timestamp == ts


@pytest.mark.parametrize(
    ("ts", "fragment"),
    [
        (True, "got boolean"),
        (False, "got boolean"),
        (1.5, "got number"),
        (float(NOW), "got number"),
        ("1700000000", "got string"),
        (-1, "must not be negative, got -1"),
        (NOW + MAX_FUTURE + 1, "ahead of the server's clock"),
    ],
)
def test_timestamp_refused(ts: Any, fragment: str) -> None:
    err = refused(good(timestamp=ts))
    assert err.field == "timestamp"
    assert fragment in err.detail


def test_timestamp_in_milliseconds_says_seconds_are_expected() -> None:
    ms = NOW * 1000
    err = refused(good(timestamp=ms))
    assert err.field == "timestamp"
    assert "milliseconds" in err.detail
    assert "seconds are expected" in err.detail
    assert str(NOW) in err.detail  # suggests the value it probably meant
    assert ms >= MILLISECONDS_THRESHOLD


def test_future_message_says_how_far_and_the_limit() -> None:
    err = refused(good(timestamp=NOW + 2 * MAX_FUTURE))
    assert f"{2 * MAX_FUTURE} s ahead" in err.detail
    assert f"at most {MAX_FUTURE} s" in err.detail
    assert "milliseconds" not in err.detail


def test_old_events_are_accepted_for_backfill() -> None:
    assert check(good(timestamp=86400 * 365)).timestamp == 86400 * 365


# ---- missing fields, shape -------------------------------------------------------------


@pytest.mark.parametrize("name", ["user_id", "event", "timestamp"])
def test_missing_field(name: str) -> None:
    err = refused(good(**{name: ...}))
    assert err.field == name
    assert err.detail == f"{name}: field is required"


@pytest.mark.parametrize("name", ["user_id", "event", "timestamp"])
def test_null_field_is_missing(name: str) -> None:
    assert refused(good(**{name: None})).field == name


@pytest.mark.parametrize(
    ("obj", "type_name"), [([], "array"), ("x", "string"), (1, "integer"), (None, "null")]
)
def test_non_object(obj: Any, type_name: str) -> None:
    err = refused(obj)
    assert err.field is None
    assert f"must be a JSON object, got {type_name}" in err.detail


def test_invalid_json() -> None:
    with pytest.raises(InvalidEventError, match="body is not valid JSON"):
        decode_json(b'{"user_id": ')
    with pytest.raises(InvalidEventError, match="body is not valid JSON"):
        parse_event(b"", now=NOW, max_future_s=MAX_FUTURE)


def test_invalid_utf8_is_invalid_json_not_a_crash() -> None:
    body = b'{"user_id":"u","event":"\xff","timestamp":1}'
    with pytest.raises(InvalidEventError, match="body is not valid JSON"):
        parse_event(body, now=NOW, max_future_s=MAX_FUTURE)


# ---- the stored line -------------------------------------------------------------------


def test_extra_fields_kept_verbatim_and_compact() -> None:
    body = (
        b'{ "user_id" : "u1", "event" : "buy", "timestamp" : 1700000000, '
        b'"amount" : 12.5, "tags" : ["a", "b"], "meta" : {"nested": {"ok": true}}, '
        b'"note" : "caf\\u00e9 \\"quoted\\"\\nline", "none" : null, "big": 123456789012345678901}'
    )
    event = parse_event(body, now=NOW, max_future_s=MAX_FUTURE)
    assert event.user_id == "u1"
    assert event.timestamp == 1700000000
    assert json.loads(event.line) == json.loads(body)
    assert list(json.loads(event.line)) == list(json.loads(body))  # key order kept
    assert b"\n" not in event.line
    assert b": " not in event.line
    assert b", " not in event.line
    assert event.line.startswith(b'{"user_id":"u1","event":"buy","timestamp":1700000000,')


def test_duplicate_keys_cannot_make_the_line_disagree_with_the_route() -> None:
    body = b'{"user_id":"a","event":"x","timestamp":5,"user_id":"b"}'
    event = parse_event(body, now=NOW, max_future_s=MAX_FUTURE)
    assert event.user_id == "b"
    assert json.loads(event.line)["user_id"] == "b"
    assert event.line.count(b"user_id") == 1
    with pytest.raises(InvalidEventError):
        parse_event(
            b'{"user_id":"a","event":"x","timestamp":5,"user_id":"../x"}',
            now=NOW,
            max_future_s=MAX_FUTURE,
        )


def test_unicode_is_stored_as_utf8() -> None:
    event = check(good(event="café ✓"))
    assert "café ✓".encode() in event.line


@pytest.mark.parametrize(
    ("ts", "day"), [(0, 0), (86399, 0), (86400, 1), (NOW, 19675), (1.9 * 86400, 1)]
)
def test_day_of(ts: float, day: int) -> None:
    assert day_of(ts) == day


# ---- what the drainer may write ------------------------------------------------------


def test_split_valid_good_batch() -> None:
    values = [b'{"a":1}', b'{"b":[1,2]}', b"{}"]
    assert split_valid(values) == (values, [])


def test_split_valid_empty() -> None:
    assert split_valid([]) == ([], [])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b'{"a":1}\n{"b":2}', id="newline"),
        pytest.param(b"[1,2]", id="array"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"not json", id="invalid"),
        pytest.param(b'{"a":', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"a":"\xff"}', id="not-utf8"),
    ],
)
def test_split_valid_sorts_out_a_bad_value(bad: bytes) -> None:
    values = [b'{"first":1}', bad, b'{"last":1}']
    assert split_valid(values) == ([b'{"first":1}', b'{"last":1}'], [bad])
    assert not is_valid_line(bad)


def test_split_valid_values_that_only_parse_together() -> None:
    # Joined with commas these three read as three objects, but none of the first two is
    # a JSON object alone and the third is two: writing them would tear lines apart.
    values = [b'{"a":[1', b"2]}", b"{},{}"]
    assert split_valid(values) == ([], values)


@pytest.mark.parametrize(
    "values",
    [
        # one item over two lines, and two items on one line: as many items as values
        # (each starting with "{"): as many items as values, but none of them its value
        pytest.param([b'{"a":[1,', b'{"b":2}]}', b"{}{}"], id="over-two-lines-two-on-one"),
        pytest.param([b'{"a":[1,', b'{"b":2}]}', b"{} {}"], id="two-on-one-line-spaced"),
        pytest.param([b"{} ", b"{}"], id="trailing-space"),
    ],
)
def test_split_lines_items_must_be_their_values(values: list[bytes]) -> None:
    good, bad, data = split_lines(values)
    assert good == [v for v in values if is_valid_line(v)]
    assert bad == [v for v in values if not is_valid_line(v)]
    assert data == encode_lines(good)


@pytest.mark.parametrize(
    "values",
    [
        [b'{"a":1}', b'{"b":[1,2]}', b"{}"],
        [b'{"a":"\xc3\xa9"}', b'{"b":"\xe2\x82\xac"}'],  # UTF-8, not ASCII
        [b"x1", b'{"n":1}', b"", b'{"n":2}'],
        [b' {"a":1}', b'{"a":1}\t'],  # whitespace around an object: valid, written as is
        [],
    ],
)
def test_split_lines_data_is_the_good_values_as_lines(values: list[bytes]) -> None:
    good, bad, data = split_lines(values)
    assert (good, bad) == split_valid(values)
    assert good == [v for v in values if is_valid_line(v)]
    assert data == encode_lines(good)


def test_split_valid_keeps_order_of_good_and_bad() -> None:
    values = [b"x1", b'{"n":1}', b"x2", b'{"n":2}', b"x3"]
    assert split_valid(values) == ([b'{"n":1}', b'{"n":2}'], [b"x1", b"x2", b"x3"])


# ---- hostile shapes: depth, extra fields, size ---------------------------------------


def deep_doc(depth: int, name: str = "x") -> bytes:
    head = b'{"user_id":"u","event":"e","timestamp":1,' + json.dumps(name).encode() + b":"
    return head + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [MAX_DEPTH, 970, 100_000])
def test_a_field_nested_too_deep_is_refused_naming_it(depth: int) -> None:
    with pytest.raises(InvalidEventError) as err:
        parse_event(deep_doc(depth), now=NOW, max_future_s=MAX_FUTURE)
    assert err.value.field == "x"
    assert err.value.detail == f"x: nests deeper than {MAX_DEPTH} levels"


def test_the_field_name_of_an_undecodable_depth_is_unescaped() -> None:
    with pytest.raises(InvalidEventError) as err:
        parse_event(deep_doc(100_000, 'a"b\\c'), now=NOW, max_future_s=MAX_FUTURE)
    assert err.value.field == 'a"b\\c'


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    doc = {"user_id": "u", "event": "e", "timestamp": 1, "s": "[{" * 1000, "d": [[1]]}
    event = parse_event(json.dumps(doc).encode(), now=NOW, max_future_s=MAX_FUTURE)
    assert json.loads(event.line) == doc


def test_a_document_too_deep_to_decode_is_invalid_json_not_a_crash() -> None:
    with pytest.raises(InvalidEventError, match="body: nests deeper than 64 levels"):
        decode_json(b"[" * 50_000)  # not even well formed
    with pytest.raises(InvalidEventError, match="nests deeper") as err:
        decode_json(b'{"a":{"b":' + b"[" * 100_000 + b"]" * 100_000 + b"}}")
    assert err.value.field == "a"


@pytest.mark.parametrize("raw", [True, False])
def test_validate_batch_lists_a_deep_event_and_keeps_the_rest(raw: bool) -> None:
    docs: list[Any] = [json.dumps(good()).encode(), deep_doc(500), json.dumps(good()).encode()]
    if not raw:
        docs = [json.loads(d) for d in docs]
    events, errors = validate_batch(docs, now=NOW, max_future_s=MAX_FUTURE, raw=raw)
    assert len(events) == 2
    assert errors == [(1, f"x: nests deeper than {MAX_DEPTH} levels")]


def test_validate_batch_refuses_an_ndjson_line_too_deep_to_decode() -> None:
    events, errors = validate_batch([deep_doc(100_000)], now=NOW, max_future_s=MAX_FUTURE, raw=True)
    assert events == []
    assert errors == [(0, f"x: nests deeper than {MAX_DEPTH} levels")]


def test_extra_fields_up_to_the_limit_are_kept() -> None:
    extras = {f"k{i}": i for i in range(MAX_EXTRA_FIELDS)}
    event = validate_event(good(**extras), now=NOW, max_future_s=MAX_FUTURE)
    assert json.loads(event.line) == good(**extras)


def test_one_extra_field_too_many_is_refused_naming_the_first_beyond() -> None:
    extras = {f"k{i}": i for i in range(MAX_EXTRA_FIELDS + 5)}
    with pytest.raises(InvalidEventError) as err:
        validate_event(good(**extras), now=NOW, max_future_s=MAX_FUTURE)
    assert err.value.field == f"k{MAX_EXTRA_FIELDS}"
    assert f"has {MAX_EXTRA_FIELDS + 5} extra fields" in err.value.detail


def test_a_long_field_name_is_refused_and_named_up_to_the_limit() -> None:
    name = "n" * 10_000
    with pytest.raises(InvalidEventError) as err:
        validate_event(good(**{name: 1}), now=NOW, max_future_s=MAX_FUTURE)
    assert err.value.field == "n" * MAX_FIELD_NAME_CHARS
    assert "field name has 10000 characters" in err.value.detail


def test_an_event_larger_than_the_cap_is_refused_naming_its_largest_field() -> None:
    doc = good(small="x" * 100, large="y" * MAX_EVENT_BYTES)
    with pytest.raises(InvalidEventError) as err:
        validate_event(doc, now=NOW, max_future_s=MAX_FUTURE)
    assert err.value.field == "large"
    assert f"at most {MAX_EVENT_BYTES} are allowed" in err.value.detail


def test_the_rules_are_one_frozen_declaration() -> None:
    assert (RULES.max_depth, RULES.max_extra_fields, RULES.max_event_bytes) == (
        MAX_DEPTH,
        MAX_EXTRA_FIELDS,
        MAX_EVENT_BYTES,
    )
    with pytest.raises(AttributeError):
        RULES.max_depth = 1000  # type: ignore[misc]


@pytest.mark.parametrize("depth", [970, 100_000])
def test_split_valid_never_raises_on_a_deep_value(depth: int) -> None:
    deep = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    good_values = [b'{"a":1}', b'{"b":2}']
    got_good, got_bad = split_valid([good_values[0], deep, good_values[1]])
    # too deep for the decoder (which depends on how deep the calling thread's stack
    # already is): quarantined; a depth it manages is a JSON object like any other
    assert [v for v in got_good if v != deep] == good_values
    assert sorted(got_good + got_bad) == sorted([*good_values, deep])
    if depth == 100_000:
        assert got_bad == [deep]


def test_a_value_too_deep_to_decode_is_not_a_valid_line() -> None:
    assert not is_valid_line(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
