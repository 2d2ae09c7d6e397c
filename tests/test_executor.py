"""The executor (validate, split, dispatch, paginate, binary guard), retries, temporal guards and dedupe."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from helpers_mock import (
    ACCOUNT_ID,
    BASE_URL,
    COVIU_TOOLS,
    ExplodingStream,
    MockTruto,
    body_json,
    coviu_catalog,
    json_response,
    list_page,
    make_client,
    make_executor,
    params,
    truto_error,
)
from langchain_core.tools import StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from tools.catalog import ToolCatalog, ToolSpec
from tools.clock import FakeClock
from tools.dedupe import find_created
from tools.errors import (
    MalformedResponseError,
    RateLimitBudgetError,
    RateLimitedError,
    RetriesExhaustedError,
    ToolArgumentError,
    TransportError,
    TrutoError,
    UnknownToolError,
)
from tools.executor import MODEL_RESULT_CAP, PaginationError, ToolExecutor, list_envelope, render_for_model
from tools.guards import TemporalGuard
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, RateLimitInfo
from tools.retry import RetryPolicy, call_with_retries
from tools.toolbox import open_toolbox

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # 20:00 in Sydney (AEDT, +11)
SYDNEY = ZoneInfo("Australia/Sydney")
VALID_CREATE = {
    "session_name": "Ava Jenkins follow-up",
    "start_time": "2026-11-25T10:00:00Z",
    "end_time": "2026-11-25T10:30:00Z",
}


def query_dict(request: httpx.Request) -> dict[str, str]:
    return dict(params(request))


# --- run: validate before sending, then dispatch ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "field"),
    [
        ("create_a_coviu_session", {**VALID_CREATE, "start_time": "tomorrow"}, "start_time"),
        ("create_a_coviu_session", {"session_name": "x", "start_time": "2026-11-25T10:00:00Z"}, "end_time"),
        ("create_a_coviu_session", {**VALID_CREATE, "colour": "red"}, "colour"),
        ("list_all_coviu_sessions", {"limit": "25"}, "limit"),
        ("create_a_coviu_participant", {"session_id": "s", "display_name": "A", "role": "doc"}, "role"),
        ("get_single_coviu_session_by_id", {}, "id"),
        ("delete_a_coviu_session_by_id", {"id": 7}, "id"),
    ],
)
async def test_run_validates_before_sending(name: str, arguments: dict[str, Any], field: str) -> None:
    mock = MockTruto(responses=[json_response({})])
    executor = make_executor(mock)
    with pytest.raises(ToolArgumentError) as info:
        await executor.run(name, arguments)
    assert info.value.field == field
    assert mock.count == 0
    assert executor.client.governor.requests_reserved == 0


async def test_run_an_unknown_tool_sends_nothing() -> None:
    mock = MockTruto(responses=[json_response({})])
    with pytest.raises(UnknownToolError):
        await make_executor(mock).run("drop_all_coviu_sessions", {})
    assert mock.count == 0


async def test_run_get_puts_the_id_in_the_path_only() -> None:
    mock = MockTruto(responses=[json_response({"session_id": "s 1", "session_name": "x"})])
    result = await make_executor(mock).run("get_single_coviu_session_by_id", {"id": "s 1"})
    assert result == {"session_id": "s 1", "session_name": "x"}
    assert mock.last.method == "GET"
    assert mock.last.url.raw_path.startswith(b"/proxy/sessions/s%201?")
    assert params(mock.last) == [("integrated_account_id", ACCOUNT_ID)]


async def test_run_create_sends_body_fields_in_the_body() -> None:
    mock = MockTruto(responses=[json_response({"session_id": "s-new"}, status=201)])
    await make_executor(mock).run("create_a_coviu_session", VALID_CREATE, idempotency_key="k-1")
    request = mock.last
    assert (request.method, request.url.path) == ("POST", "/proxy/sessions")
    assert body_json(request) == VALID_CREATE
    assert params(request) == [("integrated_account_id", ACCOUNT_ID)]
    assert request.headers["idempotency-key"] == "k-1"


async def test_run_update_splits_id_and_body() -> None:
    mock = MockTruto(responses=[json_response({})])
    await make_executor(mock).run("update_a_coviu_session_by_id", {"id": "s-1", "session_name": "Renamed"})
    assert (mock.last.method, mock.last.url.path) == ("PATCH", "/proxy/sessions/s-1")
    assert body_json(mock.last) == {"session_name": "Renamed"}


async def test_run_custom_method_posts_to_resource_slash_method() -> None:
    mock = MockTruto(responses=[json_response({"ended": True})])
    assert await make_executor(mock).run("end_a_coviu_session", {"session_id": "s-1"}) == {"ended": True}
    assert (mock.last.method, mock.last.url.path) == ("POST", "/proxy/sessions/end")
    assert body_json(mock.last) == {"session_id": "s-1"}


async def test_run_list_sends_query_and_extra_query() -> None:
    mock = MockTruto(responses=[list_page([])])
    await make_executor(mock).run(
        "list_all_coviu_sessions",
        {"start_time": "2026-11-25T00:00:00Z", "include_canceled": False},
        extra_query={"next_cursor": "c-2"},
    )
    assert params(mock.last) == [
        ("start_time", "2026-11-25T00:00:00Z"),
        ("include_canceled", "false"),
        ("next_cursor", "c-2"),
        ("integrated_account_id", ACCOUNT_ID),
    ]


async def test_run_get_without_an_id_in_its_schema_still_needs_one() -> None:
    loose = ToolSpec.from_truto({"name": "get_thing", "resource": "things", "method": "get"})
    mock = MockTruto(responses=[json_response({})])
    executor = make_executor(mock, catalog=ToolCatalog([loose]))
    with pytest.raises(ToolArgumentError) as info:
        await executor.run("get_thing", {})
    assert info.value.field == "id"
    assert mock.count == 0


async def test_run_passes_typed_errors_through() -> None:
    mock = MockTruto(responses=[truto_error(404, "no such session", remote=True)])
    with pytest.raises(TrutoError) as info:
        await make_executor(mock).run("get_single_coviu_session_by_id", {"id": "s-x"})
    assert info.value.status_code == 404
    assert info.value.path == "/proxy/sessions/s-x"


async def test_binary_guard_summary_has_metadata_and_no_bytes() -> None:
    stream = ExplodingStream()
    mock = MockTruto(
        lambda r: httpx.Response(
            200, headers={"content-type": "video/webm", "content-length": "52428800"}, stream=stream
        )
    )
    summary = await make_executor(mock).run("get_single_coviu_recording_by_id", {"id": "rec-1"})
    assert summary["binary"] is True
    assert summary["content_type"] == "video/webm"
    assert summary["size_bytes"] == 52428800
    assert summary["fetched_by"] == {"tool": "get_single_coviu_recording_by_id", "arguments": {"id": "rec-1"}}
    assert "recordings --download" in summary["note"]
    assert all(not isinstance(v, bytes | bytearray) for v in summary.values())
    json.dumps(summary)  # plain JSON: nothing binary hides in it
    assert stream.reads == 0
    assert stream.closed


# --- pagination -------------------------------------------------------------------------------------


def paged(pages: dict[str | None, tuple[list[Any], str | None]], key: str = "result") -> MockTruto:
    """Serve list pages by the request's next_cursor."""

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("next_cursor")
        items, following = pages[cursor]
        return list_page(items, following, key=key)

    return MockTruto(handler)


async def test_pages_follow_next_cursor_to_the_last_page() -> None:
    mock = paged({None: ([1, 2], "c1"), "c1": ([3, 4], "c2"), "c2": ([5], None)})
    executor = make_executor(mock)
    seen = [page async for page in executor.pages("list_all_coviu_sessions", {"start_time": "2026-11-25T00:00:00Z"})]
    assert seen == [([1, 2], "c1"), ([3, 4], "c2"), ([5], None)]
    assert [r.url.params.get("next_cursor") for r in mock.requests] == [None, "c1", "c2"]
    assert all(r.url.params.get("start_time") == "2026-11-25T00:00:00Z" for r in mock.requests)


@pytest.mark.parametrize("key", ["result", "results"])
async def test_all_items_collects_every_page(key: str) -> None:
    mock = paged({None: ([{"id": 1}], "c1"), "c1": ([{"id": 2}], "c2"), "c2": ([{"id": 3}], None)}, key=key)
    items = await make_executor(mock).all_items("list_all_coviu_participants", {"session_id": "s-1"})
    assert items == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert mock.count == 3


async def test_pages_limit_goes_into_the_arguments_when_the_schema_has_it() -> None:
    mock = paged({None: ([1], None)})
    await make_executor(mock).all_items("list_all_coviu_sessions", {}, limit=10)
    assert query_dict(mock.last)["limit"] == "10"


async def test_pages_limit_goes_into_the_query_when_the_schema_lacks_it() -> None:
    mock = paged({None: ([1], None)})
    await make_executor(mock).all_items("list_all_coviu_participants", {"session_id": "s-1"}, limit=10)
    assert query_dict(mock.last)["limit"] == "10"
    assert query_dict(mock.last)["session_id"] == "s-1"


async def test_pages_stop_on_a_repeating_cursor() -> None:
    mock = paged({None: ([1], "c1"), "c1": ([2], "c1")})
    with pytest.raises(PaginationError, match="cursor repeated"):
        await make_executor(mock).all_items("list_all_coviu_sessions", {})
    assert mock.count == 2


async def test_pages_stop_on_a_cursor_cycle() -> None:
    mock = paged({None: ([1], "a"), "a": ([2], "b"), "b": ([3], "a")})
    with pytest.raises(PaginationError):
        await make_executor(mock).all_items("list_all_coviu_sessions", {})
    assert mock.count == 3


def test_list_envelope_shapes() -> None:
    assert list_envelope({"result": [1], "next_cursor": "x"}) == ([1], "x")
    assert list_envelope({"results": [1], "next_cursor": ""}) == ([1], None)
    for not_an_envelope in ([1, 2], {}, None, "", {"result": None}, {"error": "x"}, {"data": []}):
        with pytest.raises(MalformedResponseError):
            list_envelope(not_an_envelope)
    with pytest.raises(MalformedResponseError):
        list_envelope({"result": {"not": "a list"}})


# --- what the model sees -----------------------------------------------------------------------------


def test_render_small_values_as_compact_json() -> None:
    assert render_for_model({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'


def test_render_caps_a_long_list_by_dropping_items_with_a_note() -> None:
    items = [{"session_id": f"s-{i}", "session_name": "x" * 80} for i in range(400)]
    text = render_for_model({"result": items, "next_cursor": "c9"})
    assert len(text) <= MODEL_RESULT_CAP
    shown = json.loads(text)
    kept = len(shown["result"])
    assert 0 < kept < 400
    assert shown["result"] == items[:kept]
    assert shown["next_cursor"] == "c9"
    assert f"showing {kept} of 400 items" in shown["note"]


def test_render_caps_anything_else_with_a_trailing_note() -> None:
    text = render_for_model({"notes": "y" * 20_000}, cap=1000)
    assert len(text) == 1000
    assert text.startswith('{"notes":"yyy')
    assert text.endswith("more characters not shown; narrow the request]")


def test_render_cap_is_respected_for_huge_single_items() -> None:
    text = render_for_model({"result": [{"blob": "z" * 50_000}]}, cap=2000)
    assert len(text) <= 2000
    assert "cut" in text


# --- LangChain tools ---------------------------------------------------------------------------------


def test_langchain_tools_carry_the_merged_schema() -> None:
    executor = make_executor(MockTruto(responses=[json_response({})]))
    tools = executor.langchain_tools()
    assert [t.name for t in tools] == [t["name"] for t in COVIU_TOOLS]
    assert all(isinstance(t, StructuredTool) for t in tools)
    by_name = {t.name: t for t in tools}
    update = by_name["update_a_coviu_session_by_id"]
    spec = executor.spec("update_a_coviu_session_by_id")
    assert update.args_schema == spec.args_schema
    assert set(update.args) == {"id", "session_name", "start_time", "end_time"}
    assert update.description == "Update a session."
    # What bind_tools sends to the model is the merged schema, untouched.
    assert convert_to_openai_tool(update)["function"]["parameters"] == spec.args_schema
    subset = executor.langchain_tools(["get_single_coviu_session_by_id"])
    assert [t.name for t in subset] == ["get_single_coviu_session_by_id"]


async def test_langchain_tool_runs_through_the_executor_and_renders() -> None:
    mock = MockTruto(responses=[json_response({"session_id": "s-1", "session_name": "Ava"})])
    tool = make_executor(mock).langchain_tools(["get_single_coviu_session_by_id"])[0]
    out = await tool.ainvoke({"id": "s-1"})
    assert out == '{"session_id":"s-1","session_name":"Ava"}'
    assert mock.last.url.path == "/proxy/sessions/s-1"


async def test_langchain_tool_with_bad_arguments_sends_nothing() -> None:
    mock = MockTruto(responses=[json_response({})])
    tool = make_executor(mock).langchain_tools(["list_all_coviu_sessions"])[0]
    with pytest.raises(ToolArgumentError):
        await tool.ainvoke({"limit": "all"})
    assert mock.count == 0


# --- retries -----------------------------------------------------------------------------------------


async def test_retry_waits_the_429s_seconds_then_succeeds() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "7"}), list_page([1])])
    waits: list[tuple[float, str]] = []
    async with make_client(mock, clock=clock, governor=governor) as client:
        result = await call_with_retries(
            "listing sessions",
            lambda: client.proxy("sessions", "list"),
            clock=clock,
            governor=governor,
            on_wait=lambda d, e: waits.append((d, type(e).__name__)),
        )
    assert result["result"] == [1]
    assert mock.count == 2
    assert clock.sleeps == [pytest.approx(7.0)]
    assert waits == [(pytest.approx(7.0), "RateLimitedError")]


async def test_retry_gives_up_after_max_attempts_with_backoff() -> None:
    clock = FakeClock()
    mock = MockTruto(responses=[truto_error(502, "upstream")])
    async with make_client(mock, clock=clock) as client:
        with pytest.raises(RetriesExhaustedError) as info:
            await call_with_retries("listing sessions", lambda: client.proxy("sessions", "list"), clock=clock)
    assert info.value.attempts == 5
    assert isinstance(info.value.last, TrutoError)
    assert info.value.last.status_code == 502
    assert "gave up after 5 attempts" in str(info.value)
    assert mock.count == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0]


async def test_retry_never_retries_a_400() -> None:
    clock = FakeClock()
    mock = MockTruto(responses=[truto_error(400, "bad filter", remote=True)])
    async with make_client(mock, clock=clock) as client:
        with pytest.raises(TrutoError) as info:
            await call_with_retries("listing sessions", lambda: client.proxy("sessions", "list"), clock=clock)
    assert not isinstance(info.value, RetriesExhaustedError)
    assert info.value.status_code == 400
    assert mock.count == 1
    assert clock.sleeps == []


async def test_retry_recovers_from_a_transport_error() -> None:
    clock = FakeClock()
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return list_page(["ok"])

    async with make_client(MockTruto(handler), clock=clock) as client:
        result = await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock)
    assert result["result"] == ["ok"]
    assert clock.sleeps == [0.5]


async def test_a_rate_limit_wait_is_bounded_by_the_runs_budget_not_a_per_wait_cap() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    governor.budget = RateLimitBudget(600)
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "500"}), list_page([])])
    async with make_client(mock, clock=clock, governor=governor) as client:
        await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor)
    assert sum(clock.sleeps) == pytest.approx(500.0)
    governor.budget = RateLimitBudget(120)
    mock = MockTruto(responses=[truto_error(429, headers={"Retry-After": "500"}), list_page([])])
    async with make_client(mock, clock=clock, governor=governor) as client:
        with pytest.raises(RateLimitBudgetError):
            await call_with_retries("listing", lambda: client.proxy("sessions", "list"), clock=clock, governor=governor)


def test_policy_delay_for_a_429_is_the_larger_of_error_and_governor() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    governor.observe(RateLimitInfo(retry_after_seconds=15.0), status_code=429)
    err = RateLimitedError(429, "Too Many Requests", "", retry_after=5.0)
    assert RetryPolicy().delay_for(err, 1, governor) == pytest.approx(15.0)
    assert RetryPolicy().delay_for(err, 1) == pytest.approx(5.0)
    transport = TransportError("timeout", "ReadTimeout", method="GET", path="/proxy/x")
    assert [RetryPolicy(max_delay=3.0).delay_for(transport, a) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


async def test_open_toolbox_fetches_the_catalog_with_retries() -> None:
    clock = FakeClock()
    mock = MockTruto(responses=[truto_error(504), json_response({"results": COVIU_TOOLS})])
    toolbox = await open_toolbox(
        base_url=BASE_URL,
        api_key="k",
        integrated_account_id=ACCOUNT_ID,
        transport=httpx.MockTransport(mock),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    try:
        assert len(toolbox.catalog) == len(COVIU_TOOLS)
        assert toolbox.executor.catalog is toolbox.catalog
        assert mock.last.url.path == f"/integrated-account/{ACCOUNT_ID}/tools"
        assert mock.count == 2
        assert clock.sleeps == [0.5]
    finally:
        await toolbox.aclose()


# --- the temporal guard ------------------------------------------------------------------------------


def session_server(sessions: dict[str, dict[str, Any]]) -> MockTruto:
    def handler(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if request.method == "GET" and len(parts) == 4 and parts[2] == "sessions" and parts[3] in sessions:
            return json_response(sessions[parts[3]])
        return truto_error(404, "not found", remote=True)

    return MockTruto(handler)


def guard_for(mock: MockTruto) -> TemporalGuard:
    return TemporalGuard(make_executor(mock), SYDNEY)


def spec_of(name: str) -> ToolSpec:
    return coviu_catalog().get(name)


async def test_guard_refuses_a_start_in_the_past() -> None:
    mock = session_server({})
    refusal = await guard_for(mock).check(
        spec_of("create_a_coviu_session"),
        {**VALID_CREATE, "start_time": "2026-11-25T08:00:00Z", "end_time": "2026-11-25T08:30:00Z"},
        NOW,
    )
    assert refusal is not None
    assert "start_time 2026-11-25 19:00 AEDT is not in the future" in refusal
    assert "now is 2026-11-25 20:00 AEDT" in refusal
    assert mock.count == 0


async def test_guard_refuses_a_start_of_exactly_now() -> None:
    refusal = await guard_for(session_server({})).check(
        spec_of("create_a_coviu_session"), {**VALID_CREATE, "start_time": "2026-11-25T09:00:00Z"}, NOW
    )
    assert refusal is not None
    assert "not in the future" in refusal


async def test_guard_refuses_an_end_before_the_start() -> None:
    refusal = await guard_for(session_server({})).check(
        spec_of("create_a_coviu_session"),
        {**VALID_CREATE, "start_time": "2026-11-25T10:00:00Z", "end_time": "Wed, 25 Nov 2026 09:30:00 GMT"},
        NOW,
    )
    assert refusal is not None
    assert "end_time must be after start_time" in refusal


async def test_guard_allows_a_future_session() -> None:
    mock = session_server({})
    assert await guard_for(mock).check(spec_of("create_a_coviu_session"), VALID_CREATE, NOW) is None
    assert mock.count == 0


async def test_guard_refuses_participants_on_a_finished_session() -> None:
    mock = session_server(
        {"s-done": {"session_id": "s-done", "start_time": "2026-11-25T08:00:00Z", "end_time": "2026-11-25T08:30:00Z"}}
    )
    refusal = await guard_for(mock).check(
        spec_of("create_a_coviu_participant"), {"session_id": "s-done", "display_name": "Ava", "role": "guest"}, NOW
    )
    assert refusal is not None
    assert "ended at 2026-11-25 19:30 AEDT" in refusal
    assert "Create a new session" in refusal
    assert "create_a_coviu_session" in refusal
    assert [(r.method, r.url.path) for r in mock.requests] == [("GET", "/proxy/sessions/s-done")]


async def test_guard_uses_the_actual_end_time_when_the_call_ended_early() -> None:
    sessions = {
        "s-early": {
            "start_time": "2026-11-25T08:00:00Z",
            "end_time": "2026-11-25T10:00:00Z",
            "actual_end_time": "2026-11-25T08:45:00Z",
        }
    }
    refusal = await guard_for(session_server(sessions)).check(
        spec_of("create_a_coviu_participant"), {"session_id": "s-early", "display_name": "Ava", "role": "guest"}, NOW
    )
    assert refusal is not None
    assert "ended at 2026-11-25 19:45 AEDT" in refusal


async def test_guard_refuses_participants_on_a_canceled_session() -> None:
    sessions = {"s-c": {"start_time": "2026-11-26T08:00:00Z", "canceled_time": "2026-11-24T08:00:00Z"}}
    refusal = await guard_for(session_server(sessions)).check(
        spec_of("create_a_coviu_participant"), {"session_id": "s-c", "display_name": "Ava", "role": "guest"}, NOW
    )
    assert refusal is not None
    assert "is canceled" in refusal


async def test_guard_allows_participants_on_a_live_or_future_session() -> None:
    sessions = {
        "s-live": {"start_time": "2026-11-25T08:50:00Z", "end_time": "2026-11-25T09:20:00Z"},
        "s-next": {"start_time": "2026-11-26T08:00:00Z", "end_time": "2026-11-26T08:30:00Z"},
    }
    guard = guard_for(session_server(sessions))
    for sid in sessions:
        args = {"session_id": sid, "display_name": "Ava", "role": "guest"}
        assert await guard.check(spec_of("create_a_coviu_participant"), args, NOW) is None


async def test_guard_refuses_cancelling_a_started_session() -> None:
    sessions = {"s-live": {"start_time": "2026-11-25T08:30:00Z", "end_time": "2026-11-25T09:30:00Z"}}
    refusal = await guard_for(session_server(sessions)).check(
        spec_of("delete_a_coviu_session_by_id"), {"id": "s-live"}, NOW
    )
    assert refusal is not None
    assert "started at 2026-11-25 19:30 AEDT" in refusal
    assert "do not retry the cancel" in refusal


async def test_guard_allows_cancelling_a_future_session() -> None:
    sessions = {"s-next": {"start_time": "2026-11-26T08:00:00Z", "end_time": "2026-11-26T08:30:00Z"}}
    mock = session_server(sessions)
    assert await guard_for(mock).check(spec_of("delete_a_coviu_session_by_id"), {"id": "s-next"}, NOW) is None
    assert mock.count == 1


async def test_guard_reports_an_already_canceled_session() -> None:
    sessions = {"s-c": {"start_time": "2026-11-26T08:00:00Z", "canceled_time": "2026-11-24T08:00:00Z"}}
    refusal = await guard_for(session_server(sessions)).check(
        spec_of("delete_a_coviu_session_by_id"), {"id": "s-c"}, NOW
    )
    assert refusal == "Session s-c is already canceled; nothing to do."


async def test_guard_refuses_updating_a_finished_session() -> None:
    sessions = {"s-done": {"start_time": "2026-11-25T07:00:00Z", "end_time": "2026-11-25T07:30:00Z"}}
    refusal = await guard_for(session_server(sessions)).check(
        spec_of("update_a_coviu_session_by_id"), {"id": "s-done", "session_name": "x"}, NOW
    )
    assert refusal is not None
    assert "finished at 2026-11-25 18:30 AEDT" in refusal
    assert "Create a new session instead." in refusal


async def test_guard_uses_known_sessions_without_a_request() -> None:
    mock = session_server({})
    known = {"s-done": {"start_time": "2026-11-25T08:00:00Z", "end_time": "2026-11-25T08:30:00Z"}}
    refusal = await guard_for(mock).check(
        spec_of("create_a_coviu_participant"),
        {"session_id": "s-done", "display_name": "Ava", "role": "guest"},
        NOW,
        known_sessions=known,
    )
    assert refusal is not None
    assert "ended at" in refusal
    assert mock.count == 0


# --- dedupe: was a lost create made after all? -------------------------------------------------------


async def test_find_created_finds_a_session_by_name_and_start_across_pages() -> None:
    target = {
        "session_id": "s-42",
        "session_name": VALID_CREATE["session_name"],
        "start_time": "2026-11-25T21:00:00+11:00",
    }
    mock = paged(
        {
            None: (
                [
                    {"session_id": "s-1", "session_name": "Someone else", "start_time": "2026-11-25T10:00:00Z"},
                    {
                        "session_id": "s-2",
                        "session_name": VALID_CREATE["session_name"],
                        "start_time": "2026-11-26T10:00:00Z",
                    },
                ],
                "c1",
            ),
            "c1": ([target], None),
        }
    )
    executor = make_executor(mock)
    found = await find_created(executor, executor.spec("create_a_coviu_session"), VALID_CREATE)
    assert found == target
    assert mock.count == 2
    first = query_dict(mock.requests[0])
    assert first["start_time"] == VALID_CREATE["start_time"]
    assert first["end_time"] == VALID_CREATE["end_time"]


async def test_find_created_returns_none_when_absent() -> None:
    mock = paged(
        {None: ([{"session_name": "Other", "start_time": VALID_CREATE["start_time"]}], "c1"), "c1": ([], None)}
    )
    executor = make_executor(mock)
    assert await find_created(executor, executor.spec("create_a_coviu_session"), VALID_CREATE) is None
    assert mock.count == 2


async def test_find_created_finds_a_participant_by_name_and_role() -> None:
    ava = {"participant_id": "p-2", "display_name": "Ava", "role": "Guest"}
    mock = paged({None: ([{"display_name": "Ava", "role": "host"}], "c1"), "c1": ([ava], None)})
    executor = make_executor(mock)
    found = await find_created(
        executor,
        executor.spec("create_a_coviu_participant"),
        {"session_id": "s-1", "display_name": "Ava", "role": "guest"},
    )
    assert found == ava
    assert query_dict(mock.requests[0])["session_id"] == "s-1"


async def test_find_created_refuses_what_it_cannot_look_up() -> None:
    executor = make_executor(MockTruto(responses=[list_page([])]))
    with pytest.raises(LookupError):
        await find_created(executor, executor.spec("end_a_coviu_session"), {"session_id": "s-1"})
    no_list = ToolExecutor(executor.client, coviu_catalog().subset(lambda s: s.method != "list"))
    with pytest.raises(LookupError):
        await find_created(no_list, no_list.spec("create_a_coviu_session"), VALID_CREATE)
