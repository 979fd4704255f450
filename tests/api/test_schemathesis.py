"""Issue 9: schemathesis runs against the app's own OpenAPI document, with a token.

Every documented operation is called in process (ASGI) on a real redis-server, with
requests generated from the document (valid ones and, per operation, invalid ones):
no 500, no status the document does not list, and every answer's content type,
headers and body as documented.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from logpipe_cli.api import create_app
from logpipe_cli.settings import load_settings
from tests.redis_server import RedisServer

ADMIN = "schemathesis-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def api_schema(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The document, loaded from the app it describes (tokens of every scope configured)."""
    redis_server.flush()
    settings_ = load_settings(
        {
            "redis": {"url": redis_server.url, "write_retry_seconds": 0.2},
            "drainer": {"logs_dir": str(tmp_path_factory.mktemp("logs")), "lease_seconds": 1.0},
            "auth": {
                "ingest_tokens": ["schemathesis-ingest"],
                "read_tokens": ["schemathesis-read"],
                "admin_tokens": [ADMIN],
            },
        },
        {},
    )
    app = create_app(settings_)
    try:
        yield schemathesis.openapi.from_asgi("/schema/openapi.json", app, headers=AUTH)
    finally:
        # schemathesis keeps an app's lifespan running until the interpreter exits: close
        # it (and its Redis clients) with the module
        asgi.shutdown_lifespans()


#: every documented operation (a test below checks this list against the document)
OPERATIONS = [
    ("POST", "/log"),
    ("POST", "/logs"),
    ("GET", "/logs"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("POST", "/drain"),
]


def test_every_operation_is_tested(api_schema: Any) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Not schemathesis.pytest.from_fixture + @schema.parametrize: that sets a private pytest
# attribute that pytest 9.2 removed. The operation's strategy under @given is the same
# generation and the same checks.
#: negative mode needs something to break: the operations that take a body
CASES = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    ("POST", "/log", GenerationMode.NEGATIVE),
    ("POST", "/logs", GenerationMode.NEGATIVE),
    ("GET", "/logs", GenerationMode.NEGATIVE),
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_every_answer_is_as_documented(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @settings(
        max_examples=int(os.environ.get("LP_SCHEMATHESIS_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    call()
