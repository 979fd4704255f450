"""The OpenAPI document describes every route's answers, and the answers match it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from logpipe_cli.schemas import BatchStored, DrainSummary, Ready, StatsDoc, Stored
from tests.conftest import MakeSettings

TS = 1712345678


@pytest.fixture
def client(redis_url: str, make_settings: MakeSettings) -> Any:
    with TestClient(app=create_app(make_settings(redis_url))) as c:
        yield c


def test_every_json_answer_has_a_schema(client: Any) -> None:
    doc = client.get("/schema/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                for media, content in answer.get("content", {}).items():
                    if media == "application/json" and path != "/healthz":
                        ref = content["schema"].get("$ref", "")
                        assert ref.startswith("#/components/schemas/"), (path, method, status)
    assert doc["paths"]["/log"]["post"]["requestBody"]["required"] is True
    assert {"400", "413", "415", "500", "503"} <= set(doc["paths"]["/log"]["post"]["responses"])


def test_answers_match_their_documented_shapes(client: Any) -> None:
    event = {"user_id": "u", "event": "e", "timestamp": TS}
    strict: dict[str, Any] = {"strict": True}
    msgspec.json.decode(client.post("/log", json=event).content, type=Stored, **strict)
    resp = client.post(
        "/logs",
        content=b'{"user_id":"v","event":"e","timestamp":1}\n',
        headers={"content-type": "application/x-ndjson"},
    )
    assert msgspec.json.decode(resp.content, type=BatchStored).accepted == 1
    msgspec.json.decode(client.get("/readyz").content, type=Ready, **strict)
    stats = msgspec.json.decode(client.get("/stats").content, type=StatsDoc, **strict)
    assert stats.buffered.events == 2
    assert stats.last_drain is None
    summary = msgspec.json.decode(client.post("/drain").content, type=DrainSummary, **strict)
    assert (summary.events, summary.ok) == (2, True)
    stats = msgspec.json.decode(client.get("/stats").content, type=StatsDoc, **strict)
    assert stats.last_drain is not None
    assert stats.last_drain.events == 2
