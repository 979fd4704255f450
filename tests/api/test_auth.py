"""Bearer tokens with scopes on every route, on both ``POST /log`` paths, and CORS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Request
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.auth import digest_line
from logpipe_cli.ingest import Ingest
from logpipe_cli.schemas import Problem
from tests.conftest import MakeSettings

NOW = int(time.time())
EVENT = b'{"user_id":"u1","event":"e","timestamp":%d}' % NOW
INGEST, READ, ADMIN = "ingest-secret-1", "read-secret-2", "admin-secret-3"
ORIGIN = "https://app.example"


def chunks(data: bytes) -> Iterator[bytes]:
    yield data


#: (name, method, path, body sender, the scope that may use it)
ROUTES: list[tuple[str, str, str, str | None]] = [
    ("log fast path", "POST", "/log", "ingest"),
    ("log handler", "POST", "/log-chunked", "ingest"),
    ("logs", "POST", "/logs", "ingest"),
    ("logs query", "GET", "/logs?user_id=123", "read"),
    ("stats", "GET", "/stats", "read"),
    ("metrics", "GET", "/metrics", "admin"),
    ("drain", "POST", "/drain", "admin"),
    ("openapi", "GET", "/schema/openapi.json", "read"),
    ("healthz", "GET", "/healthz", None),
    ("readyz", "GET", "/readyz", None),
]
TOKENS = {"ingest": INGEST, "read": READ, "admin": ADMIN}


def call(client: TestClient[Any], method: str, path: str, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    if path == "/log":
        headers["content-type"] = "application/json"
        return client.post("/log", content=EVENT, headers=headers)
    if path == "/log-chunked":  # no Content-Length: Litestar's handler, not the fast path
        headers["content-type"] = "application/json"
        resp = client.post("/log", content=chunks(EVENT), headers=headers)
        assert "content-length" not in resp.request.headers
        return resp
    if path == "/logs":
        headers["content-type"] = "application/x-ndjson"
        return client.post("/logs", content=EVENT + b"\n", headers=headers)
    return client.request(method, path, headers=headers)


def token_app(settings_for: MakeSettings, cors: bool) -> TestClient[Any]:
    # the ingest token is configured by its digest only: the server never holds it
    settings = settings_for(
        auth={
            "ingest_tokens": [digest_line(INGEST)],
            "read_tokens": [READ],
            "admin_tokens": [ADMIN],
        },
        server={"cors_origins": [ORIGIN] if cors else []},
    )
    return TestClient(app=create_app(settings))


@pytest.fixture(params=["cors", "no cors"])
def client(request: pytest.FixtureRequest, settings_for: MakeSettings) -> Iterator[TestClient[Any]]:
    """With CORS origins, the fast path sits behind the gate; without, it checks the
    token itself (one header scan): every token test runs on both front doors."""
    with token_app(settings_for, request.param == "cors") as c:
        yield c


@pytest.fixture
def cors_client(settings_for: MakeSettings) -> Iterator[TestClient[Any]]:
    with token_app(settings_for, True) as c:
        yield c


@pytest.fixture
def principals(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The ``principal`` each ``Ingest.store_one`` / ``store_batch`` call was given."""
    seen: list[str | None] = []
    one, batch = Ingest.store_one, Ingest.store_batch

    async def store_one(self: Ingest, *a: Any, principal: str | None = None, **kw: Any) -> Any:
        seen.append(principal)
        return await one(self, *a, principal=principal, **kw)

    async def store_batch(self: Ingest, *a: Any, principal: str | None = None, **kw: Any) -> Any:
        seen.append(principal)
        return await batch(self, *a, principal=principal, **kw)

    monkeypatch.setattr(Ingest, "store_one", store_one)
    monkeypatch.setattr(Ingest, "store_batch", store_batch)
    return seen


@pytest.mark.parametrize(("name", "method", "path", "needs"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_with_every_kind_of_token(
    client: TestClient[Any], name: str, method: str, path: str, needs: str | None
) -> None:
    if needs is None:  # the probes stay open
        for token in (None, "wrong", INGEST):
            assert call(client, method, path, token).status_code == 200
        return
    for token, why in ((None, "required"), ("wrong", "not valid")):
        resp = call(client, method, path, token)
        assert resp.status_code == 401, (token, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert why in resp.json()["detail"]
    for scope, token in TOKENS.items():
        resp = call(client, method, path, token)
        if scope == needs or scope == "admin":
            assert resp.status_code == 200, (scope, resp.text)
        else:
            assert resp.status_code == 403, (scope, resp.text)
            assert needs in resp.json()["detail"]
            assert "insufficient_scope" in resp.headers["www-authenticate"]


def test_a_refused_request_stores_nothing_and_reads_no_body(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = Request.body

    async def counting(self: Request[Any, Any, Any]) -> bytes:
        reads.append(1)
        return await original(self)

    monkeypatch.setattr(Request, "body", counting)
    assert call(client, "POST", "/log-chunked", READ).status_code == 403
    assert call(client, "POST", "/log", None).status_code == 401
    assert reads == []
    stats = client.get("/stats", headers={"authorization": f"Bearer {READ}"}).json()
    assert stats["buffered"]["events"] == 0


def test_the_ingest_path_is_told_which_token_sent(
    client: TestClient[Any], principals: list[str | None]
) -> None:
    for path in ("/log", "/log-chunked", "/logs"):
        assert call(client, "POST", path, INGEST).status_code == 200
    assert call(client, "POST", "/log", ADMIN).status_code == 200
    ingest_id = digest_line(INGEST).removeprefix("sha256:")[:12]
    admin_id = digest_line(ADMIN).removeprefix("sha256:")[:12]
    assert principals == [ingest_id, ingest_id, ingest_id, admin_id]


def test_scheme_is_case_insensitive_and_other_schemes_are_401(client: TestClient[Any]) -> None:
    ok = client.get("/stats", headers={"authorization": f"bearer {READ}"})
    assert ok.status_code == 200
    basic = client.get("/stats", headers={"authorization": "Basic dTpw"})
    assert basic.status_code == 401


@pytest.mark.parametrize("path", ["/log", "/logs"])
def test_a_repeated_authorization_is_refused_and_stores_nothing(
    client: TestClient[Any], path: str
) -> None:
    # attack: a proxy and the API that read different copies of a repeated header
    headers = [
        ("authorization", f"Bearer {INGEST}"),
        ("authorization", "Bearer wrong"),
        ("content-type", "application/json" if path == "/log" else "application/x-ndjson"),
    ]
    resp = client.post(path, content=EVENT + b"\n", headers=headers)
    assert resp.status_code == 401, resp.text
    stats = client.get("/stats", headers={"authorization": f"Bearer {READ}"}).json()
    assert stats["buffered"]["events"] == 0


def test_unknown_routes_need_a_token_before_they_are_404(client: TestClient[Any]) -> None:
    assert client.get("/nope").status_code == 401
    assert client.get("/nope", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 404


def test_without_tokens_everything_is_open(settings_for: MakeSettings) -> None:
    with TestClient(app=create_app(settings_for())) as c:
        assert c.post(
            "/log", content=EVENT, headers={"content-type": "application/json"}
        ).is_success
        assert c.get("/stats").status_code == 200


def test_metrics_public(settings_for: MakeSettings) -> None:
    settings = settings_for(auth={"admin_tokens": [ADMIN], "metrics_public": True})
    with TestClient(app=create_app(settings)) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/stats").status_code == 401


def test_refusals_are_counted_in_the_metrics(client: TestClient[Any]) -> None:
    call(client, "POST", "/log", None)
    call(client, "POST", "/log", READ)
    text = client.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
    assert 'route="/log",status="401"' in text.replace(" ", "").replace('method="POST",', "")
    assert 'status="403"' in text


# ---- CORS ----------------------------------------------------------------------------


def preflight(client: TestClient[Any], origin: str, path: str = "/log") -> httpx.Response:
    return client.options(
        path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )


def test_preflight_from_an_allowed_origin(cors_client: TestClient[Any]) -> None:
    resp = preflight(cors_client, ORIGIN)
    assert resp.status_code == 204
    h = resp.headers
    assert h["access-control-allow-origin"] == ORIGIN
    assert {"GET", "POST"} <= {m.strip() for m in h["access-control-allow-methods"].split(",")}
    allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(h["access-control-max-age"]) > 0
    assert "origin" in h["vary"].lower()


def test_preflight_from_another_origin_gets_no_cors_headers(cors_client: TestClient[Any]) -> None:
    resp = preflight(cors_client, "https://evil.example")
    assert not any(k.startswith("access-control-") for k in resp.headers)


@pytest.mark.parametrize("path", ["/log", "/log-chunked"])
def test_post_from_an_allowed_origin(cors_client: TestClient[Any], path: str) -> None:
    resp = call_with_origin(cors_client, path, ORIGIN, INGEST)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    # a 401 must be readable by the page too (else the browser hides why)
    resp = call_with_origin(cors_client, path, ORIGIN, None)
    assert resp.status_code == 401
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in resp.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("path", ["/log", "/log-chunked"])
def test_post_from_another_origin_gets_no_cors_headers(
    cors_client: TestClient[Any], path: str
) -> None:
    resp = call_with_origin(cors_client, path, "https://evil.example", INGEST)
    assert resp.status_code == 200  # the server still answers; the browser hides it
    assert "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("origin", ["https://evil.example", None])
def test_answers_without_cors_headers_still_vary_on_origin(
    cors_client: TestClient[Any], origin: str | None
) -> None:
    # attack: only the allowed origin's answers said Vary: Origin, so a shared cache could
    # keep an answer without CORS headers and serve it to the allowed page, breaking it
    headers = {} if origin is None else {"origin": origin}
    for resp in (
        cors_client.get("/healthz", headers=headers),
        cors_client.get("/stats", headers={**headers, "authorization": f"Bearer {READ}"}),
        cors_client.post("/log", content=EVENT, headers={**headers, "content-type": "text/plain"}),
    ):
        assert "access-control-allow-origin" not in resp.headers
        assert "origin" in resp.headers.get("vary", "").lower(), resp.headers


def call_with_origin(
    client: TestClient[Any], path: str, origin: str, token: str | None
) -> httpx.Response:
    headers = {"origin": origin, "content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body: Any = chunks(EVENT) if path == "/log-chunked" else EVENT
    return client.post("/log", content=body, headers=headers)


def test_no_cors_configured_no_headers(settings_for: MakeSettings) -> None:
    with TestClient(app=create_app(settings_for())) as c:
        resp = c.post(
            "/log", content=EVENT, headers={"content-type": "application/json", "origin": ORIGIN}
        )
        # no tokens: a POST from a page that is not allowed is refused (test_cross_site.py)
        assert resp.status_code == 403
        assert "access-control-allow-origin" not in resp.headers


def test_openapi_declares_bearer_and_the_401_403_answers(client: TestClient[Any]) -> None:
    doc = call(client, "GET", "/schema/openapi.json", READ).json()
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method in [
        ("/log", "post"),
        ("/logs", "post"),
        ("/stats", "get"),
        ("/metrics", "get"),
        ("/drain", "post"),
    ]:
        op = doc["paths"][path][method]
        assert op["security"] == [{"bearer": []}], path
        for status in ("401", "403"):
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Problem", (path, status)
    for path in ("/healthz", "/readyz"):
        assert "security" not in doc["paths"][path]["get"]
        assert "401" not in doc["paths"][path]["get"]["responses"]


def test_401_and_403_bodies_match_the_problem_schema(client: TestClient[Any]) -> None:
    for token in (None, READ):
        resp = call(client, "POST", "/log", token)
        msgspec.json.decode(resp.content, type=Problem, strict=True)
