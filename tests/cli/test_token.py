"""``logpipe token new``, and ``--token`` / ``LOGPIPE_TOKEN`` on the commands that call the API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from logpipe_cli.auth import Authorizer, Grant, digest_line
from logpipe_cli.settings import Settings
from tests.cli.conftest import Invoke
from tests.cli.ops_support import ApiServer, RunCli, start_api
from tests.conftest import MakeSettings

INGEST, READ = "cli-ingest-token", "cli-read-token"


def test_token_new_prints_a_token_and_its_digest(invoke: Invoke) -> None:
    result = invoke("token", "new", "--scope", "read")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    token = lines[0]
    assert len(token) >= 43
    digest = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert f'read_tokens = ["{digest}"]' in result.stdout
    assert f"read {digest}" in result.stdout
    # the configured digest lets the token in, with that scope
    verdict = Authorizer([("read", digest, "test")]).check(f"Bearer {token}".encode(), "read")
    assert isinstance(verdict, Grant)


def test_token_new_json_and_tokens_differ(invoke: Invoke) -> None:
    docs = [json.loads(invoke("token", "new", "--json").stdout) for _ in range(2)]
    assert docs[0]["scope"] == "ingest"
    assert docs[0]["token"] != docs[1]["token"]
    assert docs[0]["sha256"] == digest_line(docs[0]["token"])


def test_token_new_refuses_an_unknown_scope(invoke: Invoke) -> None:
    result = invoke("token", "new", "--scope", "root")
    assert result.exit_code == 2
    assert "ingest, read, admin" in result.stderr


@pytest.fixture
def settings(make_settings: MakeSettings, redis_url: str) -> Settings:
    return make_settings(
        redis_url, auth={"ingest_tokens": [digest_line(INGEST)], "read_tokens": [READ]}
    )


@pytest.fixture
def secured_api(settings: Settings) -> Iterator[ApiServer]:
    server = start_api(settings)
    yield server
    server.stop()


def test_send_with_token(secured_api: ApiServer, logpipe: RunCli) -> None:
    args = ("send", "-u", "u1", "-e", "e", "--url", secured_api.url)
    refused = logpipe(*args)
    assert refused.exit_code == 1
    assert "refused with 401" in refused.stderr
    assert "--token T or set LOGPIPE_TOKEN" in refused.stderr  # what to do about it
    assert logpipe(*args, "--token", INGEST).exit_code == 0
    assert logpipe(*args, LOGPIPE_TOKEN=INGEST).exit_code == 0
    wrong_scope = logpipe(*args, "--token", READ)
    assert wrong_scope.exit_code == 1
    assert "403" in wrong_scope.stderr


def test_send_count_with_token(secured_api: ApiServer, logpipe: RunCli) -> None:
    args = ("send", "--count", "5", "--batch", "2", "--url", secured_api.url, "--json")
    assert logpipe(*args).exit_code == 1
    ok = logpipe(*args, LOGPIPE_TOKEN=INGEST)
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["accepted"] == 5


def test_stats_with_token(secured_api: ApiServer, logpipe: RunCli) -> None:
    refused = logpipe("stats", "--url", secured_api.url)
    assert refused.exit_code == 1
    assert "answered 401" in refused.stderr
    assert "--token T or set LOGPIPE_TOKEN" in refused.stderr
    ok = logpipe("stats", "--url", secured_api.url, "--json", "--token", READ)
    assert ok.exit_code == 0, ok.stderr
    assert READ not in ok.stdout + ok.stderr


def test_config_show_masks_tokens(logpipe: RunCli) -> None:
    env = {"LOGPIPE_AUTH_ADMIN_TOKENS": "plain-secret-1, " + digest_line("x")}
    shown = logpipe("config", "show", "--json", **env)
    assert shown.exit_code == 0, shown.stderr
    assert "plain-secret-1" not in shown.stdout
    doc = json.loads(shown.stdout)
    assert doc["settings"]["auth"]["admin_tokens"] == ["***", digest_line("x")]
    table = logpipe("config", "show", **env)
    assert "plain-secret-1" not in table.stdout
    assert "***" in table.stdout


def test_redis_check_says_whether_auth_is_on(logpipe: RunCli) -> None:
    off = logpipe("redis-check", "--json")
    assert off.exit_code == 0, off.stderr
    assert json.loads(off.stdout)["api_auth"] == {
        "enabled": False,
        "tokens": {"ingest": 0, "read": 0, "admin": 0},
    }
    on = logpipe("redis-check", "--json", LOGPIPE_AUTH_INGEST_TOKENS="secret-a,secret-b")
    assert json.loads(on.stdout)["api_auth"]["tokens"]["ingest"] == 2
    table = logpipe("redis-check", LOGPIPE_AUTH_ADMIN_TOKENS="secret-c")
    assert "API auth" in table.stdout
    assert "admin 1" in table.stdout
    assert "secret" not in table.stdout + on.stdout


def test_token_new_help_gives_the_default_scope_once(invoke: Invoke) -> None:
    shown = " ".join(invoke("token", "new", "--help").stdout.split())
    assert shown.count("[default: ingest]") == 1
