"""Redis with a password, an ACL user, and TLS: the API, the drainer and the commands all
work, and no secret shows in logs, errors, ``config show``, ``/stats`` or ``/readyz``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from logpipe_cli.api import create_app
from logpipe_cli.buffer import Buffer, connect
from logpipe_cli.cli.app import app
from logpipe_cli.errors import LogpipeError
from logpipe_cli.settings import load_settings
from tests.redis_server import free_port
from tests.tls import Cert, self_signed

pytestmark = pytest.mark.redis

PASSWORD = "pw-Secr3t-needle"
ACL_USER, ACL_PASSWORD = "ingestor", "acl-Secr3t-needle"
EVENT = {"user_id": "u1", "event": "e", "timestamp": 1712345678}


@dataclass
class SecureRedis:
    """A redis-server started with extra configuration; ``url`` has no credentials."""

    port: int
    proc: subprocess.Popen[bytes]
    tls: Cert | None = None

    def url(self, userinfo: str) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{userinfo}@localhost:{self.port}/0"


def start(tmp: Path, *args: str, tls: Cert | None = None) -> SecureRedis:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert),
                  "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.cert),
                  "--tls-auth-clients", "yes"]  # fmt: skip
    proc = subprocess.Popen(
        [
            binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(tmp / "redis.log"),
            *args,
        ],
        stdin=subprocess.DEVNULL,
    )
    server = SecureRedis(port, proc, tls)
    deadline = time.monotonic() + 10
    while "Ready to accept connections" not in _log(tmp):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server did not start:\n{_log(tmp)[-2000:]}")
        time.sleep(0.05)
    return server


def _log(tmp: Path) -> str:
    try:
        return (tmp / "redis.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def stop(server: SecureRedis) -> None:
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    server = start(tmp_path_factory.mktemp("pw"), "--requirepass", PASSWORD)
    yield server
    stop(server)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    # the default user off: only the ACL user gets in
    acl = ["--user", "default", "off", "--user", ACL_USER, "on", f">{ACL_PASSWORD}",
           "~*", "&*", "+@all"]  # fmt: skip
    server = start(tmp_path_factory.mktemp("acl"), *acl)
    yield server
    stop(server)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    tmp = tmp_path_factory.mktemp("tls")
    server = start(tmp, "--requirepass", PASSWORD, tls=self_signed(tmp / "certs"))
    yield server
    stop(server)


SECRETS = (PASSWORD, ACL_PASSWORD)


def no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def env_for(url: str, logs: Path, tls: Cert | None = None) -> dict[str, str]:
    env = {"LOGPIPE_REDIS_URL": url, "LOGPIPE_DRAINER_LOGS_DIR": str(logs)}
    if tls is not None:
        env |= {
            "LOGPIPE_REDIS_TLS_CA_FILE": str(tls.cert),
            "LOGPIPE_REDIS_TLS_CERT_FILE": str(tls.cert),
            "LOGPIPE_REDIS_TLS_KEY_FILE": str(tls.key),
        }
    return env


def cli(env: dict[str, str], *args: str) -> Any:
    clean = {k: v for k, v in os.environ.items() if k.startswith("LOGPIPE_")}
    result = CliRunner().invoke(app, list(args), env={**dict.fromkeys(clean), **env})
    no_secret(result.stdout + result.stderr)
    return result


def whole_pipeline(env: dict[str, str], logs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """API stores, /stats and /readyz answer, every command that uses Redis works,
    the drain writes the file; no secret anywhere."""
    settings = load_settings({}, env)
    with TestClient(app=create_app(settings)) as client:
        assert client.post("/log", json=EVENT).status_code == 200
        for path in ("/readyz", "/stats", "/metrics"):
            resp = client.get(path)
            assert resp.status_code == 200, resp.text
            no_secret(resp.text)
    assert cli(env, "redis-check").exit_code == 0
    assert cli(env, "inspect", "keys").exit_code == 0
    config = cli(env, "config", "show", "--json")
    assert config.exit_code == 0
    assert "***" in config.stdout
    drained = cli(env, "drain", "--once", "--json")
    assert drained.exit_code == 0, drained.stderr
    assert (logs / "user_u1").is_dir()
    no_secret(caplog.text)
    no_secret(repr(settings))


def test_password(
    password_redis: SecureRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = env_for(password_redis.url(f":{PASSWORD}"), tmp_path / "logs")
    whole_pipeline(env, tmp_path / "logs", caplog)


def test_acl_user(acl_redis: SecureRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = env_for(acl_redis.url(f"{ACL_USER}:{ACL_PASSWORD}"), tmp_path / "logs")
    whole_pipeline(env, tmp_path / "logs", caplog)


def test_tls_with_client_certificate(
    tls_redis: SecureRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = env_for(tls_redis.url(f":{PASSWORD}"), tmp_path / "logs", tls_redis.tls)
    whole_pipeline(env, tmp_path / "logs", caplog)


@pytest.mark.parametrize("which", ["password", "acl"])
def test_wrong_password_errors_name_no_secret(
    which: str, password_redis: SecureRedis, acl_redis: SecureRedis, tmp_path: Path
) -> None:
    wrong = "wrong-Secr3t-needle"
    server, user = (password_redis, "") if which == "password" else (acl_redis, ACL_USER)
    settings = load_settings({}, {"LOGPIPE_REDIS_URL": server.url(f"{user}:{wrong}")})

    async def ping() -> None:
        client = connect(settings.redis)
        try:
            await Buffer(client, settings.redis).ping()
        finally:
            await client.aclose()

    with pytest.raises(LogpipeError) as caught:
        asyncio.run(ping())
    text = caught.value.detail + repr(caught.value) + repr(settings)
    assert wrong not in text
    no_secret(text)
    # the command says why in one line, without the secret
    result = cli({"LOGPIPE_REDIS_URL": server.url(f"{user}:{wrong}")}, "redis-check")
    assert result.exit_code == 1
    assert wrong not in result.stderr
    assert result.stderr.startswith("error: ")


def test_tls_without_the_ca_is_refused_cleanly(tls_redis: SecureRedis, tmp_path: Path) -> None:
    env = env_for(tls_redis.url(f":{PASSWORD}"), tmp_path / "logs")
    result = cli(env, "redis-check")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: redis unavailable")


def test_tls_files_need_a_rediss_url(tmp_path: Path) -> None:
    cert = self_signed(tmp_path / "c")
    env = env_for("redis://127.0.0.1:1", tmp_path / "logs", cert)
    result = cli(env, "redis-check")
    assert result.exit_code == 2
    assert "need a rediss:// redis.url" in result.stderr


def test_plain_redis_client_still_connects(password_redis: SecureRedis) -> None:
    # sanity: the server really wants the password
    with pytest.raises(redis.AuthenticationError):
        # no retry: redis-py retries an AuthenticationError with backoff (about 4 s)
        redis.Redis(port=password_redis.port, retry=Retry(NoBackoff(), 0)).ping()
