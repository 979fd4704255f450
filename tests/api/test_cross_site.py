"""Without tokens, a page on another site cannot post events or start a drain.

A browser sends some cross-site POSTs without a preflight: a form, or ``fetch`` in
``no-cors`` mode with an untyped body (no Content-Type, which logpipe takes as JSON). With
no token to check, such a request used to be stored like any other: every web page a
developer opened could write into (or drain) the logpipe on their machine. Browsers name
the page in ``Origin``; the gate refuses a POST whose origin is neither in
``server.cors_origins`` nor the API's own address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.settings import Settings
from tests.conftest import MakeSettings

EVENT = b'{"user_id":"u1","event":"e","timestamp":1712345678}'
EVIL = "https://evil.example"
APP = "https://app.example"


@pytest.fixture
def anonymous(settings_for: MakeSettings) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(settings_for())) as c:
        yield c


def post(client: TestClient[Any], path: str, **headers: str) -> Any:
    return client.post(path, content=EVENT, headers=headers)


@pytest.mark.parametrize("chunked", [False, True], ids=["fast-path", "litestar"])
def test_a_post_from_another_site_is_refused_and_stores_nothing(
    anonymous: TestClient[Any], store: redis.Redis, chunked: bool
) -> None:
    body: Any = iter([EVENT]) if chunked else EVENT
    resp = anonymous.post("/log", content=body, headers={"origin": EVIL})
    assert resp.status_code == 403, resp.text
    assert "evil.example" in resp.json()["detail"]
    assert "cors_origins" in resp.json()["detail"]
    batch = anonymous.post("/logs", content=EVENT + b"\n", headers={"origin": "null"})
    assert batch.status_code == 403, batch.text
    assert store.keys("logs:*") == []
    drain = anonymous.post("/drain", headers={"origin": EVIL})
    assert drain.status_code == 403, drain.text
    assert store.exists("logpipe:last_drain") == 0


def test_clients_without_origin_and_the_apis_own_pages_still_post(
    anonymous: TestClient[Any], store: redis.Redis
) -> None:
    assert post(anonymous, "/log").status_code == 200  # curl, the client library, ...
    own = post(anonymous, "/log", origin="http://testserver.local")  # its OpenAPI page
    assert own.status_code == 200, own.text
    # reads are not refused: the browser keeps their answers from the page anyway
    assert anonymous.get("/healthz", headers={"origin": EVIL}).status_code == 200
    assert store.llen("logs:user_u1:19818") == 2


def test_an_allowed_origin_posts_without_tokens(settings_for: MakeSettings) -> None:
    settings: Settings = settings_for(server={"cors_origins": (APP,)})
    with TestClient(app=create_app(settings)) as c:
        ok = post(c, "/log", origin=APP)
        assert ok.status_code == 200, ok.text
        assert ok.headers["access-control-allow-origin"] == APP
        assert post(c, "/log", origin=EVIL).status_code == 403
