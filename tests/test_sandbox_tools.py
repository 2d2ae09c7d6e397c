"""Tests of the sandbox's Truto `/tools` endpoint: envelopes, filters, schemas, `id` location and auth.

Runs the sandbox in-process through `SandboxTransport`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sandbox import SandboxConfig, create_sandbox
from sandbox.testing import sandbox_client
from tools.clock import FakeClock

CONTRACT_TOOLS = {
    "list_all_coviu_waiting_queue_calls",
    "create_a_coviu_session",
    "create_a_coviu_participant",
    "get_single_coviu_session_summary_by_id",
    "list_all_coviu_sessions",
    "list_all_coviu_submissions",
    "get_single_coviu_submission_by_id",
    "get_single_coviu_submission_file_by_id",
    "get_single_coviu_audio_recording_by_id",
    "delete_a_coviu_session_by_id",
}


async def _tools(config: SandboxConfig | None = None, query: str = "") -> tuple[httpx.Response, dict[str, Any]]:
    sb = create_sandbox(config, clock=FakeClock(), seed_demo=False)
    async with sandbox_client(sb) as client:
        response = await client.get(f"/integrated-account/sandbox/tools{query}")
    return response, response.json()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sandbox_client(create_sandbox(clock=FakeClock(), seed_demo=False)) as c:
        yield c


async def test_tools_default_envelope_is_result_with_every_field() -> None:
    response, body = await _tools()
    assert response.status_code == 200
    assert list(body) == ["result"]
    tools = {tool["name"]: tool for tool in body["result"]}
    assert set(tools) >= CONTRACT_TOOLS
    for tool in tools.values():
        assert set(tool) == {
            "name",
            "description",
            "resource",
            "method",
            "query_schema",
            "body_schema",
            "required",
            "tags",
        }
        assert tool["query_schema"]["type"] == "object"
        assert tool["body_schema"]["type"] == "object"
        assert len(tool["description"]) > 40
        properties = {**tool["query_schema"]["properties"], **tool["body_schema"]["properties"]}
        assert set(tool["required"]) <= set(properties), tool["name"]


async def test_tools_results_envelope() -> None:
    _, body = await _tools(SandboxConfig(tools_envelope="results"))
    assert list(body) == ["results"]
    assert len(body["results"]) >= len(CONTRACT_TOOLS)


async def test_tool_schemas_match_the_brief() -> None:
    _, body = await _tools()
    tools = {tool["name"]: tool for tool in body["result"]}
    create = tools["create_a_coviu_session"]
    assert (create["resource"], create["method"]) == ("sessions", "create")
    assert set(create["required"]) == {"session_name", "start_time", "end_time"}
    assert create["body_schema"]["properties"]["start_time"]["format"] == "date-time"
    participant_item = create["body_schema"]["properties"]["participants"]["items"]
    assert participant_item["properties"]["role"]["enum"] == ["host", "guest"]
    add = tools["create_a_coviu_participant"]
    assert "session_id" in add["query_schema"]["properties"]
    assert {"display_name", "role", "phone"} <= set(add["body_schema"]["properties"])
    assert set(add["required"]) == {"session_id", "display_name", "role"}
    sessions = tools["list_all_coviu_sessions"]["query_schema"]["properties"]
    assert {"start_time", "end_time", "include_canceled", "order", "state", "limit", "next_cursor"} <= set(sessions)
    assert sessions["order"]["enum"] == ["forward", "reverse"]
    file_tool = tools["get_single_coviu_submission_file_by_id"]
    assert file_tool["query_schema"]["properties"]["quality"]["enum"] == ["480p"]
    assert set(file_tool["required"]) == {"id", "team_id", "collection_id", "submission_id"}
    assert (tools["get_single_coviu_audio_recording_by_id"]["resource"], "get") == ("audio_recordings", "get")
    assert tools["get_single_coviu_session_summary_by_id"]["resource"] == "session_summaries"
    assert set(tools["list_all_coviu_waiting_queue_calls"]["required"]) == {"team_id", "waiting_queue_id"}
    assert "destructive" in tools["delete_a_coviu_session_by_id"]["tags"]


@pytest.mark.parametrize("location", ["query", "body"])
async def test_id_location(location: str) -> None:
    _, body = await _tools(SandboxConfig(id_location=location))  # type: ignore[arg-type]
    other = "body" if location == "query" else "query"
    for tool in body["result"]:
        if tool["method"] in ("get", "update", "delete"):
            assert "id" in tool[f"{location}_schema"]["properties"], tool["name"]
            assert "id" not in tool[f"{other}_schema"]["properties"], tool["name"]
            assert tool["required"][0] == "id"
        else:
            assert "id" not in tool["required"]


@pytest.mark.parametrize(
    ("query", "methods"),
    [
        ("?methods=list", {"list"}),
        ("?methods=list,get", {"list", "get"}),
        ("?methods=read", {"list", "get"}),
        ("?methods=write", {"create", "update", "delete"}),
        ("?methods[]=create&methods[]=delete", {"create", "delete"}),
        ("?methods=custom", set()),
    ],
)
async def test_methods_filter(query: str, methods: set[str]) -> None:
    _, body = await _tools(query=query)
    assert {tool["method"] for tool in body["result"]} == methods


async def test_tags_filter() -> None:
    _, body = await _tools(query="?tags=waiting_area")
    assert {tool["resource"] for tool in body["result"]} == {"waiting_queue_calls", "waiting_calls"}
    _, body = await _tools(query="?tags=binary&methods=read")
    assert {tool["name"] for tool in body["result"]} == {
        "get_single_coviu_submission_file_by_id",
        "get_single_coviu_audio_recording_by_id",
    }


async def test_unknown_account_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/integrated-account/someone-else/tools")
    assert response.status_code == 404
    body = response.json()
    assert body["statusCode"] == 404 and "someone-else" in body["message"]
    assert "truto_is_remote_error" not in body


async def test_missing_token_is_truto_401() -> None:
    sb = create_sandbox(clock=FakeClock(), seed_demo=False)
    async with httpx.AsyncClient(transport=sandbox_client(sb)._transport, base_url="http://sandbox") as bare:
        response = await bare.get("/integrated-account/sandbox/tools")
        assert response.status_code == 401
        assert "truto_is_remote_error" not in response.json()
        response = await bare.get("/integrated-account/sandbox/tools", headers={"Authorization": "Bearer "})
        assert response.status_code == 401


async def test_configured_token_must_match() -> None:
    sb = create_sandbox(SandboxConfig(api_token="s3cret"), clock=FakeClock(), seed_demo=False)
    async with sandbox_client(sb, token="wrong") as client:
        assert (await client.get("/integrated-account/sandbox/tools")).status_code == 401
    async with sandbox_client(sb, token="s3cret") as client:
        assert (await client.get("/integrated-account/sandbox/tools")).status_code == 200


async def test_tools_are_not_rate_limited_nor_faulted() -> None:
    config = SandboxConfig(rate_limit=2)
    config.faults.server_errors = 1.0
    config.faults.drop = 1.0
    sb = create_sandbox(config, clock=FakeClock(), seed_demo=False)
    async with sandbox_client(sb) as client:
        for _ in range(5):
            response = await client.get("/integrated-account/sandbox/tools")
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
    assert sb.count(status=200) == 5
    assert all(r.resource is None and r.truto_method is None for r in sb.requests)
