"""Scenario 1, triage: check the waiting queue, alert on long waits, create a session starting
now with a patient (guest) and a clinician (host) link, and reply with the entry URLs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs import context as ctx
from graphs.context import Context, Services, resolve_services
from graphs.nodes import CallOutcome, RetryState, make_act_node, wait_and_retry
from graphs.planning import llm_plan, rules_message, tool_call
from graphs.queue import QueueSummary, alert_lines, summarize_queue
from prompts import load_prompt
from tools.timeparse import parse_time

log = logging.getLogger(__name__)

QUEUE_TOOL = "list_all_coviu_waiting_queue_calls"
SESSION_TOOL = "create_a_coviu_session"
PARTICIPANT_TOOL = "create_a_coviu_participant"
UNIQUE_ENTRY_FLAG = "session;enforce-participant-uniqueness"
MAX_SESSION_CREATES = 2  # the first try, and one more with the start moved forward (clock skew)
MAX_PLAN_STEPS = 8


class TriageInput(TypedDict, total=False):
    """What a caller gives triage (the server's input is just `messages`)."""

    messages: Annotated[list[AnyMessage], add_messages]
    patient_name: str
    host_name: str
    duration_minutes: int
    wait_threshold_minutes: float


class TriageState(TypedDict, total=False):
    """Triage's state: ids, queue facts, the session, its participants, retry bookkeeping."""

    messages: Annotated[list[AnyMessage], add_messages]
    team_id: str
    waiting_queue_id: str
    patient_name: str
    host_name: str
    duration_minutes: int
    wait_threshold_minutes: float
    queue: QueueSummary | None
    alerts: list[str]
    session: dict[str, Any] | None
    participants: list[dict[str, Any]]
    reply: str
    failure: str | None
    last_error: str | None
    session_creates: int
    participant_errors: int
    plan_steps: int
    refusals: int
    known_sessions: dict[str, dict[str, Any]]
    retry: RetryState


def session_start(now: datetime, extra_minutes: int = 0) -> datetime:
    """The first whole minute at least 30 s ahead (Coviu refuses a start in the past)."""
    ahead = now + timedelta(seconds=30)
    start = ahead.replace(second=0, microsecond=0)
    if start < ahead:
        start += timedelta(minutes=1)
    return start + timedelta(minutes=extra_minutes)


def iso(moment: datetime) -> str:
    return moment.astimezone().astimezone(moment.tzinfo).isoformat().replace("+00:00", "Z")


def _request_text(state: Mapping[str, Any]) -> str:
    for message in state.get("messages", []):
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


async def prepare(state: TriageState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Resolve ids and defaults from input, context and settings; fail early when an id is missing."""
    services = await resolve_services(runtime.context)
    team = state.get("team_id") or ctx.team_id(runtime.context, services)
    queue = state.get("waiting_queue_id") or ctx.waiting_queue_id(runtime.context, services)
    if not team or not queue:
        missing = "COVIU_TEAM_ID" if not team else "COVIU_WAITING_QUEUE_ID"
        raise ValueError(f"triage needs a team and a waiting queue: set {missing} (or pass it)")
    patient = state.get("patient_name")
    if not patient and ctx.planner(runtime.context, services) == "llm" and services.model is not None:
        text = _request_text(state)
        if text:
            answer = await services.model.ainvoke(load_prompt("triage_extract", request=text))
            patient = str(answer.content).strip().splitlines()[0][:80] if answer.content else None
    return {
        "team_id": team,
        "waiting_queue_id": queue,
        "patient_name": patient or "Patient",
        "host_name": state.get("host_name") or "Duty clinician",
        "duration_minutes": int(state.get("duration_minutes") or 30),
        "wait_threshold_minutes": float(state.get("wait_threshold_minutes") or 15),
        "participants": state.get("participants") or [],
        "alerts": state.get("alerts") or [],
        "session_creates": 0,
        "participant_errors": 0,
        "plan_steps": 0,
    }


def _progress(state: TriageState) -> str:
    parts = []
    queue = state.get("queue")
    parts.append(f"queue checked ({queue['waiting']} waiting)" if queue else "queue not checked yet")
    session = state.get("session")
    parts.append(f"session {session['session_id']} created" if session else "no session yet")
    roles = sorted(p["role"] for p in state.get("participants", []))
    parts.append(f"participants: {', '.join(roles) or 'none'}")
    if state.get("last_error"):
        parts.append(f"last error: {state['last_error']}")
    return "; ".join(parts)


def _session_args(state: TriageState, now: datetime) -> dict[str, Any]:
    start = session_start(now, extra_minutes=int(state.get("session_creates", 0)))
    end = start + timedelta(minutes=int(state.get("duration_minutes", 30)))
    return {
        "session_name": f"Triage – {state.get('patient_name', 'Patient')}",
        "start_time": iso(start),
        "end_time": iso(end),
        "feature_flags": [UNIQUE_ENTRY_FLAG],
    }


def rules_plan(state: TriageState, now: datetime) -> AIMessage:
    """The deterministic planner: queue, then session, then the missing participants."""
    if state.get("queue") is None:
        return rules_message([tool_call(QUEUE_TOOL, {}, tag="queue")])
    if not state.get("session"):
        return rules_message([tool_call(SESSION_TOOL, _session_args(state, now), tag="session")])
    have = {p["role"] for p in state.get("participants", [])}
    calls = []
    if "guest" not in have:
        calls.append(
            tool_call(PARTICIPANT_TOOL, {"display_name": state.get("patient_name"), "role": "guest"}, tag="guest")
        )
    if "host" not in have:
        calls.append(tool_call(PARTICIPANT_TOOL, {"display_name": state.get("host_name"), "role": "host"}, tag="host"))
    return rules_message(calls)


def _stop_reason(state: TriageState) -> str | None:
    if int(state.get("refusals", 0)) >= 2:
        return f"stopped after a refused write: {state.get('last_error')}"
    if not state.get("session") and int(state.get("session_creates", 0)) >= MAX_SESSION_CREATES:
        return f"the session could not be created: {state.get('last_error')}"
    if int(state.get("participant_errors", 0)) >= 2:
        return f"the participant links could not be created: {state.get('last_error')}"
    if state.get("queue") is None and state.get("last_error"):
        return f"the waiting queue could not be read: {state.get('last_error')}"
    if int(state.get("plan_steps", 0)) >= MAX_PLAN_STEPS:
        return "stopped: too many planning steps"
    return None


async def plan(state: TriageState, runtime: Runtime[Context]) -> Command[Any]:
    """Decide the next tool calls (LLM or rules), or hand over to `respond`."""
    services = await resolve_services(runtime.context)
    reason = _stop_reason(state)
    if reason:
        return Command(goto="respond", update={"failure": reason})
    now = services.clock.now()
    if ctx.planner(runtime.context, services) == "llm":
        session_args = _session_args(state, now)
        system = load_prompt(
            "triage",
            session_name=session_args["session_name"],
            start_time=session_args["start_time"],
            end_time=session_args["end_time"],
            patient_name=state.get("patient_name"),
            host_name=state.get("host_name"),
            now=iso(now),
            timezone=services.zone.key,
            threshold=state.get("wait_threshold_minutes"),
            progress=_progress(state),
        )
        message = await llm_plan(
            services, system, state.get("messages", []), [QUEUE_TOOL, SESSION_TOOL, PARTICIPANT_TOOL]
        )
    else:
        message = rules_plan(state, now)
    steps = int(state.get("plan_steps", 0)) + 1
    if not message.tool_calls:
        return Command(goto="respond", update={"messages": [message], "plan_steps": steps})
    return Command(goto="act", update={"messages": [message], "plan_steps": steps})


def on_result(outcome: CallOutcome, state: Mapping[str, Any], services: Services) -> dict[str, Any]:
    """Write what a tool call produced back into triage's state."""
    spec = outcome.spec
    if spec is None:
        return {"last_error": outcome.text}
    if outcome.kind != "ok":
        update: dict[str, Any] = {"last_error": outcome.text}
        if spec.resource == "sessions" and spec.method == "create":
            update["session_creates"] = int(state.get("session_creates", 0)) + 1
        if spec.resource == "participants" and spec.method == "create":
            update["participant_errors"] = int(state.get("participant_errors", 0)) + 1
        return update
    result = outcome.result if isinstance(outcome.result, Mapping) else {}
    if spec.resource == "waiting_queue_calls" and spec.method == "list":
        calls = outcome.result.get("result", []) if isinstance(outcome.result, Mapping) else outcome.result
        threshold = float(state.get("wait_threshold_minutes", 15))
        summary = summarize_queue(calls or [], services.clock.now(), threshold)
        log.info("queue: %d waiting, %d over %g min", summary["waiting"], len(summary["over_threshold"]), threshold)
        return {"queue": summary, "alerts": alert_lines(summary, threshold), "last_error": None}
    if spec.resource == "sessions" and spec.method == "create":
        session = {k: result.get(k) for k in ("session_id", "session_name", "start_time", "end_time")}
        log.info("session created: %s", session["session_id"])
        return {"session": session, "last_error": None, "session_creates": int(state.get("session_creates", 0)) + 1}
    if spec.resource == "participants" and spec.method == "create":
        participant = {
            "role": str(result.get("role", outcome.arguments.get("role", ""))).lower(),
            "display_name": result.get("display_name"),
            "participant_id": result.get("participant_id"),
            "entry_url": result.get("entry_url"),
        }
        log.info("participant created: %s (%s)", participant["participant_id"], participant["role"])
        others = [p for p in state.get("participants", []) if p["role"] != participant["role"]]
        return {"participants": [*others, participant], "last_error": None}
    return {}


async def respond(state: TriageState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The reply: alerts, the session, and both entry URLs (or why they are missing)."""
    services = await resolve_services(runtime.context)
    lines: list[str] = []
    queue = state.get("queue")
    if queue:
        lines.append(f"Queue: {queue['waiting']} waiting, longest {queue['longest_wait_minutes']:.0f} min.")
    lines.extend(f"ALERT: {a}" for a in state.get("alerts", []))
    session = state.get("session")
    if session:
        start = parse_time(str(session.get("start_time")))
        when = start.astimezone(services.zone).strftime("%H:%M %Z") if start else session.get("start_time")
        lines.append(f"Session '{session['session_name']}' ({session['session_id']}) starts {when}.")
    by_role = {p["role"]: p for p in state.get("participants", [])}
    for role, label in (("guest", "Patient"), ("host", "Clinician")):
        p = by_role.get(role)
        if p:
            lines.append(f"{label} link ({p['display_name']}): {p['entry_url']}")
    if state.get("failure"):
        lines.append(f"Could not finish: {state['failure']}")
    return {"reply": "\n".join(lines)}


def build_triage_graph() -> StateGraph[TriageState, Context, TriageInput, TriageState]:
    """The triage builder; compile it with or without a checkpointer."""
    act = make_act_node(on_result=on_result, after="plan")

    builder = StateGraph(TriageState, context_schema=Context, input_schema=TriageInput)
    builder.add_node("prepare", prepare)
    builder.add_node("plan", plan, destinations=("act", "respond"))
    builder.add_node("act", act, destinations=("plan", "wait_and_retry"))  # type: ignore[call-overload]
    builder.add_node("wait_and_retry", wait_and_retry, destinations=("act",))
    builder.add_node("respond", respond)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "plan")
    builder.add_edge("respond", END)
    return builder


def compile_triage(checkpointer: Any = None) -> CompiledStateGraph[TriageState, Context, TriageInput, TriageState]:
    return build_triage_graph().compile(checkpointer=checkpointer, name="triage")
