"""Attacks on the fast path's own token check (no CORS origins) and the Authorizer's
cache of tokens found valid: the fast path must answer as the gate behind it does."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.auth import _KNOWN_MAX, Authorizer, Grant, Refusal, digest_line
from tests.api.test_auth import ADMIN, EVENT, INGEST, READ, chunks
from tests.conftest import MakeSettings

#: Authorization values, each with what it must get on POST /log: 200, 401 or 403
SPELLINGS: list[tuple[str, int]] = [
    (f"Bearer {INGEST}", 200),
    (f"bearer {INGEST}", 200),
    (f"BEARER {INGEST}", 200),
    (f"Bearer  {INGEST}", 200),  # two spaces: the token is stripped before it is hashed
    (f"Bearer {INGEST} ", 200),
    (f"Bearer {INGEST}x", 401),
    (f"Bearer {INGEST[:-1]}", 401),
    (f"Bearer {INGEST.upper()}", 401),
    (f"Basic {INGEST}", 401),
    (f"Bearer\t{INGEST}", 401),
    (f"Bearer {INGEST} {INGEST}", 401),
    (INGEST, 401),
    ("Bearer", 401),
    ("Bearer ", 401),
    ("", 401),
    (f"Bearer {READ}", 403),
    (f"bearer {READ}", 403),
    (f"Bearer {ADMIN}", 200),
    (f"Bearer {digest_line(INGEST)}", 401),  # the configured digest is not a token
]


def app(settings_for: MakeSettings) -> TestClient[Any]:
    settings = settings_for(
        auth={
            "ingest_tokens": [digest_line(INGEST)],
            "read_tokens": [READ],
            "admin_tokens": [ADMIN],
        }
    )
    return TestClient(app=create_app(settings))


def refusals(client: TestClient[Any]) -> dict[tuple[str, str], float]:
    text = client.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
    out: dict[tuple[str, str], float] = {}
    pattern = (
        r'logpipe_http_requests_total\{method="POST",route="(/logs?)",status="(4\d\d)"\} (\S+)'
    )
    for route, status, value in re.findall(pattern, text):
        out[route, status] = float(value)
    return out


@pytest.mark.parametrize(("authorization", "want"), SPELLINGS)
def test_every_spelling_gets_the_same_answer_on_both_ways_in(
    settings_for: MakeSettings, authorization: str, want: int
) -> None:
    # the fast path (Content-Length), the handler behind the gate (chunked), /logs; each
    # spelling twice, so the second answer may come from the remembered tokens
    headers = {"authorization": authorization, "content-type": "application/json"}
    nd = {**headers, "content-type": "application/x-ndjson"}
    with app(settings_for) as c:
        answers = []
        for _ in range(2):
            fast = c.post("/log", content=EVENT, headers=headers)
            slow = c.post("/log", content=chunks(EVENT), headers=headers)
            batch = c.post("/logs", content=EVENT + b"\n", headers=nd)
            assert "content-length" not in slow.request.headers
            answers += [fast, slow, batch]
        for resp in answers:
            assert resp.status_code == want, (authorization, resp.text)
        refused = [r for r in answers if r.status_code != 200]
        assert len({(r.text, r.headers.get("www-authenticate")) for r in refused}) <= 1
        stats = c.get("/stats", headers={"authorization": f"Bearer {READ}"}).json()
        assert stats["buffered"]["events"] == (6 if want == 200 else 0)
        # every refusal counted once, under its route, as the gate counts its own
        counts = refusals(c)
        if want != 200:
            assert counts == {("/log", str(want)): 4.0, ("/logs", str(want)): 2.0}
        else:
            assert counts == {}


def test_a_read_token_remembered_from_a_read_route_still_may_not_post(
    settings_for: MakeSettings,
) -> None:
    with app(settings_for) as c:
        auth = {"authorization": f"Bearer {READ}"}
        assert c.get("/stats", headers=auth).status_code == 200
        ct = {**auth, "content-type": "application/json"}
        assert c.post("/log", content=EVENT, headers=ct).status_code == 403
        assert c.get("/stats", headers=auth).json()["buffered"]["events"] == 0


def test_a_token_removed_from_the_config_is_refused_by_the_next_api(
    settings_for: MakeSettings,
) -> None:
    headers = {"authorization": f"Bearer {INGEST}", "content-type": "application/json"}
    with app(settings_for) as c:
        assert c.post("/log", content=EVENT, headers=headers).status_code == 200
    without = settings_for(auth={"read_tokens": [READ], "admin_tokens": [ADMIN]})
    with TestClient(app=create_app(without)) as c:
        assert c.post("/log", content=EVENT, headers=headers).status_code == 401


def test_the_remembered_tokens_stay_bounded_and_hold_no_guess() -> None:
    auth = Authorizer([("ingest", INGEST, "t")])
    for i in range(3 * _KNOWN_MAX):
        # every spelling of the one valid token (leading spaces are stripped)
        assert type(auth.check(b"Bearer " + b" " * i + INGEST.encode(), "ingest")) is Grant
        assert type(auth.check(b"Bearer guess-%d" % i, "ingest")) is Refusal
    assert len(auth._known) == _KNOWN_MAX
    assert all(k.strip() == INGEST.encode() for k in auth._known)
    # a full cache still answers right, for spellings it holds and ones it does not
    assert (
        type(auth.check(b"Bearer " + b" " * (5 * _KNOWN_MAX) + INGEST.encode(), "ingest")) is Grant
    )
    assert auth.check(b"Bearer " + INGEST.encode(), "admin") != Grant(None)
    assert type(auth.check(b"Bearer " + INGEST.encode(), "admin")) is Refusal
