"""Bearer tokens with scopes: load them, and decide whether a request may go on.

Framework-free: the ASGI gate (:mod:`logpipe_cli.gate`) asks an :class:`Authorizer`
with the raw ``Authorization`` header and the scope a route declares, and sends what it
answers. Tokens are kept only as SHA-256 digests, so a token written in the config as
``sha256:<hex>`` never has to exist on the server in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from logpipe_cli.errors import ConfigError
from logpipe_cli.settings import AuthSettings

#: what a token may do; ``admin`` includes the others
TokenScope = Literal["ingest", "read", "admin"]
#: what a route needs: a token scope, or ``public`` (no token ever)
RouteScope = Literal["public", "ingest", "read", "admin"]
SCOPES: Final[tuple[TokenScope, ...]] = get_args(TokenScope)
DIGEST_PREFIX = "sha256:"
#: RFC 6750's b64token characters: what a bearer token may be made of
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
_IMPLIES: Mapping[TokenScope, frozenset[TokenScope]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset(SCOPES),
}


@dataclass(frozen=True)
class Grant:
    """The request may go on, on behalf of ``principal``."""

    #: a short, stable id of the token (first 12 hex digits of its digest), for rate
    #: limits and logs; ``None`` when no token is configured (anonymous access)
    principal: str | None


@dataclass(frozen=True)
class Refusal:
    """The request is refused: ``401`` (no or unknown token) or ``403`` (wrong scope)."""

    status: Literal[401, 403]
    detail: str
    #: the ``WWW-Authenticate`` header's value (RFC 6750)
    challenge: str


Verdict = Grant | Refusal
#: spellings of configured tokens that :meth:`Authorizer.check` remembers
_KNOWN_MAX = 1024
ANONYMOUS: Final = Grant(None)
_MISSING: Final = Refusal(401, "an Authorization: Bearer <token> header is required", "Bearer")
_UNKNOWN: Final = Refusal(401, "the bearer token is not valid", 'Bearer error="invalid_token"')


@dataclass(frozen=True)
class _Token:
    grant: Grant
    scopes: frozenset[TokenScope]
    #: one refusal per needed scope, built once: the hot path allocates nothing
    refusals: Mapping[RouteScope, Refusal]


def new_token() -> str:
    """A new random token: 32 bytes from :mod:`secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def digest_line(token: str) -> str:
    """The ``sha256:<hex>`` form of ``token``: what to write in the config instead."""
    return DIGEST_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def _digest(token: str, where: str) -> bytes:
    """The SHA-256 digest a configured token stands for (its own, or the one written)."""
    if token.startswith(DIGEST_PREFIX):
        hexpart = token.removeprefix(DIGEST_PREFIX)
        try:
            raw = bytes.fromhex(hexpart)
        except ValueError:
            raw = b""
        if len(raw) != hashlib.sha256().digest_size:
            raise ConfigError(f"{where}: a sha256: token must be 64 hex digits")
        return raw
    data = token.encode()
    if not data or not set(data) <= _TOKEN_CHARS:
        raise ConfigError(
            f"{where}: a token must be letters, digits and - . _ ~ + / = (no spaces), "
            "as `logpipe token new` makes them"
        )
    return hashlib.sha256(data).digest()


def read_tokens_file(path: Path) -> list[tuple[TokenScope, str, str]]:
    """``(scope, token, where)`` per line of ``path``: ``<scope> <token>``, ``#``
    comments; ``where`` names the file and line, for errors about the token.

    Raises :class:`ConfigError` naming the file and line of anything else (never the
    token itself).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"auth.tokens_file {path}: cannot read it: {reason}") from None
    out: list[tuple[TokenScope, str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"auth.tokens_file {path}, line {number}"
        if len(words) != 2:
            raise ConfigError(f"{where}: expected '<scope> <token>'")
        scope, token = words
        if scope not in SCOPES:
            raise ConfigError(f"{where}: unknown scope {scope!r} (known: {', '.join(SCOPES)})")
        out.append((scope, token, where))
    if not out:
        # fail closed: a file emptied by a bad deploy must not turn auth off, opening
        # the API to whatever can reach it (a proxy in front of a loopback address)
        raise ConfigError(
            f"auth.tokens_file {path}: holds no token (lines '<scope> <token>'); "
            "unset auth.tokens_file to run without tokens"
        )
    return out


class Authorizer:
    """Answers whether an ``Authorization`` header grants a route's scope.

    Built once from the settings. With no token configured it grants everything
    (``enabled`` is False and the API does not even ask).
    """

    def __init__(self, tokens: Iterable[tuple[TokenScope, str, str]] = ()) -> None:
        """``tokens``: ``(scope, token or sha256:<hex>, where it was configured)``."""
        scopes: dict[bytes, set[TokenScope]] = {}
        for scope, token, where in tokens:
            scopes.setdefault(_digest(token, where), set()).update(_IMPLIES[scope])
        self._tokens: dict[bytes, _Token] = {}
        for digest, granted in scopes.items():
            refusals: dict[RouteScope, Refusal] = {
                need: Refusal(
                    403,
                    f"this token may not use this route (it needs a token of scope {need})",
                    'Bearer error="insufficient_scope", scope="' + need + '"',
                )
                for need in SCOPES
                if need not in granted
            }
            grant = Grant(digest.hex()[:12])
            self._tokens[digest] = _Token(grant, frozenset(granted), refusals)
        #: credentials already found to be a configured token, as presented: looked up
        #: before hashing (SHA-256 through OpenSSL costs ~1-2 us a call, a few % of a
        #: request). Only tokens that exist get in, at most _KNOWN_MAX spellings.
        self._known: dict[bytes, _Token] = {}
        self.counts: dict[TokenScope, int] = {
            s: sum(1 for t in self._tokens.values() if s in t.scopes) for s in SCOPES
        }

    @property
    def enabled(self) -> bool:
        """Whether any token is configured, hence whether routes need one."""
        return bool(self._tokens)

    def check(self, authorization: bytes | None, needs: RouteScope) -> Verdict:
        """The verdict for a request with this ``Authorization`` value (raw header bytes,
        or ``None`` if absent) on a route that ``needs`` a scope."""
        if needs == "public" or not self._tokens:
            return ANONYMOUS
        if authorization is None:
            return _MISSING
        if authorization.startswith(b"Bearer "):  # what clients send: skip the general parse
            credentials = authorization[7:]
        else:
            scheme, _, credentials = authorization.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return _MISSING
        # Constant time, as far as it matters: the secret is never compared. The presented
        # token is hashed and its SHA-256 digest looked up in a dict of the configured
        # digests. What a timing attack could learn from the lookup (the hash bucket, the
        # bytes a candidate digest shares with a stored one) is about a digest of the
        # attacker's own guess; turning that into a token means inverting SHA-256. This
        # is what hmac.compare_digest over every configured token would give, at O(1).
        # The cache of tokens already seen is a dict too: a guess is compared with a
        # stored token's bytes only if their 64-bit hashes (SipHash, keyed per process)
        # are equal, which a guess cannot aim at without knowing the token.
        token = self._known.get(credentials)
        if token is None:
            token = self._tokens.get(hashlib.sha256(credentials.strip()).digest())
            if token is None:
                return _UNKNOWN
            if len(self._known) < _KNOWN_MAX:
                self._known[bytes(credentials)] = token
        if needs in token.scopes:
            return token.grant
        return token.refusals[needs]


def token_matches(presented: str, configured: str) -> bool:
    """Whether ``presented`` is the token ``configured`` (plain or ``sha256:``), compared
    with :func:`hmac.compare_digest` (for tools and tests; the server uses
    :meth:`Authorizer.check`)."""
    want = _digest(configured, "token")
    got = hashlib.sha256(presented.encode()).digest()
    return hmac.compare_digest(want, got)


def configured_tokens(auth: AuthSettings) -> list[tuple[TokenScope, str, str]]:
    """Every configured ``(scope, token, where)``: the three lists, then the file."""
    out: list[tuple[TokenScope, str, str]] = []
    for scope in SCOPES:
        for i, token in enumerate(getattr(auth, f"{scope}_tokens")):
            out.append((scope, token, f"auth.{scope}_tokens[{i}]"))
    if auth.tokens_file:
        out.extend(read_tokens_file(Path(auth.tokens_file)))
    return out


def load_authorizer(auth: AuthSettings) -> Authorizer:
    """The :class:`Authorizer` for these settings; a bad token or file is a
    :class:`ConfigError` (exit 2) that never shows the token."""
    return Authorizer(configured_tokens(auth))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost: may resolve to anything


def exposure_problem(host: str, authorizer: Authorizer, allow_anonymous: bool) -> str | None:
    """Why serving on ``host`` with these tokens is refused, or None if it is not."""
    if authorizer.enabled or allow_anonymous or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} with no tokens configured: anyone who reaches it "
        "could post, read and drain events; configure [auth] tokens (`logpipe token new`) "
        "or set [auth] allow_anonymous = true"
    )


def describe(authorizer: Authorizer) -> str:
    """Whether auth is on, and how many tokens per scope (never the tokens)."""
    if not authorizer.enabled:
        return "off (no tokens configured: every route is open)"
    counts = ", ".join(f"{scope} {n}" for scope, n in authorizer.counts.items())
    return f"on (tokens per scope, admin counted in each: {counts})"
