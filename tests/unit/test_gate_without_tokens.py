"""The gate with no tokens and no CORS origins (what ``make run`` serves) has one job, the
cross-site check: a ``POST`` whose ``Origin`` is another site's is refused (403, counted
in the request metrics), anything else passes untouched."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from logpipe_cli.auth import Authorizer
from logpipe_cli.gate import gate
from logpipe_cli.metrics import ApiMetrics

pytestmark = pytest.mark.anyio


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("POST", {}, 200),
        ("POST", {"origin": "https://evil.example"}, 403),
        ("POST", {"origin": "http://api.test:8000"}, 200),  # the API's own page
        ("POST", {"origin": "https://api.test:8000"}, 200),
        ("POST", {"origin": "http://API.test:8000"}, 200),
        ("POST", {"origin": "ftp://api.test:8000"}, 403),
        ("POST", {"origin": "null"}, 403),
        ("GET", {"origin": "https://evil.example"}, 200),  # reads: CORS keeps answers
        ("OPTIONS", {"origin": "https://evil.example"}, 200),
    ],
)
async def test_only_a_cross_site_post_is_refused(
    method: str, headers: dict[str, str], status: int
) -> None:
    metrics = ApiMetrics()
    app: Any = gate(ok_app, Authorizer(), {"POST /log": "ingest", "/log": "ingest"}, None, metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        resp = await http.request(method, "http://api.test:8000/log", headers=headers)
    assert resp.status_code == status
    text = metrics.render({}).decode()
    refused = 'logpipe_http_requests_total{method="POST",route="/log",status="403"} 1.0'
    assert (refused in text) == (status == 403)
    if status == 403:
        assert "cors_origins" in resp.json()["detail"]
