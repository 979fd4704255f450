"""validate_batch accepts and refuses exactly as validate_event does, event by event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logpipe_cli.errors import InvalidEventError
from logpipe_cli.events import Event, decode_json, validate_batch, validate_event

NOW = 1_700_000_000.5
MAX_FUTURE_S = 86400

DOCS: list[bytes] = [
    b'{"user_id":"u1","event":"e","timestamp":1700000000}',
    b'{"user_id": "u.2", "event": "e", "timestamp": 0, "extra": {"a": [1, 2.5, null]}}',
    b'{"user_id":"u1","event":"e","timestamp":1700086400}',  # exactly the limit
    b'{"user_id":"u1","event":"e","timestamp":1700086401}',  # one second too far
    b'{"user_id":"u1","event":"e","timestamp":1700000000000}',  # milliseconds
    b'{"user_id":"u1","event":"e","timestamp":-1}',
    b'{"user_id":"u1","event":"e","timestamp":1.0}',
    b'{"user_id":"u1","event":"e","timestamp":true}',
    b'{"user_id":"u1","event":"e","timestamp":"1"}',
    b'{"user_id":"u1","event":"e"}',
    b'{"user_id":"u1","event":"","timestamp":1}',
    b'{"user_id":"u1","event":"' + b"x" * 256 + b'","timestamp":1}',
    b'{"user_id":"u1","event":"' + b"x" * 257 + b'","timestamp":1}',
    '{"user_id":"u1","event":"caf\u00e9 \u2713","timestamp":1}'.encode(),
    b'{"user_id":"u1","event":null,"timestamp":1}',
    b'{"user_id":"u1","event":5,"timestamp":1}',
    b'{"user_id":".u","event":"e","timestamp":1}',
    b'{"user_id":"","event":"e","timestamp":1}',
    b'{"user_id":"a/b","event":"e","timestamp":1}',
    b'{"user_id":"' + b"a" * 129 + b'","event":"e","timestamp":1}',
    b'{"user_id":12,"event":"e","timestamp":1}',
    b'{"user_id":null,"event":"e","timestamp":1}',
    b'{"event":"e","timestamp":1}',
    b'{"user_id":"a","user_id":"b","event":"e","timestamp":1}',
    b"[1, 2]",
    b'"text"',
    b"null",
    b"{not json",
    b'{"user_id":"\xff","event":"e","timestamp":1}',
    b"",
]


def one_by_one(docs: list[Any], raw: bool) -> tuple[list[Event], list[tuple[int, str]]]:
    events: list[Event] = []
    errors: list[tuple[int, str]] = []
    for i, doc in enumerate(docs):
        try:
            obj = decode_json(doc) if raw else doc
            events.append(validate_event(obj, now=NOW, max_future_s=MAX_FUTURE_S))
        except InvalidEventError as exc:
            errors.append((i, exc.detail))
    return events, errors


def test_raw_lines_are_judged_as_one_by_one() -> None:
    got = validate_batch(DOCS, now=NOW, max_future_s=MAX_FUTURE_S, raw=True)
    assert got == one_by_one(DOCS, raw=True)
    assert got[0]  # both kinds are in the sample
    assert got[1]


def _json(doc: bytes) -> bool:
    try:
        json.loads(doc)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("doc", [d for d in DOCS if _json(d)])
def test_each_decoded_doc_is_judged_as_validate_event_does(doc: bytes) -> None:
    decoded = [json.loads(doc)]
    got = validate_batch(decoded, now=NOW, max_future_s=MAX_FUTURE_S, raw=False)
    assert got == one_by_one(decoded, raw=False)


def test_a_dict_subclass_takes_the_detailed_path_and_is_accepted_alike() -> None:
    class Dict(dict[str, Any]):
        pass

    docs: list[Any] = [Dict(user_id="u1", event="e", timestamp=1)]
    assert validate_batch(docs, now=NOW, max_future_s=MAX_FUTURE_S, raw=False) == one_by_one(
        docs, raw=False
    )
