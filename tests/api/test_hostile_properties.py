"""Issue 9, "Hostile input, proven": arbitrary requests at the write routes, then a drain.

Hypothesis throws bodies, content types, content encodings, tokens and user ids at
``POST /log`` (both doors: the ASGI fast path, taken when the request has a
Content-Length, and the Litestar handler, taken for a chunked body) and ``POST /logs``
(NDJSON, JSON arrays, gzip), against the app on a real redis-server. It holds:

- never a 500; every answer is JSON of its documented shape;
- every value stored in Redis passes ``events.validate_event`` again, under the key its
  own user id and day give;
- a drain pass afterwards meets no error, and writes nothing outside ``logs_dir``
  (no symlink, nothing but directories and regular files inside it).
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.events import validate_event
from logpipe_cli.keys import USER_ID_RE, event_key, parse_event_key
from tests.conftest import MakeSettings

INGEST, READ, ADMIN = "ingest-token", "read-token", "admin-token"
MAX_BODY_BYTES = 8192
NOW = int(time.time())
#: what the write routes may answer (the OpenAPI document's list, without 500)
DOCUMENTED = {200, 400, 401, 403, 413, 415, 503}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
user_ids = st.one_of(
    st.from_regex(USER_ID_RE, fullmatch=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "..",
            ".",
            ".hidden",
            "../x",
            "a/b",
            "a\\b",
            "/etc/passwd",
            "a\x00b",
            "a:1",
            "a\nb",
            "a\x1b[31m",
            "x" * 129,
            "Bob",
            "bob",
            "CON",
            "\u212a",  # Kelvin sign: lower-cases to ASCII k
            "ａ",  # fullwidth
        ]
    ),
)
timestamps = st.one_of(
    st.integers(min_value=0, max_value=NOW + 3600),
    st.integers(),
    st.sampled_from([2**63, 2**64, -1, 0, True, 1.0, -0.0, "1700000000", None]),
    st.floats(),
)
event_names = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["", "e" * 257, "\x1b]52;c;aGk=\x07", "\r\n", "\x00"]),
    json_values,
)


valid_user_ids = st.from_regex(USER_ID_RE, fullmatch=True)
valid_timestamps = st.integers(min_value=0, max_value=NOW + 3600)
valid_names = st.text(min_size=1, max_size=40)


@st.composite
def events(draw: st.DrawFn) -> Any:
    """Mostly valid events (so that every door stores some), with hostile fields mixed in."""
    obj: dict[str, Any] = {}
    for name, valid, hostile in (
        ("user_id", valid_user_ids, user_ids),
        ("event", valid_names, event_names),
        ("timestamp", valid_timestamps, timestamps),
    ):
        roll = draw(st.integers(0, 19))
        if roll < 19:  # 1 in 20: missing
            obj[name] = draw(valid if roll < 14 else hostile)
    if draw(st.booleans()):
        obj.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4)))
    return obj if draw(st.integers(0, 19)) < 19 else draw(json_values)


def _encode(doc: Any) -> bytes:
    return msgspec.json.encode(doc)


#: bodies no encoder makes: duplicate keys, huge numbers, BOMs, bad UTF-8, deep nesting
RAW_TRICKS = [
    b'{"user_id":"a","user_id":"../x","event":"e","timestamp":1}',
    b'{"user_id":"../x","user_id":"a","event":"e","timestamp":1}',
    b'{"user_id":"a","event":"e","timestamp":1e400}',
    b'{"user_id":"a","event":"e","timestamp":1,"big":1e400,"neg":-1e400,"z":-0}',
    b'{"user_id":"a","event":"e","timestamp":18446744073709551616}',
    b'\xef\xbb\xbf{"user_id":"a","event":"e","timestamp":1}',
    b'{"user_id":"a","event":"\xff\xfe","timestamp":1}',
    b'{"user_id":"a","event":"\\ud800","timestamp":1}',
    b'{"user_id":"a","event":"e","timestamp":1,"d":' + b"[" * 200 + b"]" * 200 + b"}",
    b'{"user_id":"a","event":"e","timestamp":1}\r\n{"user_id":"b","event":"e","timestamp":1}\r\n',
    b'{"user_id":"a","event":"e","timestamp":NaN}',
    b"[]",
    b"",
    b"\n\n",
]


@st.composite
def bodies(draw: st.DrawFn, batch: bool) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.binary(max_size=200))
    if kind == 8:
        return draw(st.sampled_from(RAW_TRICKS))
    if not batch:
        return _encode(draw(events()))
    docs = draw(st.lists(events(), max_size=6))
    if kind < 4:
        return _encode(docs)
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    return sep.join(_encode(d) for d in docs)


headers_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
            "Application/JSON; charset=latin-1",
            "application/vnd.x+json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    headers_text,
)
encodings = st.one_of(
    st.none(),
    st.sampled_from(["gzip", "GZIP", " gzip ", "identity", "deflate", "br", "gzip, gzip", ""]),
    headers_text,
)
authorizations = st.sampled_from(
    [
        f"Bearer {INGEST}",
        f"Bearer {ADMIN}",
        f"Bearer {READ}",
        f"bearer {INGEST}",
        f"Bearer  {INGEST} ",
        "Bearer",
        "Bearer nope",
        f"Basic {INGEST}",
        None,
    ]
)


def _sometimes(draw: st.DrawFn, usual: Any, hostile: st.SearchStrategy[Any]) -> Any:
    """``usual`` three times in four, else something drawn from ``hostile``."""
    # hypothesis leans to small draws: the usual value is the small one
    return draw(hostile) if draw(st.integers(0, 3)) == 3 else usual


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bool, bytes, dict[str, str]]:
    path = draw(st.sampled_from(["/log", "/logs"]))
    body = draw(bodies(batch=path == "/logs"))
    usual_type = "application/json"
    if path == "/logs" and not body.startswith(b"["):
        usual_type = "application/x-ndjson"
    headers: dict[str, str] = {}
    ctype = _sometimes(draw, usual_type, content_types)
    if ctype is not None:
        headers["content-type"] = ctype
    encoding = _sometimes(draw, None, encodings)
    if path == "/logs" and draw(st.integers(0, 3)) == 3:
        encoding = "gzip"
    if encoding is not None:
        headers["content-encoding"] = encoding
        if "gzip" in encoding.lower() and draw(st.integers(0, 4)) < 4:
            members = draw(st.integers(1, 3))
            cut = len(body) // members
            parts = [
                body[i * cut : (i + 1) * cut if i < members - 1 else None] for i in range(members)
            ]
            body = b"".join(gzip.compress(p) for p in parts)
            if draw(st.integers(0, 4)) == 4:
                body = body[: draw(st.integers(0, len(body)))]  # truncated
    auth = _sometimes(draw, f"Bearer {INGEST}", authorizations)
    if auth is not None:
        headers["authorization"] = auth
    chunked = draw(st.booleans())
    return path, chunked, body, headers


def _check_answer(path: str, status: int, ctype: str, content: bytes) -> None:
    assert status in DOCUMENTED, (status, content)
    assert ctype.split(";")[0] == "application/json", ctype
    doc = msgspec.json.decode(content)
    assert isinstance(doc, dict), doc
    if status == 200 and path == "/log":
        assert doc.keys() == {"stored", "key"}, doc
        assert doc["stored"] is True, doc
        assert parse_event_key(doc["key"]) is not None, doc
    elif status == 200:
        assert doc.keys() == {"accepted"}, doc
        assert isinstance(doc["accepted"], int), doc
    else:
        assert isinstance(doc.get("detail"), str), doc
        extra = doc.keys() - {"detail"}
        assert extra <= {"field"} or (path == "/logs" and status == 400 and extra == {"errors"})
        if "field" in doc:
            assert isinstance(doc["field"], str), doc


def _sent_events(body: bytes, headers: dict[str, str]) -> int:
    """How many events a batch that was accepted carried, counted independently."""
    if headers.get("content-encoding", "").strip().lower() == "gzip":
        body = gzip.decompress(body)  # every member
    if body.lstrip().startswith(b"["):
        return len(msgspec.json.decode(body))
    return sum(1 for line in body.split(b"\n") if line.strip())


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_requests_never_break_the_write_path_or_the_drain(
    make_settings: MakeSettings, redis_url: str, store: redis.Redis, tmp_path: Path
) -> None:
    logs_dir = tmp_path / "logs"
    cfg = make_settings(
        redis_url,
        server={"max_body_bytes": MAX_BODY_BYTES},
        auth={"ingest_tokens": [INGEST], "read_tokens": [READ], "admin_tokens": [ADMIN]},
    )
    before = _tree(tmp_path)
    stored_keys: set[str] = set()
    accepted: list[int] = []
    #: (path, chunked, status) -> answers: the test proves little unless each door stores
    seen: dict[tuple[str, bool, int], int] = {}

    with TestClient(create_app(cfg)) as client:

        @settings(
            max_examples=int(os.environ.get("LP_PROPERTY_EXAMPLES", "250")),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        )
        @given(requests())
        def post(request: tuple[str, bool, bytes, dict[str, str]]) -> None:
            path, chunked, body, headers = request
            content: bytes | Iterator[bytes] = iter([body]) if chunked else body
            resp = client.post(path, content=content, headers=headers)
            seen[path, chunked, resp.status_code] = (
                seen.get((path, chunked, resp.status_code), 0) + 1
            )
            _check_answer(
                path, resp.status_code, resp.headers.get("content-type", ""), resp.content
            )
            if resp.status_code == 200 and path == "/log":
                stored_keys.add(resp.json()["key"])
                accepted.append(1)
            elif resp.status_code == 200:
                # never a 200 for fewer (or more) events than were sent
                assert resp.json()["accepted"] == _sent_events(body, headers)
                accepted.append(resp.json()["accepted"])

        post()
        for path in ("/log", "/logs"):
            for chunked in (False, True):
                assert seen.get((path, chunked, 200)), (path, chunked, seen)

        # every stored value is a valid event, under the key its user id and day give
        now = time.time() + 1
        keys = [k.decode() for k in store.scan_iter(match="logs:*")]
        assert stored_keys <= set(keys)
        assert sum(store.llen(key) for key in keys) == sum(accepted)
        for key in keys:
            assert parse_event_key(key) is not None, key
            for value in store.lrange(key, 0, -1):
                event = validate_event(msgspec.json.decode(value), now=now, max_future_s=3600)
                assert event.line == value
                assert event_key(event.user_id, event.timestamp // 86400) == key

        drained = client.post("/drain", headers={"authorization": f"Bearer {ADMIN}"})
    report = drained.json()
    assert drained.status_code == 200, report
    assert report["ok"], report
    assert (report["unsafe"], report["wrong_type"], report["quarantined"]) == ([], [], 0)

    # nothing new outside logs_dir; inside it, directories and regular files only
    outside = {p for p in _tree(tmp_path) - before if p != "logs" and not p.startswith("logs/")}
    assert outside == set()
    for dirpath, dirnames, filenames in os.walk(logs_dir):
        for name in dirnames + filenames:
            found = Path(dirpath, name)
            assert not found.is_symlink(), found
            assert found.is_dir() or found.is_file(), found
            assert found.resolve().is_relative_to(logs_dir.resolve()), found
    assert any(logs_dir.rglob("*.jsonl"))


@pytest.mark.parametrize("chunked", [False, True])
def test_both_log_doors_refuse_duplicate_key_tricks_alike(
    settings_for: MakeSettings, store: redis.Redis, chunked: bool
) -> None:
    # msgspec keeps the last of duplicate keys, and the stored line is encoded from what
    # was validated: the first user_id can never reach the key or the file
    body = b'{"user_id":"../x","user_id":"a","event":"e","timestamp":1,"timestamp":2}'
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/log", content=iter([body]) if chunked else body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["key"] == "logs:user_a:0"
    assert store.lrange("logs:user_a:0", 0, -1) == [b'{"user_id":"a","event":"e","timestamp":2}']
