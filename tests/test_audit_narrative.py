"""The audit report's paragraph written by a model: it names the model, is built from the aggregates only,
and every figure in it is checked against the report's totals; a mismatch leaves it out, said in the report and the
log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver

from graphs.audit import build_audit_graph
from graphs.audit_narrative import unchecked_figures
from graphs.context import Context, Services
from sandbox import Sandbox, generate_sessions
from tests.fakes import ScriptedChatModel

YESTERDAY = date(2026, 11, 24)


async def audit_with(
    services: Services, sandbox: Sandbox, write: Callable[[dict[str, Any]], str]
) -> tuple[dict[str, Any], list[str]]:
    """An audit of yesterday with a scripted model that writes `write(totals)`; the state and the prompts seen."""
    seen: list[str] = []
    report_holder: dict[str, Any] = {}

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        seen.append(" ".join(str(m.content) for m in messages))
        return AIMessage(write(report_holder))

    services.model = ScriptedChatModel(script=script)
    services.planner = "llm"
    generate_sessions(sandbox.store, YESTERDAY, 40, seed=4)
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "n1"}, "recursion_limit": 1000}
    import json

    def totals_from_prompt() -> dict[str, Any]:
        text = seen[-1]
        return json.loads(text[text.index("{") :])

    report_holder["totals"] = totals_from_prompt  # the script reads the aggregates it was given
    await graph.ainvoke({"day": YESTERDAY.isoformat()}, config, context=Context(services=services))
    return dict((await graph.aget_state(config)).values), seen


def faithful(holder: dict[str, Any]) -> str:
    facts = holder["totals"]()
    t = facts["totals"]
    return (
        f"{t['sessions']} sessions ran; {t['missing_forms']} lack an intake form and {t['overruns']} ran over, "
        f"by at most {facts['longest_overrun_minutes']:.0f} minutes, for {t['billable_minutes']} billable minutes."
    )


def inventing(holder: dict[str, Any]) -> str:
    t = holder["totals"]()["totals"]
    return f"{t['sessions'] + 13} sessions ran, a record day; {t['overruns']} ran over."


@pytest.mark.profiles("default")
async def test_a_checked_narrative_names_its_model_and_stays(services: Services, sandbox: Sandbox):
    state, seen = await audit_with(services, sandbox, faithful)
    assert len(seen) == 1
    names = [r["session_name"] for r in state["report"]["sessions"]]
    assert not any(name in seen[0] for name in names if len(name) > 6)  # aggregates only
    markdown = Path(state["report_paths"]["md"]).read_text()
    html = Path(state["report_paths"]["html"]).read_text()
    sessions = state["report"]["totals"]["sessions"]
    assert f"{sessions} sessions ran" in markdown
    assert "written by the model scripted" in markdown and "written by the model scripted" in html
    assert "checked against them" in markdown


@pytest.mark.profiles("default")
async def test_a_narrative_whose_figures_are_not_the_reports_is_left_out_and_said(
    services: Services, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING):
        state, _ = await audit_with(services, sandbox, inventing)
    sessions = state["report"]["totals"]["sessions"]
    markdown = Path(state["report_paths"]["md"]).read_text()
    html = Path(state["report_paths"]["html"]).read_text()
    assert "a record day" not in markdown and "a record day" not in html
    assert f"left out: its figure(s) {sessions + 13} match none of the report's totals" in markdown
    assert "left out" in html
    assert any("narrative was left out" in r.getMessage() for r in caplog.records)


def test_figures_are_matched_with_the_rounding_the_paragraph_shows():
    facts = {"totals": {"sessions": 1204, "billable_minutes": 512.46}, "window": {"since": "2026-11-24T00:00:00Z"}}
    assert unchecked_figures("1,204 sessions on 24 November 2026: 512 or 512.5 billable minutes.", facts) == []
    assert unchecked_figures("1,205 sessions; 512.4 billable minutes; 7 overruns.", facts) == ["1,205", "512.4", "7"]


def test_a_count_that_happens_to_be_a_digit_of_the_day_is_still_checked():
    """The window's date gave 2026, 11, 24, 0 and 25 as 'facts': '24 sessions' (when 40 ran) or '11 overruns' (when
    none did) passed as the report's own figures. A day's digits match only where the paragraph names a date."""
    facts = {
        "totals": {"sessions": 40, "overruns": 3},
        "window": {"since": "2026-11-24T00:00:00+00:00", "until": "2026-11-25T00:00:00+00:00"},
    }
    assert unchecked_figures("24 sessions ran and 11 ran over.", facts) == ["24", "11"]
    assert unchecked_figures("On 24 November 2026, 40 sessions ran; 3 ran over.", facts) == []
    assert unchecked_figures("On 2026-11-24 (Nov 24), 40 sessions ran, from 00:00 UTC.", facts) == []
    assert unchecked_figures("On 27 November 2026, 40 sessions ran.", facts) == ["27"]
