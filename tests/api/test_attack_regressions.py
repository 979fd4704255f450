"""Defects found by attacking the API (issue 9's attacker's pass), each pinned by a test."""

from __future__ import annotations

import gzip
import math
from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.ingest import Ingest
from logpipe_cli.schemas import StatsDoc
from tests.conftest import MakeSettings
from tests.processes import wait_until

NDJSON_GZIP = {"content-type": "application/x-ndjson", "content-encoding": "gzip"}


def line(user: str) -> bytes:
    return b'{"user_id":"' + user.encode() + b'","event":"e","timestamp":1}\n'


def test_every_member_of_a_multi_member_gzip_body_is_stored(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    # `cat a.gz b.gz` is a valid gzip file (RFC 1952, gunzip reads both): the second
    # event used to be dropped while the answer said {"accepted": 1}
    body = gzip.compress(line("m1")) + gzip.compress(line("m2")) + gzip.compress(line("m3"))
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers=NDJSON_GZIP)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"accepted": 3}
    assert sorted(store.scan_iter(match="logs:*")) == [
        b"logs:user_m1:0",
        b"logs:user_m2:0",
        b"logs:user_m3:0",
    ]


def test_the_size_limit_covers_all_members_together(settings_for: MakeSettings) -> None:
    limit = 4096
    member = gzip.compress(b"\n" * (limit // 2 + 1))
    with TestClient(create_app(settings_for(server={"max_body_bytes": limit}))) as client:
        resp = client.post("/logs", content=member + member, headers=NDJSON_GZIP)
    assert resp.status_code == 413, resp.text
    assert resp.json() == {"detail": f"decompressed body larger than {limit} bytes"}


@pytest.mark.parametrize(
    "tail",
    [b"garbage", b"\x1f\x8b", gzip.compress(line("t2"))[:-3], b"\0\0x"],
    ids=["text", "magic", "cut", "after-padding"],
)
def test_bytes_after_the_last_member_that_are_no_member_refuse_the_batch(
    settings_for: MakeSettings, store: redis.Redis, tail: bytes
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=gzip.compress(line("t1")) + tail, headers=NDJSON_GZIP)
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"].startswith("body is not valid gzip"), resp.text
    assert list(store.scan_iter(match="logs:*")) == []


def test_zero_padding_after_the_last_member_is_allowed(
    settings_for: MakeSettings, store: redis.Redis
) -> None:
    # as gunzip and Python's gzip module allow it (tape blocks)
    with TestClient(create_app(settings_for())) as client:
        resp = client.post(
            "/logs", content=gzip.compress(line("z")) + b"\0" * 512, headers=NDJSON_GZIP
        )
    assert resp.json() == {"accepted": 1}
    assert store.llen("logs:user_z:0") == 1


@pytest.mark.parametrize("body", [b"", b"\0" * 20], ids=["empty", "zeros"])
def test_a_gzip_body_with_no_member_is_refused(settings_for: MakeSettings, body: bytes) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/logs", content=body, headers=NDJSON_GZIP)
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"].startswith("body is not valid gzip"), resp.text


@pytest.mark.parametrize(
    ("name", "mapping"),
    [
        ("logpipe:stats", {"buffered": "\x1b[2J", "accepted": "1e400", "drained_keys": "nan"}),
        ("logpipe:last_drain", {"at": "abc", "events": "x", "seconds": "inf", "ok": "\x1b"}),
        ("logpipe:last_drain", {"at": "nan", "keys": "1.5", "error": "[bold]\x1b[31mboom"}),
        ("logpipe:last_drain", {"at": "1" + "0" * 400, "events": "9" * 30}),
    ],
)
def test_counters_written_by_hand_never_break_stats_or_metrics(
    settings_for: MakeSettings, store: redis.Redis, name: str, mapping: Any
) -> None:
    # Anyone with Redis access can write these hashes; what is not a number logpipe
    # could have written is left out, never a 500 (each of these was one)
    store.hset(name, mapping=mapping)
    with TestClient(create_app(settings_for())) as client:
        stats = client.get("/stats")
        metrics = client.get("/metrics")
    assert stats.status_code == 200, stats.text
    assert metrics.status_code == 200, metrics.text
    doc = msgspec.json.decode(stats.content, type=StatsDoc, strict=True)
    assert doc.buffered.events == 0
    if doc.last_drain is not None:
        assert math.isfinite(doc.last_drain.at)
        assert math.isfinite(doc.last_drain.seconds)


@pytest.mark.parametrize("chunked", [False, True], ids=["fast-path", "litestar"])
def test_an_unexpected_500_is_logged_with_its_traceback(
    settings_for: MakeSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    chunked: bool,
) -> None:
    # issue 9, #12: a bug answered 500 and left no trace in the server's log. (Read from
    # stderr, not caplog: Litestar's logging config replaces the root logger's handlers,
    # and writes from a queue listener thread, hence the wait.)
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Ingest, "store_one", broken)
    body = line("u")
    with TestClient(create_app(settings_for())) as client:
        resp = client.post("/log", content=iter([body]) if chunked else body)
    assert resp.status_code == 500
    assert resp.json() == {"status_code": 500, "detail": "Internal Server Error"}
    err = ""

    def logged() -> bool:
        nonlocal err
        err += capsys.readouterr().err
        return "RuntimeError: a bug" in err

    wait_until(logged, "the traceback in the log")
    assert err.count("RuntimeError: a bug") == 1, err  # logged once, with its traceback
    assert "Traceback" in err
    assert "POST '/log'" in err  # the path as repr: a newline in it forges no line
