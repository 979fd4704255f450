"""Query parameters: the forms since/until take, limits, and cursors that were tampered with."""

from __future__ import annotations

import base64
import json

import pytest

from logpipe_cli.daystream import Anchor
from logpipe_cli.query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidQueryError,
    Position,
    Query,
    decode_cursor,
    encode_cursor,
    parse_time,
)

DEC_1 = 1796083200  # 2026-12-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("1796083200", DEC_1),
        ("1796083200.5", DEC_1 + 0.5),
        ("0", 0),
        ("2026-12-01", DEC_1),
        ("2026-12-01T15:00:00", DEC_1 + 15 * 3600),
        ("2026-12-01T15:00:00Z", DEC_1 + 15 * 3600),
        ("2026-12-01 15:00", DEC_1 + 15 * 3600),
        ("2026-12-01T15:00:00+02:00", DEC_1 + 13 * 3600),
        ("2026-12-01T15:00:00.250Z", DEC_1 + 15 * 3600 + 0.25),
        (" 2026-12-01 ", DEC_1),
    ],
)
def test_since_and_until_forms(text: str, ts: float) -> None:
    assert parse_time(text, "since") == ts


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "-5", "1e9", "2026-13-01", "2026-12-01T25:00", "12/01/2026", "nan",
     "1796083200.1234567890", "1969-12-31", "2026-12-01X15:00", "9" * 13],
)  # fmt: skip
def test_malformed_times_name_their_field(text: str) -> None:
    with pytest.raises(InvalidQueryError) as err:
        Query.parse("u", until=text)
    assert err.value.field == "until"
    assert err.value.http_status == 400


def test_since_inclusive_until_exclusive() -> None:
    q = Query.parse("u", since="100", until="200")
    ok = {"event": "x", "timestamp": 100}
    assert q.matches(ok)
    assert not q.matches({**ok, "timestamp": 99})
    assert q.matches({**ok, "timestamp": 199})
    assert not q.matches({**ok, "timestamp": 200})
    assert not q.matches({**ok, "timestamp": "150"})
    assert not q.matches({**ok, "timestamp": True})


def test_event_names_are_any_of() -> None:
    q = Query.parse("u", events=["a", "b"])
    assert q.matches({"event": "a"})
    assert q.matches({"event": "b"})
    assert not q.matches({"event": "c"})
    assert Query.parse("u", events=[]).events is None


@pytest.mark.parametrize(
    ("limit", "ok"),
    [(None, DEFAULT_LIMIT), ("1", 1), ("10000", MAX_LIMIT), (5, 5)],
)
def test_limits(limit: str | int | None, ok: int) -> None:
    assert Query.parse("u", limit=limit).limit == ok


@pytest.mark.parametrize("limit", ["0", "10001", "-1", "1.5", "ten", "", 0, 10_001])
def test_bad_limits(limit: str | int) -> None:
    with pytest.raises(InvalidQueryError) as err:
        Query.parse("u", limit=limit)
    assert err.value.field == "limit"


def test_a_larger_limit_only_where_allowed() -> None:
    assert Query.parse("u", limit="50000", max_limit=1_000_000).limit == 50_000


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user_id": None}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": ".hidden"}, "user_id"),
        ({"user_id": "a/b"}, "user_id"),
        ({"user_id": "u", "order": "newest"}, "order"),
        ({"user_id": "u", "events": ["x" * 257]}, "event"),
        ({"user_id": "u", "events": [""]}, "event"),
        ({"user_id": "u", "since": "200", "until": "100"}, "until"),
    ],
)
def test_other_bad_parameters(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidQueryError) as err:
        Query.parse(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_cursor_round_trips() -> None:
    pos = Position(20000, 42, Anchor(40, 4096))
    text = encode_cursor("u", "asc", pos)
    assert decode_cursor(text, "u", "asc") == pos
    assert Query.parse("u", cursor=text).cursor == pos
    assert "=" not in text


def _forge(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


GOOD = {"v": 1, "u": "u", "o": "asc", "d": 20000, "i": 5, "a": [2, 100]}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        "a" * 513,
        _forge([1, 2]),
        _forge({**GOOD, "v": 2}),
        _forge({**GOOD, "i": -1}),
        _forge({**GOOD, "d": 1.5}),
        _forge({**GOOD, "i": True}),
        _forge({**GOOD, "a": [6, 100]}),  # anchor beyond the index
        _forge({**GOOD, "a": [1]}),
        _forge({**GOOD, "extra": 1}),
        _forge({k: v for k, v in GOOD.items() if k != "a"}),
        _forge({**GOOD, "u": "someone-else"}),
        _forge({**GOOD, "o": "desc"}),
        _forge(GOOD) + "A",
        encode_cursor("u", "asc", Position(1, 1)).swapcase(),
    ],
)
def test_tampered_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidQueryError) as err:
        decode_cursor(text, "u", "asc")
    assert err.value.field == "cursor"


def test_a_cursor_is_bound_to_its_order() -> None:
    text = encode_cursor("u", "desc", Position(3, 3))
    with pytest.raises(InvalidQueryError, match="order=desc"):
        Query.parse("u", cursor=text)
