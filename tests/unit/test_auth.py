"""Tokens: parsing (lists, env, file, sha256 form), scopes, verdicts, and the settings."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from logpipe_cli import auth
from logpipe_cli.auth import (
    Authorizer,
    Grant,
    Refusal,
    configured_tokens,
    digest_line,
    exposure_problem,
    is_loopback,
    load_authorizer,
    read_tokens_file,
    token_matches,
)
from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import load_settings


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def test_scopes_and_verdicts() -> None:
    a = Authorizer([("ingest", "i-tok", "t"), ("read", "r-tok", "t"), ("admin", "a-tok", "t")])
    assert a.enabled
    assert a.counts == {"ingest": 2, "read": 2, "admin": 1}  # admin counts in each
    for needs, allowed in (
        ("ingest", {"i-tok", "a-tok"}),
        ("read", {"r-tok", "a-tok"}),
        ("admin", {"a-tok"}),
    ):
        for token in ("i-tok", "r-tok", "a-tok"):
            verdict = a.check(bearer(token), needs)  # type: ignore[arg-type]
            if token in allowed:
                assert isinstance(verdict, Grant)
                assert verdict.principal == hashlib.sha256(token.encode()).hexdigest()[:12]
            else:
                assert isinstance(verdict, Refusal)
                assert verdict.status == 403
                assert f'scope="{needs}"' in verdict.challenge


@pytest.mark.parametrize(
    "header", [None, b"", b"Bearer", b"Bearer ", b"Basic abc", b"Bearer nope", b"i-tok"]
)
def test_missing_or_unknown_is_401(header: bytes | None) -> None:
    verdict = Authorizer([("ingest", "i-tok", "t")]).check(header, "ingest")
    assert isinstance(verdict, Refusal)
    assert verdict.status == 401
    assert verdict.challenge.startswith("Bearer")


def test_public_routes_and_no_tokens_grant_anonymously() -> None:
    assert Authorizer([("admin", "a", "t")]).check(None, "public") == Grant(None)
    assert not Authorizer().enabled
    assert Authorizer().check(None, "admin") == Grant(None)


def test_sha256_form_is_the_same_token() -> None:
    a = Authorizer([("ingest", digest_line("s3cret"), "t")])
    assert isinstance(a.check(bearer("s3cret"), "ingest"), Grant)
    assert isinstance(a.check(bearer(digest_line("s3cret")), "ingest"), Refusal)
    assert token_matches("s3cret", digest_line("s3cret"))
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("s3cret!", "s3cret")


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "g" * 64, "has space", "", "tök"])
def test_malformed_tokens_are_config_errors_that_do_not_echo(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Authorizer([("ingest", bad, "auth.ingest_tokens[0]")])
    assert "auth.ingest_tokens[0]" in caught.value.detail
    if bad and not bad.startswith("sha256:"):
        assert bad not in caught.value.detail


def spy_on_sha256(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What auth.py hashes with SHA-256 from now on, in order."""
    hashed: list[bytes] = []
    real = hashlib.sha256

    def spy(data: bytes = b"") -> object:
        hashed.append(data)
        return real(data)

    monkeypatch.setattr("logpipe_cli.auth.hashlib.sha256", spy)
    return hashed


def test_the_lookup_is_by_digest_never_by_comparing_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The constant-time argument (see Authorizer.check): the presented token is hashed
    # first and only its digest meets the configured ones, so whatever a lookup's timing
    # shows is about a digest. Prove the secret is hashed exactly once per check and no
    # plain comparison against configured tokens happens.
    real = hashlib.sha256
    a = Authorizer([("ingest", "tok-1", "t"), ("ingest", "tok-2", "t")])
    hashed = spy_on_sha256(monkeypatch)
    a.check(bearer("tok-3"), "ingest")
    assert hashed == [b"tok-3"]
    # and the helper for tools compares digests with hmac.compare_digest
    calls: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def compare(x: bytes, y: bytes) -> bool:
        calls.append((x, y))
        return real_compare(x, y)

    monkeypatch.setattr("logpipe_cli.auth.hmac.compare_digest", compare)
    monkeypatch.setattr("logpipe_cli.auth.hashlib.sha256", real)
    assert token_matches("tok-1", "tok-1")
    assert calls == [(real(b"tok-1").digest(), real(b"tok-1").digest())]


def test_only_configured_tokens_are_remembered_and_no_more_than_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A token seen before is found without hashing it again (OpenSSL's SHA-256 costs a few
    # % of a request); a guess is hashed every time and never remembered, so guesses
    # cannot fill the memory, and a valid token's spellings are bounded.
    a = Authorizer([("ingest", "tok-1", "t")])
    hashed = spy_on_sha256(monkeypatch)
    granted = a.check(bearer("tok-1"), "ingest")
    assert isinstance(granted, Grant)
    assert granted.principal is not None
    for _ in range(3):
        assert a.check(bearer("tok-1"), "ingest") == granted
        wrong_scope = a.check(bearer("tok-1"), "admin")
        assert isinstance(wrong_scope, Refusal)
        assert wrong_scope.status == 403
        guess = a.check(bearer("guess"), "ingest")
        assert isinstance(guess, Refusal)
        assert guess.status == 401
    assert hashed == [b"tok-1"] + [b"guess"] * 3
    for n in range(2000):  # spellings of the valid token: whitespace after it
        assert isinstance(a.check(bearer("tok-1" + " " * n), "ingest"), Grant)
    assert len(a._known) == auth._KNOWN_MAX


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(
        "# who may do what\n"
        "\n"
        "ingest  tok-a   # the web app\n"
        f"admin {digest_line('tok-b')}\n"
        "   read tok-c\n",
        encoding="utf-8",
    )
    assert [(s, t) for s, t, _ in read_tokens_file(path)] == [
        ("ingest", "tok-a"),
        ("admin", digest_line("tok-b")),
        ("read", "tok-c"),
    ]
    settings = load_settings({"auth": {"tokens_file": str(path), "read_tokens": ["tok-d"]}}, {})
    assert [(s, t) for s, t, _ in configured_tokens(settings.auth)] == [
        ("read", "tok-d"),
        ("ingest", "tok-a"),
        ("admin", digest_line("tok-b")),
        ("read", "tok-c"),
    ]
    a = load_authorizer(settings.auth)
    assert isinstance(a.check(bearer("tok-b"), "admin"), Grant)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ingest\n", "line 1: expected '<scope> <token>'"),
        ("# ok\nroot tok\n", "line 2: unknown scope 'root'"),
        ("ingest a b\n", "line 1: expected"),
        ("ingest sha256:12\n", "line 1: a sha256: token must be 64 hex digits"),
    ],
)
def test_tokens_file_errors_name_the_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    settings = load_settings({"auth": {"tokens_file": str(path)}}, {})
    with pytest.raises(ConfigError, match=fragment):
        load_authorizer(settings.auth)


def test_tokens_file_missing(tmp_path: Path) -> None:
    settings = load_settings({"auth": {"tokens_file": str(tmp_path / "nope")}}, {})
    with pytest.raises(ConfigError, match="cannot read it"):
        load_authorizer(settings.auth)


def test_list_settings_from_env_file_and_their_errors() -> None:
    env = {"LOGPIPE_AUTH_INGEST_TOKENS": " a, b ,,", "LOGPIPE_SERVER_CORS_ORIGINS": ""}
    s = load_settings({"auth": {"read_tokens": ["r"]}}, env)
    assert s.auth.ingest_tokens == ("a", "b")
    assert s.auth.read_tokens == ("r",)
    assert s.server.cors_origins == ()
    assert (s.sources["auth.ingest_tokens"], s.sources["auth.read_tokens"]) == ("env", "file")
    with pytest.raises(ConfigError, match="must be a list of strings"):
        load_settings({"auth": {"read_tokens": "r"}}, {})
    with pytest.raises(ConfigError, match="must be a list of strings"):
        load_settings({"auth": {"read_tokens": [1]}}, {})
    with pytest.raises(ConfigError, match="is not an origin"):
        load_settings({}, {"LOGPIPE_SERVER_CORS_ORIGINS": "app.example"})
    ok = load_settings({}, {"LOGPIPE_SERVER_CORS_ORIGINS": "https://a.example,http://b:8080"})
    assert ok.server.cors_origins == ("https://a.example", "http://b:8080")


def test_secrets_are_masked_in_repr_and_as_dict() -> None:
    s = load_settings({"auth": {"admin_tokens": ["plain-1", digest_line("x")]}}, {})
    assert "plain-1" not in repr(s)
    assert "plain-1" not in repr(s.auth)
    assert s.as_dict()["auth"]["admin_tokens"] == ["***", digest_line("x")]
    assert s.as_dict(mask_secrets=False)["auth"]["admin_tokens"] == ("plain-1", digest_line("x"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_exposure(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    problem = exposure_problem(host, Authorizer(), allow_anonymous=False)
    assert (problem is None) is loopback
    assert exposure_problem(host, Authorizer(), allow_anonymous=True) is None
    assert exposure_problem(host, Authorizer([("read", "t", "t")]), allow_anonymous=False) is None
