"""``logpipe serve`` with tokens and HTTPS, and its refusal to serve the world anonymously."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.processes import Api, Launcher, wait_until
from tests.redis_server import RedisServer, free_port
from tests.tls import self_signed

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "e2e-ingest-token"
EVENT = {"user_id": "u1", "event": "e", "timestamp": 1712345678}


def test_refuses_a_public_address_without_tokens(launcher: Launcher, tmp_path: Path) -> None:
    env = launcher.env("redis://127.0.0.1:1", tmp_path / "logs")
    done = launcher.run(["serve", "--host", "0.0.0.0", "--port", str(free_port())], env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: refusing to serve on 0.0.0.0 with no tokens")
    assert "allow_anonymous" in lines[0]


def test_serves_https_with_tokens_and_says_auth_is_on(
    launcher: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    cert = self_signed(tmp_path / "tls")
    port = free_port()
    env = launcher.env(
        redis_server.url,
        tmp_path / "logs",
        auth_ingest_tokens=TOKEN,
        server_port=port,
        server_ssl_certfile=cert.cert,
        server_ssl_keyfile=cert.key,
    )
    # a public address is fine with tokens configured
    proc = launcher.start(["serve", "--host", "0.0.0.0"], env)
    url = f"https://127.0.0.1:{port}"

    trust = ssl.create_default_context(cafile=cert.cert)

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", verify=trust).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, "serve to answer over HTTPS", procs=[proc])
    with httpx.Client(verify=trust) as http:
        assert http.post(url + "/log", json=EVENT).status_code == 401
        ok = http.post(url + "/log", json=EVENT, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).raise_for_status()
    # the startup log says auth is on and how many tokens, never the token
    assert "auth: on" in proc.stderr()
    assert "ingest 1" in proc.stderr()
    assert TOKEN not in proc.output()
    Api(proc, port).stop()


def test_send_and_stats_with_token_over_https(
    launcher: Launcher, redis_server: RedisServer, tmp_path: Path
) -> None:
    cert = self_signed(tmp_path / "tls")
    port = free_port()
    env = launcher.env(
        redis_server.url,
        tmp_path / "logs",
        auth_ingest_tokens=TOKEN,
        auth_read_tokens="reader",
        server_port=port,
        server_ssl_certfile=cert.cert,
        server_ssl_keyfile=cert.key,
    )
    proc = launcher.start(["serve"], env)
    url = f"https://127.0.0.1:{port}"
    wait_until(
        lambda: "Application startup complete" in proc.stderr(), "serve to start", procs=[proc]
    )
    client_env = {**env, "SSL_CERT_FILE": str(cert.cert)}  # httpx trusts it from there
    sent = launcher.run(["send", "-u", "u1", "-e", "e", "--url", url, "--token", TOKEN], client_env)
    assert sent.returncode == 0, sent.stderr
    refused = launcher.run(["send", "-u", "u1", "-e", "e", "--url", url], client_env)
    assert refused.returncode == 1
    assert "401" in refused.stderr
    stats = launcher.run(
        ["stats", "--url", url, "--json"], {**client_env, "LOGPIPE_TOKEN": "reader"}
    )
    assert stats.returncode == 0, stats.stderr
    Api(proc, port).stop()
