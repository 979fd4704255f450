"""Without tokens, ``serve`` answers only Host names it recognizes: DNS rebinding.

A page on ``http://evil.example:8000`` whose name is then made to resolve to 127.0.0.1
is, to the browser, the same origin as an API listening there: it could read every
answer (``GET /logs`` of any user) and post without a preflight. Its requests still say
``Host: evil.example:8000``, and an IP address cannot be rebound.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from logpipe_cli.gate import host_allowed, host_guard
from logpipe_cli.server import checked_hosts
from logpipe_cli.settings import load_settings


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (b"127.0.0.1:8000", True),
        (b"127.0.0.1", True),
        (b"[::1]:8000", True),
        (b"10.1.2.3:80", True),
        (b"localhost:8000", True),
        (b"LocalHost", True),
        (b"app.localhost:8000", True),
        (b"logpipe", True),  # one label: a compose service, a hosts-file alias
        (b"api:3000", True),
        (b"logs.internal:8000", True),  # in allowed_hosts below
        (b"evil.example:8000", False),
        (b"127.0.0.1.evil.example", False),
        (b"localhost.evil.example", False),
        (b"evil.example.:8000", False),
        (b"com", True),  # a top-level name alone: not one an attacker can point
        (b"[evil.example]:8000", False),
        (b"", False),
    ],
)
def test_host_allowed(host: bytes, allowed: bool) -> None:
    assert host_allowed(host, frozenset({b"logs.internal"})) is allowed


def test_a_star_allows_any_host() -> None:
    assert host_allowed(b"evil.example", frozenset({b"*"}))


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.anyio
async def test_the_guard_answers_421_naming_the_setting() -> None:
    app: Any = host_guard(ok_app, ["logs.internal"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        bad = await http.get("http://evil.example:8000/logs?user_id=u1")
        assert bad.status_code == 421
        assert "server.allowed_hosts" in bad.json()["detail"]
        assert "evil.example" in bad.json()["detail"]
        for url in ("http://127.0.0.1:8000/healthz", "http://logs.internal/healthz"):
            assert (await http.get(url)).status_code == 200


def test_serve_puts_the_guard_in_front_only_without_tokens() -> None:
    def guarded(**sections: dict[str, Any]) -> bool:
        return checked_hosts(load_settings(sections, {})) is not None

    assert guarded()  # loopback, no tokens: what `make run` starts
    assert not guarded(auth={"ingest_tokens": ["tok-1"]})
    # a network address served anonymously is reached by names serve cannot guess
    public = {"host": "0.0.0.0"}
    assert not guarded(server=public, auth={"allow_anonymous": True})
    assert guarded(
        server={**public, "allowed_hosts": ["logs.internal"]}, auth={"allow_anonymous": True}
    )


@pytest.mark.anyio
async def test_each_host_is_judged_alike_every_time_past_the_remembered_ones() -> None:
    """The guard remembers its verdicts (an IP address costs ~2 us to parse): asked again,
    and after more distinct names than it keeps, each Host still gets its own verdict."""
    app: Any = host_guard(ok_app, ["logs.internal"])
    hosts = [f"10.0.{i // 256}.{i % 256}:8000" for i in range(600)]
    hosts += [f"evil{i}.example" for i in range(300)] + ["a" * 400 + ".example", "x" * 400]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        for _ in range(2):
            for host in hosts:
                answer = await http.get("http://127.0.0.1/healthz", headers={"host": host})
                want = 200 if host_allowed(host.encode(), frozenset({b"logs.internal"})) else 421
                assert answer.status_code == want, host
