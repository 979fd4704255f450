"""An error line whose cause is plain gets its fix: Redis's password, the API's token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from logpipe_cli.cli.hints import API_TOKEN, REDIS_AUTH, with_hint
from tests.cli.conftest import Invoke, assert_clean_error
from tests.redis_server import RedisServer

# the messages a first run meets, as logpipe prints them
HELLO = (
    "redis unavailable while pinging: HELLO must be called with the client already "
    "authenticated, otherwise the HELLO AUTH <user> <pass> option can be used"
)


@pytest.mark.parametrize(
    "detail",
    [
        HELLO,
        "redis unavailable while listing keys: NOAUTH Authentication required.",
        "redis unavailable while pinging: WRONGPASS invalid username-password pair",
    ],
)
def test_redis_wanting_a_password_gets_the_url_form(detail: str) -> None:
    assert with_hint(detail) == f"{detail} ({REDIS_AUTH})"


@pytest.mark.parametrize(
    "detail",
    [
        "refused with 401: an Authorization: Bearer <token> header is required",
        "refused with 401: the bearer token is not valid",
        "GET http://127.0.0.1:3000/stats answered 401: an Authorization: Bearer <token> "
        "header is required",
        "of 5 events, 5 refused (first: 401: an Authorization: Bearer <token> header is required)",
    ],
)
def test_api_asking_for_a_token_gets_the_option(detail: str) -> None:
    assert with_hint(detail) == f"{detail} ({API_TOKEN})"


@pytest.mark.parametrize(
    "detail",
    [
        # `logpipe run` already says how (supervisor's own hint): not twice
        "Redis at redis://127.0.0.1:6391 refused us: NOAUTH Authentication required. "
        "(give the password in redis.url: redis://:PASSWORD@host:port)",
        # a token of the wrong scope: the message says which scope, a token is given
        "refused with 403: this token may not use this route (it needs a token of scope read)",
        "cannot reach http://127.0.0.1:3000/log: [Errno 111] Connection refused",
        "event_id: must be 1-128 characters of letters, digits and . _ : -",
        # 401 as a count, not an answer
        "of 401 events, 3 refused (first: 400: user_id is required)",
    ],
)
def test_other_errors_are_left_as_they_are(detail: str) -> None:
    assert with_hint(detail) == detail


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "pw", extra_args=("--requirepass", "s3cret"))
    server.start()
    yield server
    server.stop()


def test_redis_check_names_the_password_fix(locked_redis: RedisServer, invoke: Invoke) -> None:
    result = invoke("redis-check", "--url", locked_redis.url)
    line = assert_clean_error(result, 1, "redis.url: redis://:PASSWORD@host:port")
    assert "s3cret" not in line
    with_password = f"redis://:s3cret@127.0.0.1:{locked_redis.port}"
    assert invoke("redis-check", "--url", with_password).exit_code == 0
