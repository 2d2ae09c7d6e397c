"""A newcomer's first hour, in process: the served sandbox's demo account, triage in a chat view (its answer is the
last AI message, the patient's name read from the request), the schemas Studio shows, and a tool source that lacks
what triage needs. The CLI side of the same path is in tests/test_newcomer_cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.services import build_services, clinic_ids
from agent.settings import Settings
from graphs.assistant import build_assistant_graph
from graphs.audit import build_audit_graph
from graphs.context import Context, Services
from graphs.triage import (
    MissingToolsError,
    TriageInputError,
    build_triage_graph,
    patient_from_request,
)
from sandbox import (
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    Sandbox,
    SandboxTransport,
)
from tests.test_mcp import create_mcp_server, make_mcp_services
from tools.clock import FakeClock

REQUEST = "A priority patient needs a duty nurse now"


async def triage(services: Services, thread: str = "t1", **inputs: Any) -> dict[str, Any]:
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    payload: dict[str, Any] = {"messages": [HumanMessage(REQUEST)], **inputs}
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 60}
    return dict(await graph.ainvoke(payload, config, context=Context(services=services)))


def sent(sandbox: Sandbox) -> list[tuple[str, str]]:
    return [(r.resource, r.truto_method) for r in sandbox.requests if r.resource is not None]


# --------------------------------------------------------------------------- the served sandbox's demo account


def account_settings(account: str, **extra: str) -> Settings:
    values = {
        "TRUTO_API_KEY": "sandbox",
        "TRUTO_INTEGRATED_ACCOUNT_ID": account,
        "TRUTO_BASE_URL": "http://127.0.0.1:8765",
        **extra,
    }
    return Settings(_env_file=None, **{k: v for k, v in values.items()})  # type: ignore[call-arg]


@pytest.mark.profiles("default")
async def test_the_sandbox_account_defaults_to_the_demo_ids(sandbox: Sandbox, clock: FakeClock, monkeypatch):
    for name in ("COVIU_TEAM_ID", "COVIU_WAITING_QUEUE_ID", "COVIU_INTAKE_COLLECTION_ID"):
        monkeypatch.delenv(name, raising=False)
    services = await build_services(
        account_settings("sandbox"), transport=SandboxTransport(sandbox), clock=clock, model=None
    )
    try:
        assert (services.team_id, services.waiting_queue_id, services.collection_id) == (
            DEMO_TEAM_ID,
            DEMO_WAITING_QUEUE_ID,
            DEMO_INTAKE_COLLECTION_ID,
        )
    finally:
        await services.toolbox.aclose()
    # a setting still wins, and any other account gets no demo ids
    assert clinic_ids(account_settings("sandbox", COVIU_TEAM_ID="team-x")) == (
        "team-x",
        DEMO_WAITING_QUEUE_ID,
        DEMO_INTAKE_COLLECTION_ID,
    )
    assert clinic_ids(account_settings("acct-123")) == (None, None, None)


@pytest.mark.profiles("default")
async def test_missing_ids_are_named_in_one_message_before_any_request(services: Services, sandbox: Sandbox):
    services.team_id = services.waiting_queue_id = None
    with pytest.raises(TriageInputError) as caught:
        await triage(services, patient_name="Ava Jenkins")
    assert "COVIU_TEAM_ID and COVIU_WAITING_QUEUE_ID" in str(caught.value)
    assert sent(sandbox) == []


# --------------------------------------------------------------------------- triage in a chat view


async def test_triage_ends_with_an_ai_message_holding_the_reply(services: Services):
    state = await triage(services, patient_name="Ava Jenkins")
    last = state["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls
    assert last.content == state["reply"]
    assert "Patient link (Ava Jenkins): https://" in last.content


async def test_the_rules_planner_reads_the_patient_from_the_request(services: Services, sandbox: Sandbox):
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    text = f"{REQUEST}. Patient: Ava Jenkins"
    state = await graph.ainvoke(
        {"messages": [HumanMessage(text)]},
        {"configurable": {"thread_id": "chat"}, "recursion_limit": 60},
        context=Context(services=services),
    )
    assert state["session"]["session_name"] == "Triage – Ava Jenkins"
    guest = next(p for p in state["participants"] if p["role"] == "guest")
    assert guest["display_name"] == "Ava Jenkins"
    # a second request in the same chat thread is a new triage, for its own patient
    again = await graph.ainvoke(
        {"messages": [HumanMessage("And another one. Patient name: Noah O'Brien-Smith")]},
        {"configurable": {"thread_id": "chat"}, "recursion_limit": 60},
        context=Context(services=services),
    )
    assert again["session"]["session_name"] == "Triage – Noah O'Brien-Smith"
    assert again["session"]["session_id"] != state["session"]["session_id"]
    assert sandbox.count(resource="sessions", truto_method="create", status=200) == 2


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("A priority patient needs a duty nurse now. Patient: Ava Jenkins", "Ava Jenkins"),
        ("patient name: Zoë  Ng, urgent", "Zoë Ng"),
        ("Patient: Ava Jenkins (returning)", "Ava Jenkins"),
        ("Patient's name: Mary-Jane O'Neil\nplease hurry", "Mary-Jane O'Neil"),
        ("A priority patient needs a duty nurse now", None),
        ("patient Ava Jenkins", None),  # no label: not guessed
        ("Patient: 12345", None),
        ("Patient: Robert'); DROP TABLE sessions", None),
        ("Patient: one two three four five six seven", None),
        ("Patient:", None),
    ],
)
def test_patient_from_request(text: str, name: str | None):
    assert patient_from_request(text) == name


@pytest.mark.profiles("default")
async def test_a_triage_without_a_patient_name_is_refused_before_any_request(services: Services, sandbox: Sandbox):
    with pytest.raises(TriageInputError) as caught:
        await triage(services)
    assert "--patient-name" in str(caught.value) and "Patient: <name>" in str(caught.value)
    assert sent(sandbox) == []


# --------------------------------------------------------------------------- dry run


@pytest.mark.profiles("default")
async def test_a_dry_run_reads_the_queue_and_plans_every_write_without_sending_one(
    services: Services, sandbox: Sandbox
):
    state = await triage(services, patient_name="Ava Jenkins", dry_run=True)
    assert sent(sandbox) == [("waiting_queue_calls", "list")]
    planned = state["planned_calls"]
    assert [(c["tool"], c.get("args", {}).get("role")) for c in planned] == [
        ("create_a_coviu_session", None),
        ("create_a_coviu_participant", "guest"),
        ("create_a_coviu_participant", "host"),
    ]
    assert planned[0]["args"]["session_name"] == "Triage – Ava Jenkins" and "error" not in planned[0]
    assert state["session"] is None and state["participants"] == []
    assert state["reply"].startswith("Queue: 5 waiting") and "Dry run: nothing was written" in state["reply"]
    assert state["messages"][-1].content == state["reply"]
    assert not state.get("failure")


# --------------------------------------------------------------------------- schemas Studio shows


def test_input_schemas_describe_their_fields():
    triage_in = build_triage_graph().compile().get_input_jsonschema()["properties"]
    for name in ("messages", "patient_name", "host_name", "duration_minutes", "wait_threshold_minutes", "dry_run"):
        assert name in triage_in, name
    for name in ("patient_name", "host_name", "duration_minutes", "wait_threshold_minutes", "dry_run"):
        assert triage_in[name].get("description"), name
    audit_in = build_audit_graph().compile().get_input_jsonschema()["properties"]
    for name in ("date", "since", "until", "overrun_threshold_minutes"):
        assert audit_in[name].get("description"), name
    assert "yesterday" in audit_in["date"]["description"]


def test_output_schemas_are_results_not_bookkeeping():
    bookkeeping = {"retry", "plan_steps", "session_creates", "participant_errors", "refusals", "known_sessions"}
    triage_out = set(build_triage_graph().compile().get_output_jsonschema()["properties"])
    assert {"messages", "reply", "queue", "alerts", "session", "participants"} <= triage_out
    assert not triage_out & bookkeeping
    assistant_out = set(build_assistant_graph().compile().get_output_jsonschema()["properties"])
    assert "messages" in assistant_out and not assistant_out & (bookkeeping | {"approvals", "model_calls"})
    audit_out = set(build_audit_graph().compile().get_output_jsonschema()["properties"])
    assert audit_out == {"report", "report_paths"}


async def test_a_triage_run_returns_the_result_only(services: Services):
    state = await triage(services, patient_name="Ava Jenkins")
    assert not {"retry", "plan_steps", "session_creates", "known_sessions", "refusals"} & set(state)


# --------------------------------------------------------------------------- a tool source without triage's tools


@pytest.mark.profiles("default")
async def test_a_read_only_mcp_server_is_named_missing_tools_not_planning_steps(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
):
    created = await create_mcp_server(sandbox, name="reads", config={"methods": ["read"]})
    services = await make_mcp_services(sandbox, clock, tmp_path, token=created["token"])
    try:
        with pytest.raises(MissingToolsError) as caught:
            await triage(services, patient_name="Ava Jenkins")
    finally:
        await services.toolbox.aclose()
    assert caught.value.missing == ["create_a_coviu_session", "create_a_coviu_participant"]
    assert "create_a_coviu_session" in str(caught.value) and "planning steps" not in str(caught.value)
    assert isinstance(caught.value, TriageInputError)
    assert not [r for r in sandbox.requests if r.resource in ("waiting_queue_calls", "sessions", "participants")]


# --------------------------------------------------------------------------- the audit's progress under cron


def test_audit_progress_logs_every_tenth_or_thirty_seconds_outside_a_terminal(caplog: pytest.LogCaptureFixture):
    import io
    import logging

    from rich.console import Console

    from agent.cli.progress import AuditProgress

    now = [0.0]
    progress = AuditProgress(Console(file=io.StringIO()), clock=lambda: now[0], terminal=False)
    with caplog.at_level(logging.INFO, logger="agent.progress"), progress:
        progress("sessions", 500, 500)
        for _ in range(100):  # 100 summaries at 5/s: 20% in 20 s, two lines
            now[0] += 0.2
            progress("summaries", 1, 0)
        now[0] += 31  # a slow stretch: a line after 30 s, even without a new tenth
        progress("summaries", 1, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.progress"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("audit progress: 50/500 summaries (10%), 5.0/s, about 1 min 30 s left")
    assert lines[1].startswith("audit progress: 100/500 summaries (20%)")
    assert lines[2].startswith("audit progress: 101/500 summaries (20%)") and "left" in lines[2]


def test_at_a_terminal_the_bar_shows_the_eta_and_log_lines_print_above_it() -> None:
    import io
    import logging
    import sys

    from rich.console import Console

    from agent.cli.progress import AuditProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with AuditProgress(console, terminal=True) as progress:
            progress("sessions", 10, 10)
            progress("summaries", 4, 0)
            logging.getLogger("graphs.audit").warning("audit: a line for the log")
            assert handler.stream is not sys.__stderr__  # writing through the bar's console, not under it
    finally:
        root.removeHandler(handler)
    shown = screen.getvalue()
    assert "ETA" in shown and "summaries of 10 sessions" in shown
    assert "audit: a line for the log" in shown  # the log line went to the same screen, above the bar
