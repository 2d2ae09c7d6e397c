"""A fan-out's span (`telemetry.tool_calls`, the audit's summaries) at its edges: a storm's many failures, and a call
of another tool made inside one of its calls."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from agent.runs import AuditArgs, run_audit
from tests.test_telemetry import in_memory, metric_points, settings  # noqa: F401  (fixtures: in-memory providers)
from tools import telemetry
from tools.telemetry_handles import FAN_OUT_EVENTS

TOOL = "get_single_coviu_session_summary_by_id"


def test_a_storm_in_a_fan_out_lists_its_first_failures_and_counts_the_rest(in_memory: Any):  # noqa: F811
    """A batch of 250 in a 429 storm: two events a failed request (its `rate_limited` and its request). The SDK keeps
    128 a span and drops the oldest, so the storm's first failures went unseen, and nothing on the span said how
    many events there were; the first FAN_OUT_EVENTS are listed and the rest counted on it."""
    spans_exporter, reader, _ = in_memory
    with telemetry.run("audit", "team-1"), telemetry.tool_calls(TOOL):
        for i in range(200):
            with (
                telemetry.tool_call(TOOL) as call,
                telemetry.http_request("GET", f"/proxy/session_summaries/s-{i}", "a"),
            ):
                telemetry.http_status(429)
                telemetry.rate_limited("http://x#a")
                call.done("transient")
    (fan_out,) = [s for s in spans_exporter.get_finished_spans() if s.name == f"tool {TOOL}"]
    assert fan_out.dropped_events == 0 and len(fan_out.events) == FAN_OUT_EVENTS
    assert [e.name for e in fan_out.events[:2]] == ["rate_limited", "GET session_summaries"]  # the first call's
    attributes = dict(fan_out.attributes or {})
    assert attributes["coviu.events.unlisted"] == 400 - FAN_OUT_EVENTS
    assert attributes["coviu.http.status.429"] == attributes["coviu.tool.calls"] == 200
    assert sum(v for _, v in metric_points(reader)["coviu_agent.rate_limited"]) == 200  # the metrics count all


def test_a_fan_out_with_few_failures_lists_them_all(in_memory: Any):  # noqa: F811
    spans_exporter, _, _ = in_memory
    with telemetry.run("audit", "team-1"), telemetry.tool_calls(TOOL):
        for i, status in enumerate([200, 502, 200]):
            with telemetry.tool_call(TOOL) as call, telemetry.http_request("GET", f"/proxy/session_summaries/{i}", "a"):
                telemetry.http_status(status)
                call.done("ok" if status == 200 else "transient")
    (fan_out,) = [s for s in spans_exporter.get_finished_spans() if s.name == f"tool {TOOL}"]
    assert len(fan_out.events) == 1 and "coviu.events.unlisted" not in (fan_out.attributes or {})


def test_another_tools_call_inside_a_fan_out_call_is_a_span_of_its_own(in_memory: Any):  # noqa: F811
    """A fan-out counts one tool's calls: a call of another tool made inside one of them (a guard's read, say) is a
    span of its own under the fan-out, its request an event on it. Before, it was counted as one more call of the
    fan-out's tool, and its request added up with the fan-out's."""
    spans_exporter, reader, _ = in_memory
    with telemetry.run("audit", "team-1"), telemetry.tool_calls(TOOL), telemetry.tool_call(TOOL) as call:
        with telemetry.tool_call("get_single_coviu_session_by_id") as inner:
            with telemetry.http_request("GET", "/proxy/sessions/s-1", "a"):
                telemetry.http_status(200)
            inner.done("ok")
        with telemetry.http_request("GET", "/proxy/session_summaries/s-1", "a"):
            telemetry.http_status(200)
        call.done("ok")
    spans = {s.name: s for s in spans_exporter.get_finished_spans()}
    fan_out, inner_span = spans[f"tool {TOOL}"], spans["tool get_single_coviu_session_by_id"]
    assert inner_span.parent is not None and inner_span.parent.span_id == fan_out.context.span_id
    assert [e.name for e in inner_span.events] == ["GET sessions"]
    assert (inner_span.attributes or {})["coviu.tool.outcome"] == "ok"
    attributes = dict(fan_out.attributes or {})
    assert attributes["coviu.tool.calls"] == 1 and attributes["coviu.http.requests"] == 1
    calls = {(a["tool"], a["outcome"]): v for a, v in metric_points(reader)["coviu_agent.tool.calls"]}
    assert calls == {(TOOL, "ok"): 1, ("get_single_coviu_session_by_id", "ok"): 1}


async def test_an_audit_with_no_summary_to_fetch_traces_no_summary_call(
    settings: Any,  # noqa: F811
    services: Any,
    in_memory: Any,  # noqa: F811
):
    """A day with no session (or every summary cached or told by the list): the summaries' node makes no call, and
    its trace shows none; before, an empty fan-out span said a summary call happened (0 calls, no outcome)."""
    spans_exporter, _, _ = in_memory
    result = await run_audit(settings, AuditArgs(day="2026-01-05"), services=services, checkpointer=InMemorySaver())
    assert result.exit_code == 0 and result.report["sessions"] == []  # type: ignore[index]
    names = [s.name for s in spans_exporter.get_finished_spans()]
    assert "node fetch_summaries" in names and f"tool {TOOL}" not in names
