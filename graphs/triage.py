"""Scenario 1, triage: check the waiting queue, alert on long waits, create a session starting
now with a patient (guest) and a clinician (host) link, and reply with the entry URLs.

Here: its input, the graph's nodes (`prepare`, `plan`, `respond`) and its builder; its state and what each call is
held to and writes back are in `graphs/triage_steps.py`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import Field
from typing_extensions import TypedDict

from graphs import context as ctx
from graphs.context import Context, Services, resolve_services
from graphs.nodes import (
    allow_only,
    filled,
    make_act_node,
    settled,
    wait_and_retry,
)
from graphs.planning import invalid_call_answers, invoke_model, llm_plan
from graphs.queue import QueueSummary
from graphs.triage_steps import (
    ADDED_KEYS,
    MAX_SESSION_CREATES,
    NEW_SESSION_ID,
    PARTICIPANT_TOOL,
    QUEUE_TOOL,
    REQUIRED_TOOLS,
    SESSION_TOOL,
    UNIQUE_ENTRY_FLAG,
    TriageState,
    _session_args,
    created,
    held_arguments,
    missing_steps,
    on_result,
    planned_writes,
    rules_plan,
    session_start,
)
from prompts import load_prompt
from tools.errors import (
    ModelConfigError,
    ModelFailedError,
    RunInputError,
)
from tools.textsafety import has_unsafe_chars
from tools.timeparse import iso_z, parse_time

log = logging.getLogger(__name__)

# triage's state and calls (graphs/triage_steps.py): importable from here, with the graph
__all__ = [
    "ADDED_KEYS",
    "MAX_SESSION_CREATES",
    "NEW_SESSION_ID",
    "PARTICIPANT_TOOL",
    "QUEUE_TOOL",
    "REQUIRED_TOOLS",
    "SESSION_TOOL",
    "UNIQUE_ENTRY_FLAG",
    "TriageState",
    "created",
    "held_arguments",
    "missing_steps",
    "on_result",
    "planned_writes",
    "rules_plan",
    "session_start",
]

MAX_PLAN_STEPS = 8
MAX_MODEL_CORRECTIONS = 2  # turns whose tool calls were not valid JSON, answered with the error; then the rules finish
# "Patient: Ava Jenkins" or "patient name: Ava Jenkins" in the request: the name runs to the end of the line or to
# `,` `;` `.` `(`; only letters, spaces, hyphens and apostrophes, at most six words (else it is not taken).
_PATIENT_LABEL = re.compile(r"\bpatient(?:'s)?(?:\s+name)?\s*:\s*([^\n,;.(]*)", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^patient(?:'s)?(?:\s+name)?\s*:\s*", re.IGNORECASE)  # a model's "Patient: Ava"
_NAME = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:[-'’][^\W\d_]+)*(?: [^\W\d_][^\W\d_'’-]*(?:[-'’][^\W\d_]+)*){0,5}")


class TriageInputError(RunInputError):
    """Triage cannot start with what it was given (a missing id, patient name or tool); nothing was sent."""


class MissingToolsError(TriageInputError):
    """The tool source lacks tools triage needs (e.g. an MCP server created with `--methods read`)."""

    def __init__(self, missing: list[str], source: str) -> None:
        self.missing = missing
        super().__init__(
            f"triage needs the tools {', '.join(missing)}, which this account's tool source ({source}) does not "
            "offer (an MCP server created with --methods read cannot write: create one with --methods read,write)"
        )


class TriageInput(TypedDict, total=False):
    """What a caller gives triage: the request, and optionally the patient's name and the session's settings."""

    messages: Annotated[list[AnyMessage], add_messages]
    patient_name: Annotated[
        str,
        Field(
            description="The patient's display name on their link. Default: read from the request "
            "('... Patient: Ava Jenkins'); a triage without a patient name is refused."
        ),
    ]
    host_name: Annotated[
        str, Field(description="The clinician's display name on their link (default 'Duty clinician').")
    ]
    duration_minutes: Annotated[int, Field(description="Session length in minutes, 1 to 720 (default 30).")]
    wait_threshold_minutes: Annotated[
        float, Field(description="Alert on patients waiting longer than this many minutes (default 15).")
    ]
    dry_run: Annotated[
        bool,
        Field(
            description="Plan without writing: the queue is read, the first write the planner asks for ends the "
            "run, and every planned call is returned in planned_calls (nothing is created)."
        ),
    ]


class TriageOutput(TypedDict, total=False):
    """What a finished triage returns: the reply (also the last AI message), the queue, the session and its links."""

    messages: Annotated[list[AnyMessage], add_messages]
    reply: str
    team_id: str
    waiting_queue_id: str
    queue: QueueSummary | None
    alerts: list[str]
    session: dict[str, Any] | None
    participants: list[dict[str, Any]]
    failure: str | None
    last_error: str | None
    last_error_status: int | None  # the HTTP status of the last failed call (None: not an HTTP error)
    last_error_note: str | None  # the last failed call said for a person (which setting, which value)
    last_error_input: bool | None  # the last failure was our input: an invalid or unknown id (exit 2)
    dry_run: bool
    planned_calls: list[dict[str, Any]] | None  # a dry run's planned calls; None: not a dry run
    planner: str  # who planned the run's calls: llm, rules, or llm then rules (the graph finished what it skipped)
    planner_note: str | None  # why the rules planned (part of) an LLM run: the model failed, or stopped early


def _request_text(state: Mapping[str, Any]) -> str:
    """The latest request (a chat thread holds earlier ones too)."""
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


def patient_from_request(text: str) -> str | None:
    """The patient's name when the request labels it ("... Patient: Ava Jenkins"), else None.

    Deliberately narrow: only a `Patient:` / `Patient name:` label, followed by at most six words of letters
    (hyphens and apostrophes inside words), up to the end of the line or `,` `;` `.` `(`.
    """
    for match in _PATIENT_LABEL.finditer(text):
        candidate = " ".join(match.group(1).split())
        if candidate and len(candidate) <= 80 and _NAME.fullmatch(candidate):
            return candidate
    return None


async def _patient_name(state: TriageState, runtime: Runtime[Context], services: Services) -> str | None:
    given = (state.get("patient_name") or "").strip()
    if given:
        return given
    text = _request_text(state)
    found = patient_from_request(text)
    if found or not text:
        return found
    if ctx.planner(runtime.context, services) == "llm" and services.model is not None:
        prompt = load_prompt("triage_extract", request=text)
        try:
            answer = await invoke_model(services, services.model, prompt, what="reading the patient's name")
        except (ModelFailedError, ModelConfigError):
            if not services.fallback_to_rules:
                raise
            log.warning("triage: the model failed reading the patient's name; the rules read only a 'Patient:' label")
            return None
        lines = str(answer.content).strip().splitlines() if answer.content else []
        name = lines[0].strip().strip("`\"'") if lines else ""
        name = " ".join(_ANSWER_LABEL.sub("", name).rstrip(".").split())
        if name and name.lower() != "patient":
            # the model only reads the name: one written in the request, never a name or a sentence of its own
            if len(name) <= 80 and _NAME.fullmatch(name) and name.casefold() in " ".join(text.split()).casefold():
                return name
            log.warning("triage: the model's answer to the patient's name is not a name written in the request")
    return None


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


def check_given(state: Mapping[str, Any]) -> None:
    """A run's input is checked like the command line's flags (the server and schedules start runs too): names
    without control or bidi characters, at most 120 characters; a duration of 1 to 720 minutes; a wait threshold
    of 0 to 1440."""
    for key in ("patient_name", "host_name"):
        value = state.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > 120:
            raise TriageInputError(f"{key}: expected a non-empty name of at most 120 characters")
        if has_unsafe_chars(value):
            raise TriageInputError(f"{key}: control or bidi characters are not allowed in a display name")
    for key, low, high in (("duration_minutes", 1, 720), ("wait_threshold_minutes", 0, 1440)):
        value = state.get(key)
        if value is not None and not (isinstance(value, int | float) and low <= value <= high):
            raise TriageInputError(f"{key}: expected {low} to {high} minutes, got {value!r}")


async def prepare(state: TriageState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Resolve ids, the patient and defaults; fail before any request when something is missing.

    Each run of a thread is a new triage (a chat thread may ask for several): what an earlier run found is reset.
    """
    services = await resolve_services(runtime.context)
    check_given(state)
    # the run's context (settings as defaults), never an earlier run's ids left in a reused thread's state
    ids = ctx.run_ids(runtime.context, services)
    team, queue = ids.team_id, ids.waiting_queue_id
    missing = [name for name, value in (("COVIU_TEAM_ID", team), ("COVIU_WAITING_QUEUE_ID", queue)) if not value]
    if missing:
        raise TriageInputError(
            f"triage needs a team and a waiting queue: set {' and '.join(missing)} (or pass them: --team-id, "
            "--queue-id, or the run's context)"
        )
    catalog = services.toolbox.catalog
    absent = [name for name in REQUIRED_TOOLS if name not in catalog]
    if absent:
        raise MissingToolsError(absent, catalog.source)
    patient = await _patient_name(state, runtime, services)
    if not patient:
        raise TriageInputError(
            "triage needs the patient's name: pass --patient-name (patient_name), or end the request with "
            "'Patient: <name>'"
        )
    return {
        "team_id": team,
        "waiting_queue_id": queue,
        "patient_name": patient,
        "host_name": state.get("host_name") or "Duty clinician",
        "duration_minutes": int(_given(state.get("duration_minutes"), 30)),
        "wait_threshold_minutes": float(_given(state.get("wait_threshold_minutes"), 15)),  # 0 means 0
        "dry_run": bool(state.get("dry_run")),
        "planned_calls": [] if state.get("dry_run") else None,  # a list only in a dry run (kept in the output)
        "queue": None,
        "alerts": [],
        "session": None,
        "participants": [],
        "failure": None,
        "last_error": None,
        "last_error_status": None,
        "last_error_note": None,
        "last_error_input": None,
        "session_creates": 0,
        "participant_errors": 0,
        "plan_steps": 0,
        "refusals": 0,
        "known_sessions": {},
        "retry": settled(state.get("retry")),
        "planned_session": None,
        "model_corrections": 0,
        "planner": ctx.planner(runtime.context, services),
        "planner_note": None,
    }


def _progress(state: TriageState) -> str:
    parts = []
    queue = state["queue"]
    parts.append(f"queue checked ({queue['waiting']} waiting)" if queue else "queue not checked yet")
    session = state["session"]
    parts.append(f"session {session['session_id']} created" if session else "no session yet")
    roles = sorted(p["role"] for p in state["participants"])
    parts.append(f"participants: {', '.join(roles) or 'none'}")
    if state["last_error"]:
        parts.append(f"last error: {state['last_error']}")
    return "; ".join(parts)


def _stop_reason(state: TriageState) -> str | None:
    """Why triage stops, said for a person (the failed call's note names the setting and the value)."""
    said = state["last_error_note"] or state["last_error"]
    if state["refusals"] >= 2:
        return f"stopped after a refused write: {said}"
    if not state["session"] and state["session_creates"] >= MAX_SESSION_CREATES:
        return f"the session could not be created: {said}"
    if state["participant_errors"] >= 2:
        return f"the participant links could not be created: {said}"
    if state["queue"] is None and state["last_error"]:
        return f"the waiting queue could not be read: {said}"
    if state["plan_steps"] >= MAX_PLAN_STEPS:
        return "stopped: too many planning steps"
    return None


def _stopped_by_model(exc: ModelFailedError | ModelConfigError, state: TriageState) -> Exception:
    """The model failed mid-triage (COVIU_AGENT_PLANNER=llm): the run stops here, checkpointed; the same command
    resumes it (the default thread), so nothing is created twice."""
    note = f"; not done: {', '.join(missing_steps(state))}; created: {created(state)}; the same command resumes it"
    return type(exc)(f"{exc}{note}")


def _rules_take_over(state: TriageState, now: datetime, note: str) -> tuple[AIMessage, dict[str, Any]]:
    """The rules plan the rest of this run (what the model skipped, or all of it when the model failed)."""
    log.warning("triage: the rules planner finishes this run: %s", note)
    planner = "rules" if state["plan_steps"] == 0 and state["queue"] is None else "llm then rules"
    return rules_plan(state, now), {"planner": planner, "planner_note": note}


async def plan(state: TriageState, runtime: Runtime[Context]) -> Command[Any]:
    """Decide the next tool calls (LLM or rules), or hand over to `respond`.

    Whatever the model does, a triage ends with its session and both links or a failure: calls whose arguments are
    not valid JSON are answered with the error (at most MAX_MODEL_CORRECTIONS turns); a model that stops early, or
    keeps sending invalid calls, hands over to the rules plan, which finishes the steps it skipped.
    """
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    reason = _stop_reason(state)
    if reason:
        return Command(goto="respond", update={"failure": reason})
    now = services.clock.now()
    session_args = _session_args(state, now)
    planned_session = None if state["session"] else session_args
    update: dict[str, Any] = {"planned_session": planned_session}
    view: TriageState = {**state, "planned_session": planned_session}
    if ctx.planner(runtime.context, services) == "llm" and not state["planner_note"]:
        # the job, the same for every triage (a provider's prompt cache serves it with the tools), then its facts
        system = (
            load_prompt("triage"),
            load_prompt(
                "triage_facts",
                session_name=session_args["session_name"],
                start_time=session_args["start_time"],
                end_time=session_args["end_time"],
                patient_name=state["patient_name"],
                host_name=state["host_name"],
                now=iso_z(now),
                timezone=services.zone.key,
                threshold=state["wait_threshold_minutes"],
                progress=_progress(state),
            ),
        )
        failed: str | None = None
        try:
            message = await llm_plan(
                services, system, state.get("messages", []), [QUEUE_TOOL, SESSION_TOOL, PARTICIPANT_TOOL]
            )
        except (ModelFailedError, ModelConfigError) as exc:
            if not services.fallback_to_rules:
                raise _stopped_by_model(exc, state) from None
            failed = f"the model failed: {exc}"  # COVIU_AGENT_PLANNER=auto: the rules plan the rest of the run
        if failed is not None:
            message, more = _rules_take_over(view, now, failed)
            update.update(more)
            messages: list[AnyMessage] = [message]
        else:
            answers = invalid_call_answers(message)
            corrections = state["model_corrections"] + (1 if answers else 0)
            update["model_corrections"] = corrections
            messages = [message, *answers]  # every call of the turn answered, the invalid ones here
            if answers and not message.tool_calls and corrections <= MAX_MODEL_CORRECTIONS:
                log.warning("triage: the model's tool call arguments were not valid JSON; answered with the error")
                steps = state["plan_steps"] + 1
                return Command(goto="plan", update={**update, "messages": messages, "plan_steps": steps})
            if not message.tool_calls and missing_steps(state):
                note = (
                    f"the model's tool calls were not valid JSON {corrections} times"
                    if answers
                    else "the model stopped without calling a tool"
                )
                message, more = _rules_take_over(view, now, f"{note} before {', '.join(missing_steps(state))}")
                update.update(more)
                messages.append(message)
    else:
        message = rules_plan(view, now)
        messages = [message]
    steps = state["plan_steps"] + 1
    if state["dry_run"] and message.tool_calls:
        planned = planned_writes(services, view, message)
        if planned:
            # the first write ends a dry run: nothing is sent, the planned calls are the answer
            return Command(goto="respond", update={**update, "planned_calls": planned, "plan_steps": steps})
    if not message.tool_calls:
        return Command(goto="respond", update={**update, "messages": messages, "plan_steps": steps})
    return Command(goto="act", update={**update, "messages": messages, "plan_steps": steps})


async def respond(state: TriageState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The reply: alerts, the session, and both entry URLs (or why they are missing)."""
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    lines: list[str] = []
    queue = state["queue"]
    if queue:
        lines.append(f"Queue: {queue['waiting']} waiting, longest {queue['longest_wait_minutes']:.0f} min.")
    lines.extend(f"ALERT: {a}" for a in state["alerts"])
    session = state["session"]
    if session:
        start = parse_time(str(session.get("start_time")))
        when = start.astimezone(services.zone).strftime("%H:%M %Z") if start else session.get("start_time")
        lines.append(f"Session '{session['session_name']}' ({session['session_id']}) starts {when}.")
    by_role = {p["role"]: p for p in state["participants"]}
    for role, label in (("guest", "Patient"), ("host", "Clinician")):
        p = by_role.get(role)
        if p:
            lines.append(f"{label} link ({p['display_name']}): {p['entry_url']}")
    failure = state["failure"]
    missing = missing_steps(state)
    if not state["dry_run"] and not failure and missing:
        failure = "the triage stopped early"
    if failure and not state["dry_run"]:
        # what is missing and what exists (ids only), so the clinic can finish it or clean up
        failure = f"{failure}; not done: {', '.join(missing) or 'nothing'}; created: {created(state)}"
        log.warning("triage did not finish: %d step(s) not done; created: %s", len(missing), created(state))
    planned = state["planned_calls"] or []
    if state["dry_run"]:
        lines.append(
            f"Dry run: nothing was written. {len(planned)} planned call(s):"
            if planned
            else "Dry run: nothing was written."
        )
        for call in planned:
            note = f" (after {call['after']})" if call.get("after") else ""
            error = f"  [would be refused: {call['error']}]" if call.get("error") else ""
            lines.append(
                f"- {call['tool']} {json.dumps(call['args'], ensure_ascii=False, sort_keys=True)}{note}{error}"
            )
    if state["planner_note"]:
        lines.append(f"Planned by the rules: {state['planner_note']}.")
    if failure:
        lines.append(f"Could not finish: {failure}")
    reply = "\n".join(lines)
    # the reply is also the last AI message: a chat view (Studio, Agent Chat UI) shows it
    return {"reply": reply, "failure": failure, "messages": [AIMessage(content=reply)], **REQUEST_INPUTS_RESET}


REQUEST_INPUTS_RESET: dict[str, Any] = dict.fromkeys(
    ("patient_name", "host_name", "duration_minutes", "wait_threshold_minutes", "dry_run")
)


def build_triage_graph() -> StateGraph[TriageState, Context, TriageInput, TriageOutput]:
    """The triage builder; compile it with or without a checkpointer."""
    # its three tools by name: a call to any other (a model talked into it by a waiting call's text) is refused
    act = make_act_node(
        on_result=on_result,
        after="plan",
        hold_from_state=held_arguments,
        policy=allow_only(*REQUIRED_TOOLS),
        added=ADDED_KEYS,
    )

    builder = StateGraph(TriageState, context_schema=Context, input_schema=TriageInput, output_schema=TriageOutput)
    builder.add_node("prepare", prepare)
    builder.add_node("plan", plan, destinations=("act", "respond", "plan"))
    # act reads the whole state (ids, the queue threshold, what exists): not only the keys its signature names
    builder.add_node("act", act, input_schema=TriageState, destinations=("plan", "wait_and_retry"))  # type: ignore[arg-type]
    builder.add_node("wait_and_retry", wait_and_retry, destinations=("act",))
    builder.add_node("respond", respond)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "plan")
    builder.add_edge("respond", END)
    return builder


def compile_triage(checkpointer: Any = None) -> CompiledStateGraph[TriageState, Context, TriageInput, TriageOutput]:
    return build_triage_graph().compile(checkpointer=checkpointer, name="triage")
