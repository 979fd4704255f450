"""Header values the HTTP parser lets through that the ``POST /log`` fast path reads
itself: it must answer them as the checks and handlers behind it do, never with an
unhandled error (a 500 and a traceback in the log per request, before any token check)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from tests.api.test_auth import EVENT, INGEST
from tests.conftest import MakeSettings

#: llhttp (uvicorn's httptools) accepts any run of leading zeros in Content-Length (they
#: never overflow its counter); Python refuses int() of more than 4300 digits
ZERO_PADDED = b"0" * 5000


@pytest.mark.parametrize("tokens", [False, True], ids=["no-tokens", "tokens"])
@pytest.mark.parametrize("path", ["/log", "/logs"])
def test_a_content_length_with_thousands_of_leading_zeros_is_a_400_not_a_500(
    settings_for: MakeSettings,
    store: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    path: str,
    tokens: bool,
) -> None:
    settings = settings_for(auth={"ingest_tokens": [INGEST]} if tokens else {})
    body = EVENT if path == "/log" else EVENT + b"\n"
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json" if path == "/log" else b"application/x-ndjson"),
        (b"content-length", ZERO_PADDED + str(len(body)).encode()),
    ]
    if tokens:
        headers.append((b"authorization", f"Bearer {INGEST}".encode()))
    with TestClient(app=create_app(settings), raise_server_exceptions=False) as c:
        resp: Any = c.post(path, content=body, headers=headers)
        assert resp.request.headers["content-length"].startswith("0" * 100)
        assert resp.status_code == 400, resp.text
        assert "content-length" in resp.json()["detail"].lower()
        # no traceback logged for it: the handler behind answered it
        assert not [r for r in caplog.records if r.exc_info], caplog.text
        assert store.keys("logs:*") == []
        # the usual spelling is still served
        headers[1] = (b"content-length", str(len(body)).encode())
        assert c.post(path, content=body, headers=headers).status_code == 200
