"""The app ``serve`` runs makes the Host check and the cross-site check on ``POST /log``
and ``POST /logs`` in the fast path itself (one pass over the headers), and on every
other request in the layers behind it: both ways must refuse alike, in the same order
(a bad Host first), and store nothing they refuse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.server import checked_hosts, served_app
from tests.conftest import MakeSettings

EVENT = b'{"user_id":"u1","event":"e","timestamp":1712345678}'
EVIL_HOST = "evil.example:8000"
EVIL_PAGE = "https://evil.example"


@pytest.fixture
def served(settings_for: MakeSettings) -> Iterator[TestClient[Any]]:
    settings = settings_for(server={"allowed_hosts": ["logs.internal"]})
    assert checked_hosts(settings) is not None
    with TestClient(app=served_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.mark.parametrize("chunked", [False, True], ids=["fast-path", "litestar"])
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"host": "logs.internal:8000"}, 200),
        ({"host": "localhost:8000"}, 200),
        ({"host": EVIL_HOST}, 421),
        ({"origin": EVIL_PAGE}, 403),
        ({"origin": "http://127.0.0.1:8000"}, 200),  # the API's own page
        ({"host": EVIL_HOST, "origin": EVIL_PAGE}, 421),  # the Host check comes first
        ({"host": EVIL_HOST, "origin": f"http://{EVIL_HOST}"}, 421),
    ],
)
@pytest.mark.parametrize("path", ["/log", "/logs"])
def test_the_fast_path_refuses_as_the_checks_behind_it(
    served: TestClient[Any],
    store: redis.Redis,
    path: str,
    headers: dict[str, str],
    status: int,
    chunked: bool,
) -> None:
    body: Any = iter([EVENT]) if chunked else EVENT  # no Content-Length: Litestar's way
    headers = {
        "content-type": "application/x-ndjson" if path == "/logs" else "application/json",
        **headers,
    }
    resp = served.post(path, content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert (store.keys("logs:*") != []) == (status == 200)
    if status == 421:
        assert "server.allowed_hosts" in resp.json()["detail"]
    if status == 403:
        assert "cors_origins" in resp.json()["detail"]


def test_a_repeated_host_goes_to_the_checks_behind(
    served: TestClient[Any], store: redis.Redis
) -> None:
    """Two Host headers: the Host check judges the first (here a bad one), so the fast
    path must not judge them its own way."""
    resp = served.post(
        "/log",
        content=EVENT,
        headers=[("host", EVIL_HOST), ("host", "127.0.0.1:8000")],
    )
    assert resp.status_code == 421, resp.text
    assert store.keys("logs:*") == []


def test_other_routes_are_host_checked_too(served: TestClient[Any]) -> None:
    assert served.get("/healthz").status_code == 200
    assert served.get("/healthz", headers={"host": EVIL_HOST}).status_code == 421
