"""Every read is complete and valid, or the run says so: the audit, triage and the queue check against an upstream
that answers badly. Each test rewrites the sandbox's real answers on the way back (a transport between the product
and the sandbox), on every sandbox profile, and compares with the same run on the healthy upstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from graphs.audit import AUDIT_POLICY, build_audit_graph
from graphs.context import Context, Services
from graphs.triage import QUEUE_TOOL, build_triage_graph
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    generate_sessions,
)
from sandbox.profiles import Profile
from tests.fakes import ScriptedChatModel
from tools.catalog import ToolSpec
from tools.clock import FakeClock
from tools.errors import CoviuAgentError, MalformedResponseError
from tools.ratelimit import RateLimitGovernor
from tools.timeparse import parse_time
from tools.toolbox import open_toolbox

YESTERDAY = date(2026, 11, 24)


@pytest.fixture
def sandbox_config(sandbox_profile: Profile) -> SandboxConfig:
    """Session lists that never carry entry times: every summary is fetched, so a bad summary is read (the summaries
    a list makes unnecessary are tests/test_audit_list_facts.py's)."""
    return sandbox_profile.config.model_copy(update={"participant_entry_listed": False})


# A rewrite sees (request, the sandbox's response with its body read) and returns the response to deliver.
Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


def resource_of(request: httpx.Request) -> str | None:
    parts = request.url.path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "proxy" else None


def names_session(request: httpx.Request, session_id: str) -> bool:
    return session_id in str(request.url) or session_id in request.content.decode("utf-8", "replace")


def json_response(response: httpx.Response, body: Any, status: int | None = None) -> httpx.Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")}
    return httpx.Response(status or response.status_code, headers=headers, content=json.dumps(body).encode())


def raw_response(response: httpx.Response, status: int, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-encoding", "content-type")
    }
    if content_type:
        headers["content-type"] = content_type
    return httpx.Response(status, headers=headers, content=content)


class RewritingTransport(httpx.AsyncBaseTransport):
    """The sandbox, with its answers changed on the way back by `rewrite` (None: passed through)."""

    def __init__(self, sandbox: Sandbox, rewrite: Rewrite | None = None) -> None:
        self.inner = SandboxTransport(sandbox)
        self.rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        forward = getattr(self.rewrite, "forward", None)
        response = await self.inner.handle_async_request(forward(request) if forward else request)
        if self.rewrite is None:
            return response
        content = await response.aread()
        await response.aclose()
        readable = httpx.Response(response.status_code, headers=response.headers, content=content)
        return self.rewrite(request, readable)


async def services_for(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, rewrite: Rewrite | None = None, **kwargs: Any
) -> Services:
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=RewritingTransport(sandbox, rewrite),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    return Services(
        toolbox=toolbox,
        team_id=DEMO_TEAM_ID,
        waiting_queue_id=DEMO_WAITING_QUEUE_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        report_dir=tmp_path / "reports",
        **kwargs,
    )


async def audit(services: Services, **inputs: Any) -> dict[str, Any]:
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "a"}, "recursion_limit": 2000, "max_concurrency": 4}
    try:
        await graph.ainvoke(inputs, config, context=Context(services=services))
    finally:
        await services.toolbox.aclose()
    report = dict((await graph.aget_state(config)).values["report"])
    report.pop("generated_at")
    report.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    return report


async def healthy_report(sandbox: Sandbox, clock: FakeClock, tmp_path: Path, **inputs: Any) -> dict[str, Any]:
    return await audit(await services_for(sandbox, clock, tmp_path / "healthy"), **inputs)


def rows_by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["session_id"]: r for r in report["sessions"]}


def ended_session(report: dict[str, Any]) -> dict[str, Any]:
    """A session with a recorded end and billable minutes in the healthy report."""
    return next(r for r in report["sessions"] if r["billable_minutes"])


# --- unreadable summaries: "could not be checked", never "no recorded end" ------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_summary_is_could_not_be_checked(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, status: int
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)

    def refuse(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and names_session(request, victim["session_id"]):
            return json_response(response, {"error": "refused", "message": ""}, status)
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, refuse))
    row = rows_by_id(report)[victim["session_id"]]
    assert "summary_unavailable" in row["flags"] and "no_actual_end" not in row["flags"]
    assert row["billable_minutes"] is None and row["actual_end"] is None
    assert str(status) in row["problem"]
    assert report["complete"] is False
    assert report["totals"]["summary_unavailable"] == 1
    assert report["totals"]["no_actual_end"] == healthy["totals"]["no_actual_end"]
    assert report["totals"]["billable_minutes"] == healthy["totals"]["billable_minutes"] - victim["billable_minutes"]
    assert healthy["complete"] is True


@pytest.mark.parametrize("bad_end", ["soon", "31/02/2026 25:61", "0001-01-01T00:00:00+14:00"])
async def test_a_summary_time_that_cannot_be_read_is_could_not_be_checked(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, bad_end: str
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)

    def garble(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and names_session(request, victim["session_id"]):
            return json_response(response, {**response.json(), "actual_end_time": bad_end})
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, garble))
    row = rows_by_id(report)[victim["session_id"]]
    assert row["flags"][-1] == "summary_unavailable" and row["billable_minutes"] is None
    assert "actual_end_time" in row["problem"]
    assert report["complete"] is False


@pytest.mark.parametrize(
    ("status", "content", "content_type"),
    [
        (200, b"<html><body>Service unavailable</body></html>", "text/html"),
        (200, b"null", "application/json"),
        (200, b'{"error": "internal"}', "application/json"),
        (200, b"", "application/json"),
        (204, b"", None),
        (302, b"", None),
    ],
    ids=["html", "null", "error-object", "empty", "204", "302"],
)
async def test_a_malformed_summary_is_retried_and_a_one_off_changes_nothing(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, status: int, content: bytes, content_type: str | None
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    left = {"bad": 2}

    def once(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and left["bad"] > 0:
            left["bad"] -= 1
            return raw_response(response, status, content, content_type)
        return response

    assert await audit(await services_for(sandbox, clock, tmp_path, once)) == healthy


async def test_a_summary_that_stays_malformed_ends_the_run_with_no_report(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    def html(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries":
            return raw_response(response, 200, b"<html>login</html>", "text/html")
        return response

    services = await services_for(sandbox, clock, tmp_path, html)
    with pytest.raises(CoviuAgentError):
        await audit(services)
    assert not (tmp_path / "reports").exists()


async def test_connection_resets_on_summaries_are_retried(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    left = {"resets": 3}

    def reset(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and left["resets"] > 0:
            left["resets"] -= 1
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        return response

    assert await audit(await services_for(sandbox, clock, tmp_path, reset)) == healthy


def test_the_audit_may_call_its_reads_whatever_their_verb_and_nothing_else() -> None:
    summary_as_custom_post = ToolSpec(
        name="get_single_coviu_session_summary_by_id", description="", resource="session_summaries", method="summary"
    )
    assert AUDIT_POLICY(summary_as_custom_post, {}) is None
    harmless_looking_read = ToolSpec(name="list_all_coviu_participants", description="", resource="x", method="list")
    assert AUDIT_POLICY(harmless_looking_read, {}) is not None


# --- bad list responses are errors, never "0 sessions" / "0 waiting" -------------------------------------------------

BAD_LISTS = [
    (204, b"", None),
    (200, b"", "application/json"),
    (302, b"", None),
    (200, b'{"result": null}', "application/json"),
    (200, b'{"data": []}', "application/json"),
    (200, b"[]", "application/json"),
]
BAD_LIST_IDS = ["204", "empty", "302", "result-null", "no-list", "bare-list"]


@pytest.mark.parametrize(("status", "content", "content_type"), BAD_LISTS, ids=BAD_LIST_IDS)
async def test_a_bad_session_list_is_an_upstream_failure_not_zero_sessions(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, status: int, content: bytes, content_type: str | None
) -> None:
    def bad(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "sessions" and request.method == "GET":
            return raw_response(response, status, content, content_type)
        return response

    with pytest.raises(CoviuAgentError):
        await audit(await services_for(sandbox, clock, tmp_path, bad))


@pytest.mark.parametrize(("status", "content", "content_type"), BAD_LISTS, ids=BAD_LIST_IDS)
async def test_a_bad_queue_list_fails_triage_instead_of_zero_waiting(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, status: int, content: bytes, content_type: str | None
) -> None:
    def bad(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "waiting_queue_calls":
            return raw_response(response, status, content, content_type)
        return response

    services = await services_for(sandbox, clock, tmp_path, bad)
    with pytest.raises(CoviuAgentError):
        await triage(services)
    assert sandbox.count(resource="sessions", truto_method="create") == 0


def test_malformed_lists_are_their_own_error_class() -> None:
    from tools.paging import list_envelope

    with pytest.raises(MalformedResponseError, match="result"):
        list_envelope({"result": None}, tool="list_all_coviu_sessions")


# --- pages: every page read, overlapping pages counted once ----------------------------------------------------------


async def test_overlapping_pages_are_counted_once(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> None:
    generate_sessions(sandbox.store, YESTERDAY, 60, seed=4)
    healthy = await healthy_report(sandbox, clock, tmp_path)
    previous: dict[str, list[Any]] = {}

    def overlap(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        resource = resource_of(request)
        if resource not in ("sessions", "submissions") or response.status_code != 200:
            return response
        body = response.json()
        key = "result" if "result" in body else "results"
        rows = list(body.get(key) or [])
        repeated = previous.get(str(resource), [])
        previous[str(resource)] = rows
        return json_response(response, {**body, key: [*repeated, *rows]})

    report = await audit(await services_for(sandbox, clock, tmp_path, overlap))
    assert report == healthy
    assert len({r["session_id"] for r in report["sessions"]}) == len(report["sessions"])


async def test_a_repeated_cursor_stops_the_audit(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> None:
    generate_sessions(sandbox.store, YESTERDAY, 30, seed=4)

    def loop(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "sessions" and response.status_code == 200:
            return json_response(response, {**response.json(), "next_cursor": "same-cursor"})
        return response

    with pytest.raises(CoviuAgentError, match="cursor"):
        await audit(await services_for(sandbox, clock, tmp_path, loop))


# --- times ----------------------------------------------------------------------------------------------------------


def naive_utc(value: Any) -> Any:
    moment = parse_time(value)
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() if moment else value


async def test_session_times_without_a_zone_are_read_as_utc(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)

    def strip_zones(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "sessions" and request.method == "GET" and response.status_code == 200:
            body = response.json()
            key = "result" if "result" in body else "results"
            rows = [
                {**r, "start_time": naive_utc(r["start_time"]), "end_time": naive_utc(r["end_time"])} for r in body[key]
            ]
            return json_response(response, {**body, key: rows})
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, strip_zones))
    assert report == healthy and report["totals"]["sessions"] > 0


@pytest.mark.parametrize("far_end", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2031-01-01T00:00:00Z"])
async def test_implausible_actual_times_are_flagged_never_billed(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, far_end: str
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)

    def far(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and names_session(request, victim["session_id"]):
            return json_response(response, {**response.json(), "actual_end_time": far_end})
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, far))
    row = rows_by_id(report)[victim["session_id"]]
    assert "implausible_times" in row["flags"]
    assert row["billable_minutes"] is None and row["raw_times"]["actual_end"]
    assert report["totals"]["implausible_times"] == 1
    assert report["totals"]["billable_minutes"] == healthy["totals"]["billable_minutes"] - victim["billable_minutes"]


async def test_a_listed_session_without_an_id_is_reported_not_named_none(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)

    def drop_id(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "sessions" and request.method == "GET" and response.status_code == 200:
            body = response.json()
            key = "result" if "result" in body else "results"
            rows = [
                {k: v for k, v in r.items() if k != "session_id"} if r.get("session_id") == victim["session_id"] else r
                for r in body[key]
            ]
            return json_response(response, {**body, key: rows})
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, drop_id))
    assert "None" not in {r["session_id"] for r in report["sessions"]}
    unnamed = [r for r in report["sessions"] if r["session_id"] is None]
    assert len(unnamed) == 1 and "summary_unavailable" in unnamed[0]["flags"] and unnamed[0]["problem"]
    assert report["complete"] is False and report["totals"]["sessions"] == healthy["totals"]["sessions"]


# --- flags and the optional narrative ------------------------------------------------------------------------------


async def test_an_overrun_threshold_of_zero_means_zero(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> None:
    report = await healthy_report(sandbox, clock, tmp_path, overrun_threshold_minutes=0)
    assert report["overrun_threshold_minutes"] == 0
    over = [r for r in report["sessions"] if (r["overrun_minutes"] or 0) > 0]
    assert over and all("overrun" in r["flags"] for r in over)


async def test_a_failing_narrative_model_costs_only_the_narrative(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)

    def broken(messages: list[Any], tools: list[str]) -> AIMessage:
        raise RuntimeError("401 from the model endpoint")

    services = await services_for(sandbox, clock, tmp_path, model=ScriptedChatModel(script=broken), planner="llm")
    report = await audit(services)
    assert report == healthy
    assert list((tmp_path / "reports").glob("*.md"))


# --- triage and the queue: every waiting call on every page, every time form -----------------------------------------


async def triage(services: Services, **inputs: Any) -> dict[str, Any]:
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}, "recursion_limit": 80}
    payload = {"messages": [HumanMessage("A priority patient needs a duty nurse now")], "patient_name": "Ava", **inputs}
    try:
        await graph.ainvoke(payload, config, context=Context(services=services))
    finally:
        await services.toolbox.aclose()
    state = dict((await graph.aget_state(config)).values)
    if state.get("failure"):
        raise CoviuAgentError(state["failure"])
    return state


class PagedQueue:
    """The waiting queue served `page_size` calls a page, whatever `limit` asked (our cursor = an offset).

    The sandbox is asked for its whole first page (no limit, no cursor); its rows are then served in small pages.
    """

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size

    def forward(self, request: httpx.Request) -> httpx.Request:
        if resource_of(request) != "waiting_queue_calls":
            return request
        params = [(k, v) for k, v in request.url.params.multi_items() if k not in ("limit", "next_cursor")]
        return httpx.Request(request.method, request.url.copy_with(params=params), headers=request.headers)

    def __call__(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) != "waiting_queue_calls":
            return response
        body = response.json()
        key = "result" if "result" in body else "results"
        rows = list(body[key])
        offset = int(request.url.params.get("next_cursor") or 0)
        end = offset + self.page_size
        page = {key: rows[offset:end], "next_cursor": str(end) if end < len(rows) else None}
        return json_response(response, page, 200)


def queue_planner_script(messages: list[Any], tools: list[str]) -> AIMessage:
    """A model that checks the queue once (first page only, as a model would), then stops."""
    if not any(getattr(m, "tool_calls", None) for m in messages if isinstance(m, AIMessage)):
        return AIMessage("", tool_calls=[{"name": QUEUE_TOOL, "args": {"limit": 2}, "id": "q1"}])
    return AIMessage("done")


@pytest.mark.profiles("default")
@pytest.mark.parametrize("planner", ["rules", "llm"])
async def test_triage_counts_waiting_calls_on_every_page(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, planner: str
) -> None:
    healthy = await triage(await services_for(sandbox, clock, tmp_path / "h"))
    extra: dict[str, Any] = {}
    if planner == "llm":
        extra = {"model": ScriptedChatModel(script=queue_planner_script), "planner": "llm"}
    state = await triage(await services_for(sandbox, clock, tmp_path, PagedQueue(2), **extra))
    assert state["queue"]["waiting"] == healthy["queue"]["waiting"] >= 3
    assert state["queue"]["over_threshold"] == healthy["queue"]["over_threshold"]


@pytest.mark.parametrize("form", ["naive", "epoch-ms", "epoch-s"])
async def test_join_times_in_any_form_give_the_same_waits(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, form: str
) -> None:
    healthy = await triage(await services_for(sandbox, clock, tmp_path / "h"))

    def convert(value: Any) -> Any:
        moment = parse_time(value)
        if moment is None:
            return value
        if form == "naive":
            return moment.astimezone(UTC).replace(tzinfo=None).isoformat()
        return int(moment.timestamp() * 1000) if form == "epoch-ms" else int(moment.timestamp())

    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "waiting_queue_calls" and response.status_code == 200:
            body = response.json()
            key = "result" if "result" in body else "results"
            rows = [{**c, "joinedAt": convert(c.get("joinedAt"))} for c in body[key]]
            return json_response(response, {**body, key: rows})
        return response

    state = await triage(await services_for(sandbox, clock, tmp_path, rewrite))
    assert state["queue"] == healthy["queue"]
    assert state["alerts"] == healthy["alerts"] and state["alerts"]


async def test_a_waiting_call_with_an_unreadable_join_time_is_alerted(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    def garble(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "waiting_queue_calls" and response.status_code == 200:
            body = response.json()
            key = "result" if "result" in body else "results"
            rows = [{**c, "joinedAt": "a while ago"} for c in body[key]]
            return json_response(response, {**body, key: rows})
        return response

    state = await triage(await services_for(sandbox, clock, tmp_path, garble))
    assert state["queue"]["unknown_wait"]
    assert any("could not be read" in a for a in state["alerts"])
