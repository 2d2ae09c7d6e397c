"""Scenario 1, triage: check the waiting queue, alert on long waits, create a session starting
now with a patient (guest) and a clinician (host) link, and reply with the entry URLs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import (
    Annotated,
    Any,
    NotRequired,  # pydantic needs it on Python < 3.12 (graph JSON schemas)
)

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
    CallOutcome,
    Held,
    RetryState,
    allow_only,
    default_ids,
    fill_ids,
    filled,
    hold_arguments,
    make_act_node,
    settled,
    wait_and_retry,
)
from graphs.planning import invalid_call_answers, invoke_model, llm_plan, rules_message, tool_call
from graphs.queue import QueueSummary, alert_lines, summarize_queue
from prompts import load_prompt
from tools.catalog import ToolSpec
from tools.errors import (
    ModelConfigError,
    ModelFailedError,
    RunInputError,
    ToolArgumentError,
    TrutoError,
    for_person,
    is_bad_input,
)
from tools.textsafety import has_unsafe_chars
from tools.timeparse import iso_z, parse_time

log = logging.getLogger(__name__)

QUEUE_TOOL = "list_all_coviu_waiting_queue_calls"
SESSION_TOOL = "create_a_coviu_session"
PARTICIPANT_TOOL = "create_a_coviu_participant"
UNIQUE_ENTRY_FLAG = "session;enforce-participant-uniqueness"
MAX_SESSION_CREATES = 2  # the first try, and one more with the start moved forward (clock skew)
MAX_PLAN_STEPS = 8
MAX_MODEL_CORRECTIONS = 2  # turns whose tool calls were not valid JSON, answered with the error; then the rules finish
NEW_SESSION_ID = "(the new session's id)"  # a dry run's participants: the session it would have created


REQUIRED_TOOLS = (QUEUE_TOOL, SESSION_TOOL, PARTICIPANT_TOOL)
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


class TriageState(TypedDict):
    """Triage's state: ids, queue facts, the session, its participants, retry bookkeeping.

    `prepare` (the first node) sets every key but `messages` for each run, so the nodes after it read them directly;
    `prepare` itself reads the request with `.get` (a key may not be there yet). A request's inputs are reset to
    None when the run ends (`respond`), so the next request of a chat thread starts from its own.
    """

    messages: NotRequired[Annotated[list[AnyMessage], add_messages]]
    team_id: str
    waiting_queue_id: str
    patient_name: str
    host_name: str
    duration_minutes: int
    wait_threshold_minutes: float
    dry_run: bool
    planned_calls: list[dict[str, Any]] | None  # a dry run's planned calls; None: not a dry run
    queue: QueueSummary | None
    alerts: list[str]
    session: dict[str, Any] | None
    participants: list[dict[str, Any]]
    reply: NotRequired[str]  # set by `respond`
    failure: str | None
    last_error: str | None
    last_error_status: int | None  # the HTTP status of the last failed call (None: not an HTTP error)
    last_error_note: str | None  # the last failed call said for a person (which setting, which value)
    last_error_input: bool | None  # the last failure was our input: an invalid or unknown id (exit 2)
    session_creates: int
    participant_errors: int
    plan_steps: int
    refusals: int
    known_sessions: dict[str, dict[str, Any]]
    retry: RetryState
    planned_session: dict[str, Any] | None  # the session call this step's plan holds to (name, start, end, flags)
    model_corrections: int
    planner: str
    planner_note: str | None


# Keys `prepare` sets that an earlier version's did not (2026-12-07): a thread it checkpointed resumes with these at
# the values that version behaved by (`graphs.nodes.filled`, in each node after `prepare` that reads them).
# Remove after 2027-03-01 (the entries, with their test in tests/test_state_store_upgrades.py).
ADDED_KEYS: dict[str, Callable[[], Any]] = {
    "model_corrections": lambda: 0,
    "planner_note": lambda: None,
    "planned_session": lambda: None,
}


def session_start(now: datetime, extra_minutes: int = 0) -> datetime:
    """The first whole minute at least 30 s ahead (Coviu refuses a start in the past)."""
    ahead = now + timedelta(seconds=30)
    start = ahead.replace(second=0, microsecond=0)
    if start < ahead:
        start += timedelta(minutes=1)
    return start + timedelta(minutes=extra_minutes)


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


def _session_args(state: TriageState, now: datetime) -> dict[str, Any]:
    start = session_start(now, extra_minutes=state["session_creates"])
    end = start + timedelta(minutes=state["duration_minutes"])
    return {
        "session_name": f"Triage – {state['patient_name']}",
        "start_time": iso_z(start),
        "end_time": iso_z(end),
        "feature_flags": [UNIQUE_ENTRY_FLAG],
    }


def rules_plan(state: TriageState, now: datetime) -> AIMessage:
    """The deterministic planner: queue, then session, then the missing participants."""
    if state["queue"] is None:
        return rules_message([tool_call(QUEUE_TOOL, {}, tag="queue")])
    if not state["session"]:
        return rules_message([tool_call(SESSION_TOOL, _session_args(state, now), tag="session")])
    have = {p["role"] for p in state["participants"]}
    calls = []
    if "guest" not in have:
        calls.append(tool_call(PARTICIPANT_TOOL, {"display_name": state["patient_name"], "role": "guest"}, tag="guest"))
    if "host" not in have:
        calls.append(tool_call(PARTICIPANT_TOOL, {"display_name": state["host_name"], "role": "host"}, tag="host"))
    return rules_message(calls)


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


def missing_steps(state: TriageState) -> list[str]:
    """The required steps a triage has not done yet: the queue check, the session, the patient's and the
    clinician's links."""
    missing = []
    if state["queue"] is None:
        missing.append("the queue check")
    if not state["session"]:
        missing.append("the session")
    have = {p.get("role") for p in state["participants"]}
    missing.extend(
        f"the {label} link" for role, label in (("guest", "patient's"), ("host", "clinician's")) if role not in have
    )
    return missing


def created(state: TriageState) -> str:
    """What this triage created on the server (ids only), for a failure's message."""
    parts = []
    session = state["session"]
    if session:
        parts.append(f"session {session.get('session_id')}")
    parts.extend(f"{p.get('role')} participant {p.get('participant_id')}" for p in state["participants"])
    return ", ".join(parts) or "nothing"


def held_arguments(spec: ToolSpec, arguments: Mapping[str, Any], state: TriageState) -> Held | None:
    """What triage holds, whichever planner asked: the session is the one this step planned (its name from the
    patient's, its times from now and the given duration), each link carries the given name for its role on this
    triage's session. A second session or a second link for a role is not sent."""
    if spec.name == SESSION_TOOL:
        session = state["session"]
        if session:
            return Held(
                refusal=f"Already done: this triage's session {session.get('session_id')} exists; do not create "
                "another. Create the participants on it."
            )
        planned = state["planned_session"]
        return Held(values=dict(planned), whole=True) if planned else None
    if spec.name == PARTICIPANT_TOOL:
        role = str(arguments.get("role") or "").strip().lower()
        names = {"guest": state["patient_name"], "host": state["host_name"]}
        if role not in names:
            return Held(
                refusal="Invalid arguments, nothing was sent: role must be 'guest' (the patient) or 'host' (the "
                "clinician). Call the tool again."
            )
        if any(p.get("role") == role for p in state["participants"]):
            return Held(refusal=f"Already done: this triage's {role} link exists; do not create another.")
        session_id = (state["session"] or {}).get("session_id")
        if not session_id:
            return Held(refusal="Not sent: create the session first, then its participants.")
        return Held(values={"session_id": session_id, "display_name": names[role], "role": role}, whole=True)
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


def planned_writes(services: Services, state: TriageState, message: AIMessage) -> list[dict[str, Any]]:
    """In a dry run: when this step asks for any write, every call of the step exactly as the run would send it
    (held values and ids filled, arguments validated), then the links the run would create next (held to the given
    names, on the new session). Empty when the step only reads."""
    executor = services.toolbox.executor
    specs = {
        str(c.get("name")): executor.spec(str(c.get("name")))
        for c in message.tool_calls
        if c.get("name") in executor.catalog
    }
    if all(spec.is_read_only for spec in specs.values()) and len(specs) == len(message.tool_calls):
        return []
    ids = default_ids(state)
    view = state.copy()
    planned: list[dict[str, Any]] = []
    for call in message.tool_calls:
        name = str(call.get("name"))
        spec = specs.get(name)
        entry: dict[str, Any] = {"tool": name, "args": dict(call.get("args") or {})}
        if spec is None:
            entry["error"] = f"no tool named {name!r} in this account's catalog"
            planned.append(entry)
            continue
        entry["method"] = spec.method
        held = held_arguments(spec, entry["args"], view)
        if held is not None and held.refusal:
            entry["error"] = held.refusal
            planned.append(entry)
            continue
        entry["args"] = fill_ids(spec, hold_arguments(spec, entry["args"], held, str(call.get("id", ""))), ids)
        try:
            spec.validate(entry["args"])
        except ToolArgumentError as exc:
            entry["error"] = str(exc)
        planned.append(entry)
        if "error" in entry:
            continue
        if name == SESSION_TOOL:
            view["session"] = {"session_id": NEW_SESSION_ID}
            ids = {**ids, "session_id": NEW_SESSION_ID}
        elif name == PARTICIPANT_TOOL:
            view["participants"] = [*view["participants"], {"role": entry["args"].get("role")}]
    if view["session"] and PARTICIPANT_TOOL in executor.catalog:
        spec = executor.spec(PARTICIPANT_TOOL)
        have = {p.get("role") for p in view["participants"]}
        for role in ("guest", "host"):
            held = held_arguments(spec, {"role": role}, view)
            if role in have or held is None or held.refusal:
                continue
            args = fill_ids(spec, hold_arguments(spec, {"role": role}, held), ids)
            planned.append({"tool": PARTICIPANT_TOOL, "args": args, "method": "create", "after": SESSION_TOOL})
    return planned


def on_result(outcome: CallOutcome, state: TriageState, services: Services) -> dict[str, Any]:
    """Write what a tool call produced back into triage's state."""
    spec = outcome.spec
    status = outcome.error.status_code if isinstance(outcome.error, TrutoError) else None
    failed: dict[str, Any] = {
        "last_error": outcome.text,
        "last_error_status": status,
        "last_error_note": for_person(outcome.error) if outcome.error is not None else outcome.text,
        "last_error_input": is_bad_input(outcome.error),
    }
    if spec is None or outcome.extra.get("held"):  # no such tool, or a call the graph did not send (Held)
        return failed
    if outcome.kind != "ok":
        update: dict[str, Any] = dict(failed)
        if spec.resource == "sessions" and spec.method == "create":
            update["session_creates"] = state["session_creates"] + 1
        if spec.resource == "participants" and spec.method == "create":
            update["participant_errors"] = state["participant_errors"] + 1
        return update
    result = outcome.result if isinstance(outcome.result, Mapping) else {}
    if spec.resource == "waiting_queue_calls" and spec.method == "list":
        calls = outcome.result.get("result", []) if isinstance(outcome.result, Mapping) else outcome.result
        threshold = state["wait_threshold_minutes"]
        summary = summarize_queue(calls or [], services.clock.now(), threshold)
        log.info("queue: %d waiting, %d over %g min", summary["waiting"], len(summary["over_threshold"]), threshold)
        return {
            "queue": summary,
            "alerts": alert_lines(summary, threshold),
            "last_error": None,
            "last_error_status": None,
        }
    if spec.resource == "sessions" and spec.method == "create":
        if result.get("session_id") in (None, ""):
            # Coviu said yes without the session's id: no links can be made on it, and it is never created again
            note = (
                "Coviu's answer to creating the session had no session_id: it may exist without links; check the "
                "team's sessions starting now in Coviu"
            )
            log.warning("session create answered without its session_id")
            return {
                "last_error": note,
                "last_error_status": None,
                "last_error_note": note,
                "session_creates": MAX_SESSION_CREATES,
            }
        session = {k: result.get(k) for k in ("session_id", "session_name", "start_time", "end_time")}
        log.info("session created: %s", session["session_id"])
        return {
            "session": session,
            "last_error": None,
            "last_error_status": None,
            "session_creates": state["session_creates"] + 1,
        }
    if spec.resource == "participants" and spec.method == "create":
        role = str(result.get("role", outcome.arguments.get("role", ""))).lower()
        unread = [k for k in ("participant_id", "entry_url") if result.get(k) in (None, "")]
        if unread:
            # Coviu said yes without the link (or its id): no link we can show exists; never created again (a
            # second link for the role), the run stops naming it
            note = (
                f"Coviu's answer to creating the {role} link had no {' or '.join(unread)} (participant "
                f"{result.get('participant_id') or 'id unknown'}): no link to show; check the session in Coviu"
            )
            log.warning("participant create answered without %s (%s)", ", ".join(unread), role)
            return {"last_error": note, "last_error_status": None, "last_error_note": note, "participant_errors": 2}
        participant = {
            "role": str(result.get("role", outcome.arguments.get("role", ""))).lower(),
            "display_name": result.get("display_name"),
            "participant_id": result.get("participant_id"),
            "entry_url": result.get("entry_url"),
        }
        log.info("participant created: %s (%s)", participant["participant_id"], participant["role"])
        others = [p for p in state["participants"] if p["role"] != participant["role"]]
        return {"participants": [*others, participant], "last_error": None, "last_error_status": None}
    return {}


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
    builder.add_node("act", act, input_schema=TriageState, destinations=("plan", "wait_and_retry"))  # type: ignore[call-overload]
    builder.add_node("wait_and_retry", wait_and_retry, destinations=("act",))
    builder.add_node("respond", respond)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "plan")
    builder.add_edge("respond", END)
    return builder


def compile_triage(checkpointer: Any = None) -> CompiledStateGraph[TriageState, Context, TriageInput, TriageOutput]:
    return build_triage_graph().compile(checkpointer=checkpointer, name="triage")
