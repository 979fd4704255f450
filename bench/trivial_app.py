"""The HTTP ceiling: a bare ASGI callable that reads the body and answers 200 with JSON.

Served by uvicorn exactly as ``logpipe serve`` serves the API (1 worker, uvloop,
httptools, no access log), so the ratio measures what logpipe adds per request.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"stored":true,"key":"logs:user_000:20302"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
