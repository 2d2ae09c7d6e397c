"""The end-of-day audit on the sandbox: expected rows computed independently from the sandbox's data."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.audit import AUDIT_POLICY, WindowError, build_audit_graph, resolve_window
from graphs.context import Context, Services
from graphs.nodes import execute_call
from sandbox import DEMO_INTAKE_COLLECTION_ID, FaultConfig, Sandbox, generate_sessions
from tests.fakes import ScriptedChatModel
from tools.clock import FakeClock
from tools.ratelimit import RateLimitBudget

YESTERDAY = date(2026, 11, 24)


async def run_audit(services: Services, thread: str = "a1", **inputs: Any) -> dict[str, Any]:
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 1000, "max_concurrency": 4}
    await graph.ainvoke(inputs, config, context=Context(services=services))
    return dict((await graph.aget_state(config)).values)  # the whole state (the run's output is report + paths)


def expected_rows(sandbox: Sandbox, since: datetime, until: datetime, threshold: float = 10.0) -> dict[str, dict]:
    """The contract's definitions applied straight to the sandbox's store (no agent code)."""
    store = sandbox.store
    out: dict[str, dict] = {}
    for s in store.sessions.values():
        if s.canceled_time is not None or not (since <= s.end_time < until):
            continue
        entries = [store.participants[p].entry_time for p in s.participant_ids if store.participants[p].entry_time]
        actual_start = min(entries) if entries else s.start_time
        subs = [
            x
            for x in store.submissions.values()
            if x.session_id == s.session_id and x.collection_id == DEMO_INTAKE_COLLECTION_ID
        ]
        flags = []
        if not subs:
            flags.append("missing_form")
        elif not any(x.locked_at for x in subs):
            flags.append("pending_form")
        billable = overrun = None
        if s.actual_end_time is not None:
            minutes = round((s.actual_end_time - actual_start).total_seconds() / 60 + 1e-9, 1)
            billable = math.ceil(minutes)
            overrun = round(max(0.0, (s.actual_end_time - s.end_time).total_seconds() / 60) + 1e-9, 1)
            if overrun > threshold:
                flags.append("overrun")
        else:
            flags.append("no_actual_end")
        out[s.session_id] = {
            "flags": flags,
            "billable_minutes": billable,
            "overrun_minutes": overrun,
            "submission_ids": sorted(x.submission_id for x in subs),
        }
    return out


def window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def test_demo_day_report_matches_the_sandbox(services: Services, sandbox: Sandbox):
    state = await run_audit(services)
    report = state["report"]
    since, until = window(YESTERDAY)
    expected = expected_rows(sandbox, since, until)
    got = {r["session_id"]: r for r in report["sessions"]}
    assert set(got) == set(expected)
    for sid, exp in expected.items():
        row = got[sid]
        assert row["flags"] == exp["flags"], sid
        assert row["billable_minutes"] == exp["billable_minutes"], sid
        assert row["overrun_minutes"] == exp["overrun_minutes"], sid
        assert row["submission_ids"] == exp["submission_ids"], sid
    demo = sandbox.store.demo.sessions
    assert "overrun" in got[demo["overrun"]]["flags"]
    assert "overrun" not in got[demo["small_overrun"]]["flags"]
    assert got[demo["no_show"]]["flags"] == ["missing_form", "no_actual_end"]
    assert got[demo["missing_form"]]["flags"] == ["missing_form"]
    assert got[demo["pending_form"]]["flags"] == ["pending_form"]
    assert got[demo["late_form"]]["flags"] == []  # a form filed today still counts
    assert demo["canceled"] not in got
    assert demo["ends_at_yesterday_start"] in got  # end == since is inside [since, until)
    assert demo["ends_at_today_start"] not in got  # end == until is outside
    totals = report["totals"]
    assert totals["sessions"] == len(expected)
    assert totals["missing_forms"] == sum("missing_form" in e["flags"] for e in expected.values())
    assert totals["billable_minutes"] == sum(e["billable_minutes"] or 0 for e in expected.values())
    paths = state["report_paths"]
    assert set(paths) == {"md", "json", "html"}
    assert json.loads(Path(paths["json"]).read_text()) == report
    assert Path(paths["md"]).name.startswith(f"audit-{report['team_id']}-2026-11-24")
    assert set(report) == {
        "schema_version",
        "complete",
        "source",
        "team_id",
        "collection_id",
        "clinic_name",
        "window",
        "overrun_threshold_minutes",
        "generated_at",
        "totals",
        "summaries_from_list",
        "summaries_from_cache",
        "sessions",
    }
    assert report["schema_version"] == 2 and report["complete"] is True
    assert report["summaries_from_cache"] == 0  # a first run reads every summary


async def test_audit_is_read_only(services: Services, sandbox: Sandbox):
    outcome = await execute_call(
        services,
        "delete_a_coviu_session_by_id",
        {"id": sandbox.store.demo.sessions["future"]},
        call_id="x",
        ids={},
        policy=AUDIT_POLICY,
    )
    assert outcome.kind == "refused" and "not one of this graph's tools" in outcome.text
    assert sandbox.count(truto_method="delete") == 0


async def test_rate_limit_storm_gives_the_identical_report(services: Services, sandbox: Sandbox, clock: FakeClock):
    generate_sessions(sandbox.store, YESTERDAY, 120, seed=5)
    clean = (await run_audit(services, "clean"))["report"]
    sandbox.set_faults(FaultConfig(seed=11, rate_limit_storm=0.35, server_errors=0.05))
    # a run of its own, with room to wait: on small-page profiles the storm hits twice as many requests, and the
    # wait budget (a clear stop when spent) is not what this test is about
    services.toolbox.client.budget = RateLimitBudget(1800)
    stormy_state = await run_audit(services, "storm", refresh=True)  # every summary again, not from the cache
    stormy = stormy_state["report"]
    assert sandbox.count(status=429) > 10
    assert stormy_state["retry"]["waits"]  # the graph waited in wait_and_retry
    clean.pop("generated_at")
    clean.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    stormy.pop("generated_at")
    clean.pop("summaries_from_list")  # the refresh fetched every summary; the clean run read some from the list
    assert stormy.pop("summaries_from_list") == 0
    stormy.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    assert stormy == clean


async def test_pagination_over_many_pages(services: Services, sandbox: Sandbox):
    generate_sessions(sandbox.store, YESTERDAY, 450, seed=2)
    report = (await run_audit(services))["report"]
    since, until = window(YESTERDAY)
    assert report["totals"]["sessions"] == len(expected_rows(sandbox, since, until))
    assert sandbox.count(resource="sessions", truto_method="list") >= 3
    summaries = sandbox.count(resource="session_summaries", status=200)  # a get, or a custom method (variant)
    # each summary fetched exactly once, but for those the list told (an account that lists actual ends and entries)
    assert summaries == report["totals"]["sessions"] - report["summaries_from_list"]


async def test_narrative_sees_aggregates_only(services: Services, sandbox: Sandbox):
    seen: list[str] = []

    def script(messages: list, tools: list) -> Any:
        from langchain_core.messages import AIMessage

        seen.append(" ".join(str(m.content) for m in messages))
        return AIMessage("Most sessions ran to time.")

    services.model = ScriptedChatModel(script=script)
    services.planner = "llm"
    generate_sessions(sandbox.store, YESTERDAY, 60, seed=1)
    state = await run_audit(services)
    assert len(seen) == 1
    names = [r["session_name"] for r in state["report"]["sessions"]]
    assert not any(name in seen[0] for name in names if len(name) > 6)
    assert "Most sessions ran to time." in Path(state["report_paths"]["md"]).read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"day": "2026-13-01"}, "YYYY-MM-DD"),
        ({"since": "2026-11-24T00:00:00Z"}, "both"),
        ({"since": "2026-11-25T00:00:00Z", "until": "2026-11-24T00:00:00Z"}, "after"),
        ({"day": "2026-11-24", "since": "2026-11-24T00:00:00Z", "until": "2026-11-25T00:00:00Z"}, "either"),
    ],
)
def test_bad_windows_are_refused(kwargs: dict[str, str], message: str):
    from zoneinfo import ZoneInfo

    with pytest.raises(WindowError, match=message):
        resolve_window(ZoneInfo("UTC"), datetime(2026, 11, 25, tzinfo=UTC), **kwargs)


def test_date_is_a_clinic_local_day():
    from zoneinfo import ZoneInfo

    since, until, label = resolve_window(ZoneInfo("Australia/Sydney"), datetime(2026, 11, 25, 3, tzinfo=UTC))
    assert label == "2026-11-24"  # 03:00Z is 14:00 in Sydney on the 25th: yesterday is the 24th
    assert since.isoformat() == "2026-11-24T00:00:00+11:00"
    assert until - since == timedelta(days=1)


async def test_the_state_type_says_what_every_node_after_prepare_finds(services: Services) -> None:
    """AuditState's required keys are set by `prepare`: every node after it reads them directly."""
    from typing import NotRequired, get_origin

    from typing_extensions import get_type_hints

    from graphs.audit import AuditState

    hints = get_type_hints(AuditState, include_extras=True)
    optional = {key for key, hint in hints.items() if get_origin(hint) is NotRequired}
    required = set(hints) - optional
    assert optional == {"date", "since", "until", "report", "report_paths"}
    assert {"team_id", "window", "run_key", "retry", "summaries_from_list", "list_cursor"} <= required
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "typed"}, "recursion_limit": 2000}
    seen: list[set[str]] = []
    async for values in graph.astream(
        {"date": "yesterday"}, config, context=Context(services=services), stream_mode="values"
    ):
        seen.append(set(values))
    assert len(seen) > 3 and all(required <= keys for keys in seen[1:])  # [0]: the input, before `prepare`


def test_a_summaries_batch_with_a_502_and_a_429_waits_on_the_429s_retry_after() -> None:
    """Summaries are fetched concurrently: when one fails with a 502 and others are told to wait (429), the batch
    waits the longest Retry-After, not the policy's short delay for whichever failure came first."""
    from graphs.audit import _to_wait_on
    from graphs.nodes import CallOutcome
    from tools.errors import RateLimitedError, TransportError

    gateway = CallOutcome("transient", "get_summary", {}, error=TransportError("bad_gateway", "502"))
    short = CallOutcome(
        "transient", "get_summary", {}, error=RateLimitedError(429, "rate_limited", "slow down", retry_after=3.0)
    )
    long = CallOutcome(
        "transient", "get_summary", {}, error=RateLimitedError(429, "rate_limited", "slow down", retry_after=30.0)
    )
    assert _to_wait_on([gateway, short, long]) is long
    assert _to_wait_on([gateway]) is gateway


async def test_a_summary_call_that_raises_stops_its_batch_with_no_call_left_running(
    services: Services, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
):
    """A call that raises instead of returning an outcome (the shared rate store failed, the run's wait budget is
    spent) ends the audit with that error, and the batch's other calls are stopped and waited for: none goes on
    sending for a run that ended, and the batch's span counts every call it traced. Before, `gather` raised the
    first error and left the other calls running: requests sent after the run failed, outside their span."""
    import sqlite3

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import graphs.audit as audit_module
    import graphs.calls as calls_module
    from tools import telemetry

    generate_sessions(sandbox.store, YESTERDAY, 20, seed=3)
    real = calls_module._execute_call  # under the tool call's tracing
    started: list[str] = []
    running: set[str] = set()
    never = asyncio.Event()

    async def failing_once(services: Services, name: str, arguments: Any, **kwargs: Any) -> Any:
        if name != audit_module.SUMMARY_TOOL:
            return await real(services, name, arguments, **kwargs)
        call = str(kwargs["call_id"])
        started.append(call)
        running.add(call)
        try:
            if len(started) == 1:
                for _ in range(100):  # others in flight first
                    await asyncio.sleep(0)
                raise sqlite3.OperationalError("database or disk is full")
            await never.wait()  # still in flight when the first one fails
            return await real(services, name, arguments, **kwargs)
        finally:
            running.discard(call)

    monkeypatch.setattr(calls_module, "_execute_call", failing_once)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    previous = telemetry.install(telemetry.Telemetry(tracer_provider=tracer_provider))
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await run_audit(services, refresh=True)
    finally:
        telemetry.install(previous)
    assert len(started) >= 4 and running == set()
    (fan_out,) = [s for s in spans.get_finished_spans() if "coviu.tool.calls" in (s.attributes or {})]
    assert (fan_out.attributes or {})["coviu.tool.calls"] == len(started)
