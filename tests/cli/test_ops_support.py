"""The operator-CLI test helpers themselves work."""

from __future__ import annotations

import httpx

from tests.cli.ops_support import ApiServer


def test_fixture_api_answers(api: ApiServer) -> None:
    assert httpx.get(api.url + "/healthz", timeout=5).json() == {"status": "ok"}
