"""GET /logs: a user's events as JSON pages or an NDJSON stream; 400s name the parameter."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from litestar.testing import TestClient

from logpipe_cli.api import create_app
from tests.conftest import MakeSettings

NDJSON = {"accept": "application/x-ndjson"}
NOW = int(time.time())


def post(client: TestClient[Any], n: int, user: str = "u", name: str = "e") -> list[dict[str, Any]]:
    events = [
        {"user_id": user, "event": f"{name}{i}", "timestamp": NOW - 100 + i} for i in range(n)
    ]
    body = "".join(json.dumps(e) + "\n" for e in events)
    resp = client.post("/logs", content=body, headers={"content-type": "application/x-ndjson"})
    assert resp.status_code == 200, resp.text
    return events


def test_pages_follow_the_cursor_with_a_drain_in_between(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        sent = post(client, 5)
        first = client.get("/logs", params={"user_id": "u", "limit": 2})
        assert first.status_code == 200, first.text
        assert first.json()["events"] == sent[:2]
        assert client.post("/drain").json()["events"] == 5
        cursor = first.json()["next_cursor"]
        second = client.get("/logs", params={"user_id": "u", "limit": 10, "cursor": cursor})
        assert second.json() == {"events": sent[2:], "next_cursor": None}


def test_filters_and_descending_order(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        sent = post(client, 4)
        resp = client.get("/logs", params={"user_id": "u", "event": ["e0", "e3"], "order": "desc"})
        assert resp.json()["events"] == [sent[3], sent[0]]
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 98))
        resp = client.get("/logs", params={"user_id": "u", "since": since})
        assert resp.json()["events"] == sent[2:]


def test_ndjson_streams_the_events_then_the_cursor(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        sent = post(client, 3)
        resp = client.get("/logs", params={"user_id": "u", "limit": 2}, headers=NDJSON)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in resp.text.splitlines()]
        assert lines[:2] == sent[:2]
        assert set(lines[2]) == {"next_cursor"}
        resp = client.get(
            "/logs", params={"user_id": "u", "cursor": lines[2]["next_cursor"]}, headers=NDJSON
        )
        assert [json.loads(x) for x in resp.text.splitlines()] == [sent[2], {"next_cursor": None}]


def test_ndjson_may_export_more_than_a_json_page(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        ok = client.get("/logs", params={"user_id": "u", "limit": 50_000}, headers=NDJSON)
        assert ok.status_code == 200
        assert ok.text == '{"next_cursor":null}\n'
        refused = client.get("/logs", params={"user_id": "u", "limit": 50_000})
        assert refused.status_code == 400
        assert refused.json()["field"] == "limit"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "user_id"),
        ({"user_id": "../etc"}, "user_id"),
        ({"user_id": "u", "since": "yesterday"}, "since"),
        ({"user_id": "u", "until": "2026-13-01"}, "until"),
        ({"user_id": "u", "since": "2026-12-02", "until": "2026-12-01"}, "until"),
        ({"user_id": "u", "limit": "0"}, "limit"),
        ({"user_id": "u", "limit": "ten"}, "limit"),
        ({"user_id": "u", "limit": "1000001"}, "limit"),
        ({"user_id": "u", "order": "up"}, "order"),
        ({"user_id": "u", "cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"user_id": "u", "cursor": "!!"}, "cursor"),
    ],
)
def test_a_malformed_parameter_is_a_400_naming_it(
    settings_for: MakeSettings, params: dict[str, str], field: str
) -> None:
    with TestClient(create_app(settings_for())) as client:
        resp = client.get("/logs", params=params)
        assert resp.status_code == 400, resp.text
        assert resp.json()["field"] == field
        ndjson = client.get("/logs", params=params, headers=NDJSON)
        assert ndjson.status_code == 400
        assert ndjson.json()["field"] == field


def test_a_cursor_of_another_user_is_refused(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        post(client, 3)
        cursor = client.get("/logs", params={"user_id": "u", "limit": 1}).json()["next_cursor"]
        resp = client.get("/logs", params={"user_id": "v", "cursor": cursor})
        assert resp.status_code == 400
        assert "another user_id" in resp.json()["detail"]


def test_openapi_documents_the_route(settings_for: MakeSettings) -> None:
    with TestClient(create_app(settings_for())) as client:
        doc = client.get("/schema/openapi.json").json()
    op = doc["paths"]["/logs"]["get"]
    assert {p["name"] for p in op["parameters"]} == {
        "user_id", "event", "since", "until", "limit", "cursor", "order"
    }  # fmt: skip
    assert "400" in op["responses"]
