"""Triage's calls: its state, the rules' plan (queue, session, links), what the graph holds each call to
(whichever planner asked), a dry run's planned writes, and what each call's result writes back into the state.

The graph's nodes (`prepare`, `plan`, `respond`), reading its input and its builder are in `graphs/triage.py`, which
re-exports these names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import (
    Annotated,
    Any,
    NotRequired,  # pydantic needs it on Python < 3.12 (graph JSON schemas)
)

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from graphs.context import Services
from graphs.nodes import (
    CallOutcome,
    Held,
    RetryState,
    default_ids,
    fill_ids,
    hold_arguments,
)
from graphs.planning import rules_message, tool_call
from graphs.queue import QueueSummary, alert_lines, summarize_queue
from tools.catalog import ToolSpec
from tools.errors import (
    ToolArgumentError,
    TrutoError,
    for_person,
    is_bad_input,
)
from tools.timeparse import iso_z

# triage's logger: what its calls created is said under the same name as the rest of the triage
log = logging.getLogger("graphs.triage")

QUEUE_TOOL = "list_all_coviu_waiting_queue_calls"
SESSION_TOOL = "create_a_coviu_session"
PARTICIPANT_TOOL = "create_a_coviu_participant"
UNIQUE_ENTRY_FLAG = "session;enforce-participant-uniqueness"
MAX_SESSION_CREATES = 2  # the first try, and one more with the start moved forward (clock skew)
NEW_SESSION_ID = "(the new session's id)"  # a dry run's participants: the session it would have created


REQUIRED_TOOLS = (QUEUE_TOOL, SESSION_TOOL, PARTICIPANT_TOOL)


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
