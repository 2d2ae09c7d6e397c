"""The assistant: a ReAct loop with the catalog tools a request needs bound to the LLM, made safe for a clinic.

plan (LLM) → screen (a change that validation or the temporal guards would refuse is answered to the model as
refused, never shown to a person) → approve (a human approves every other call that is not a list/get, bound to its
exact arguments) → the shared act → plan, bounded per request.

Every call the model asks for ends as one entry of `outcomes` (done, refused, rejected, failed, not_attempted),
written from the tool results, never from the model's text: `coviu-agent ask` prints these and exits by them.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import (
    Annotated,
    Any,
    NotRequired,  # pydantic needs it on Python < 3.12 (graph JSON schemas)
)

from langchain.agents.middleware.human_in_the_loop import ActionRequest, DecisionType, HITLRequest, ReviewConfig
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from graphs import context as ctx
from graphs.context import Context, Services, resolve_services
from graphs.nodes import (
    MAX_REFUSALS,
    UNAPPROVED,
    ApprovalGate,
    CallOutcome,
    RetryState,
    call_fingerprint,
    default_ids,
    fill_ids,
    filled,
    make_act_node,
    pending_tool_calls,
    precheck_call,
    settled,
    wait_and_retry,
)
from graphs.planning import llm_plan
from prompts import load_prompt
from tools.binding import MORE_TOOLS, bind_order, requested_tools, select_tools
from tools.catalog import ToolSpec
from tools.errors import ToolArgumentError, TrutoError, UnknownToolError

log = logging.getLogger(__name__)

NOT_APPROVED = "Not approved by the user"


class AssistantInput(TypedDict, total=False):
    """What a caller gives the assistant: the conversation (a LangGraph server sends just this)."""

    messages: Annotated[list[AnyMessage], add_messages]


class AssistantOutput(TypedDict, total=False):
    """What a run returns: the conversation (its last AI message is the answer) and the session it created, if any.

    A run that stops for approval returns the conversation so far; the pending request is the interrupt.
    """

    messages: Annotated[list[AnyMessage], add_messages]
    session_id: str | None
    outcomes: list[dict[str, Any]]


class AssistantState(TypedDict):
    """The conversation plus per-request bookkeeping (bounds, approvals, refusals, retries).

    `prepare` (the first node of each request) sets every key but `messages` and `session_id`, so the nodes after
    it read them directly.
    """

    messages: NotRequired[Annotated[list[AnyMessage], add_messages]]
    team_id: str | None
    waiting_queue_id: str | None
    collection_id: str | None
    session_id: NotRequired[str | None]  # the last session this conversation created ("that session")
    approvals: list[str]  # fingerprints of exact calls a human approved in this request, each used once
    model_calls: int
    refusals: int
    last_refusal: str | None
    known_sessions: dict[str, dict[str, Any]]
    retry: RetryState
    outcomes: list[dict[str, Any]]  # one entry per call the model asked for in this request (`action_outcome`)
    tools: list[str] | None  # the tools bound for this request (tools/binding.py); None: every one


# Keys `prepare` sets that an earlier version's did not (2026-12-07): a thread it checkpointed (e.g. waiting for an
# approval) resumes with these at the values that version behaved by (`graphs.nodes.filled`, in each node after
# `prepare` that reads them): no outcomes recorded yet, every tool bound.
# Remove after 2027-03-01 (the entries, with their test in tests/test_state_store_upgrades.py).
ADDED_KEYS: dict[str, Callable[[], Any]] = {"outcomes": list, "tools": lambda: None}


APPROVALS = ApprovalGate()  # anything but list/get, including custom methods, waits for a human
ALLOWED_DECISIONS: list[DecisionType] = ["approve", "edit", "reject"]


@dataclass(frozen=True)
class PendingCall:
    """One call waiting for a human: the model's call, its tool, the arguments that will be sent, their fingerprint."""

    call: dict[str, Any]
    spec: ToolSpec
    arguments: dict[str, Any]
    fingerprint: str

    def request(self) -> ActionRequest:
        return ActionRequest(
            name=self.spec.name, args=self.arguments, description=_action_text(self.spec, self.arguments)
        )


def _action_text(spec: ToolSpec, arguments: Mapping[str, Any]) -> str:
    first = spec.description.split(". ")[0].rstrip(".") if spec.description else spec.name
    target = arguments.get("id")
    text = f"{first} ({target})" if target else first
    return f"{text}: {spec.name} ({spec.method} {spec.resource})"


def calls_needing_approval(services: Services, state: AssistantState) -> list[PendingCall]:
    """Calls of the last model turn that need a human and have no unused approval, with what will be sent."""
    _, calls = pending_tool_calls(list(state.get("messages", [])))
    granted = Counter(APPROVALS.granted(state))
    ids = default_ids(state)
    out: list[PendingCall] = []
    for call in calls:
        try:
            spec = services.toolbox.executor.spec(str(call.get("name")))
        except UnknownToolError:
            continue  # act answers it with an error; nothing is sent
        if not APPROVALS.needs(spec):
            continue
        arguments = fill_ids(spec, call.get("args") or {}, ids)
        fingerprint = call_fingerprint(spec.name, arguments)
        if granted[fingerprint] > 0:
            granted[fingerprint] -= 1
            continue
        out.append(PendingCall(call, spec, arguments, fingerprint))
    return out


def approval_request(pending: list[PendingCall]) -> HITLRequest:
    """The interrupt's payload, in LangChain's HumanInTheLoopMiddleware format (Studio and Agent Chat UI render it)."""
    names = list(dict.fromkeys(p.spec.name for p in pending))
    return HITLRequest(
        action_requests=[p.request() for p in pending],
        review_configs=[ReviewConfig(action_name=n, allowed_decisions=list(ALLOWED_DECISIONS)) for n in names],
    )


class DecisionError(ValueError):
    """A resume value that is not one decision per pending action."""


# The keys each of LangChain's HITL decision types takes.
DECISION_KEYS = {"approve": ("type",), "edit": ("type", "edited_action"), "reject": ("type", "message")}


def check_decision(index: int, decision: Any) -> dict[str, Any]:
    """One decision of LangChain's HITL types: `{"type": "approve"}`, `{"type": "edit", "edited_action": {"name": str,
    "args": object}}` or `{"type": "reject"}` with an optional string `message`. DecisionError names what is wrong."""
    where = f"decisions[{index}]"
    if not isinstance(decision, Mapping):
        raise DecisionError(f"{where}: expected an object with a type (approve, edit or reject)")
    kind = decision.get("type")
    if kind not in ALLOWED_DECISIONS:
        raise DecisionError(f"{where}.type: expected approve, edit or reject, got {kind!r}")
    # a key the type does not take is something the user meant (an edit under an approve): never dropped
    extra = sorted(str(k) for k in decision if k not in DECISION_KEYS[str(kind)])
    if extra:
        takes = ", ".join(DECISION_KEYS[str(kind)])
        raise DecisionError(f"{where}.{extra[0]}: {kind} takes only {takes} (give one type per decision)")
    if kind == "edit":
        action = decision.get("edited_action")
        if not isinstance(action, Mapping):
            raise DecisionError(f"{where}.edited_action: an edit needs the call, {{'name': str, 'args': object}}")
        unknown = sorted(str(k) for k in action if k not in ("name", "args"))
        if unknown:
            raise DecisionError(f"{where}.edited_action.{unknown[0]}: an edited call has only name and args")
        if not isinstance(action.get("name"), str) or not action["name"].strip():
            raise DecisionError(f"{where}.edited_action.name: expected the tool's name")
        if not isinstance(action.get("args"), Mapping):
            raise DecisionError(f"{where}.edited_action.args: expected an object of arguments")
    if kind == "reject" and not isinstance(decision.get("message", ""), str):
        raise DecisionError(f"{where}.message: expected a string")
    return dict(decision)


def parse_decisions(answer: Any, count: int) -> list[dict[str, Any]]:
    """`{"decisions": [...]}` (HITLResponse) or the bare list: one approve/edit/reject per action, in order."""
    decisions = answer.get("decisions") if isinstance(answer, Mapping) else answer
    if not isinstance(decisions, list) or len(decisions) != count:
        raise DecisionError(f"expected {count} decision(s) (approve, edit or reject), one per pending action")
    return [check_decision(i, d) for i, d in enumerate(decisions)]


async def prepare(state: AssistantState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ids from context and settings; per-request bounds start from zero."""
    services = await resolve_services(runtime.context)
    ids = ctx.run_ids(runtime.context, services)
    return {
        "team_id": ids.team_id,
        "waiting_queue_id": ids.waiting_queue_id,
        "collection_id": ids.collection_id,
        "approvals": [],
        "model_calls": 0,
        "refusals": 0,
        "last_refusal": None,
        "known_sessions": {},  # facts for the temporal guards are re-read in each request, never stale
        "retry": settled(state.get("retry")),
        "outcomes": [],
        "tools": request_tools(services, list(state.get("messages", []))),
    }


def request_tools(services: Services, history: list[AnyMessage]) -> list[str] | None:
    """The tools this request's words need, and those the conversation already used (tools/binding.py); None when
    every tool is bound (`Services.tool_selection == "all"`)."""
    if services.tool_selection == "all":
        return None
    text = next((str(m.content) for m in reversed(history) if isinstance(m, HumanMessage)), "")
    used = [str(c.get("name")) for m in history if isinstance(m, AIMessage) for c in m.tool_calls]
    return select_tools(services.toolbox.catalog, text, also=used)


def system_prompt(state: AssistantState, services: Services, now: datetime) -> list[str]:
    """The system prompt as two messages: the rules, the same for every request (a provider's prompt cache serves
    them with the tools), then this request's facts (now, the zone, the clinic's ids)."""
    local = now.astimezone(services.zone)
    facts = load_prompt(
        "assistant_facts",
        now=local.isoformat(timespec="seconds"),
        weekday=local.strftime("%A %d %B %Y"),
        timezone=services.zone.key,
        example_time=local.replace(hour=10, minute=0, second=0, microsecond=0).isoformat(),
        team_id=state["team_id"] or "not set",
        waiting_queue_id=state["waiting_queue_id"] or "not set",
        collection_id=state["collection_id"] or "not set",
    )
    return [load_prompt("assistant"), facts]


def _with_call_ids(message: AIMessage, history: list[AnyMessage]) -> AIMessage:
    """Every tool call gets an id of its own: a missing id, or one the model reused (from an earlier call or twice in
    this turn), is replaced, so a ToolMessage always answers exactly one call."""
    used = {str(c.get("id")) for m in history if isinstance(m, AIMessage) for c in m.tool_calls}
    used |= {m.tool_call_id for m in history if isinstance(m, ToolMessage)}
    calls = []
    for call in message.tool_calls:
        call_id = str(call.get("id") or "")
        if not call_id or call_id in used:
            call_id = f"call_{uuid.uuid4().hex[:16]}"
        used.add(call_id)
        calls.append({**call, "id": call_id})
    if [c["id"] for c in calls] == [c.get("id") for c in message.tool_calls]:
        return message
    return message.model_copy(update={"tool_calls": calls})


async def plan(state: AssistantState, runtime: Runtime[Context]) -> Command[Any]:
    """One model call with the request's tools bound, unless a bound says stop (then a clear final answer)."""
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    if state["refusals"] >= MAX_REFUSALS:
        refusal = state["last_refusal"] or "a write was refused twice"
        return Command(goto=END, update={"messages": [AIMessage(content=f"I stopped here. {refusal}")]})
    calls = state["model_calls"]
    if calls >= services.max_model_calls:
        text = (
            f"I stopped after {calls} model calls, the limit for one request, without a final answer. "
            "What was done so far is above; ask again with a narrower request."
        )
        return Command(goto=END, update={"messages": [AIMessage(content=text)]})
    if services.model is None:
        text = "The assistant needs an LLM: set OPENAI_API_KEY (and OPENAI_BASE_URL / COVIU_AGENT_MODEL if needed)."
        return Command(goto=END, update={"messages": [AIMessage(content=text)]})
    system = system_prompt(state, services, services.clock.now())
    history = list(state.get("messages", []))
    tools = state["tools"]
    reply = await llm_plan(services, system, history, tools, more_tools=tools is not None)
    message = _with_call_ids(reply, history)
    update: dict[str, Any] = {"messages": [message], "model_calls": calls + 1}
    if message.invalid_tool_calls:  # e.g. truncated JSON arguments: answered with the error, to be corrected
        message, answers, failed = _answer_invalid_calls(services, message)
        update["messages"] = [message, *answers]
        update["outcomes"] = [*state["outcomes"], *failed]
        if not message.tool_calls:
            return Command(goto="plan", update=update)  # the next model call counts toward the same bound
    if tools is not None and message.tool_calls:
        more, answered = _bind_more(services, message, tools)
        update["tools"] = more
        update["messages"] = [*update["messages"], *answered]
        if len(answered) == len(message.tool_calls):  # only `more_tools`: the next step has them
            return Command(goto="plan", update=update)
    if message.tool_calls:
        log.info("model asked for %s", ", ".join(str(c.get("name")) for c in message.tool_calls))
        return Command(goto="screen", update=update)
    return Command(goto=END, update=update)


def _bind_more(services: Services, message: AIMessage, tools: list[str]) -> tuple[list[str], list[ToolMessage]]:
    """Selection's fallback: each `more_tools` call binds the catalog tools it names from the next step on (answered
    here, never sent), and a catalog tool the model called without having it stays bound too (it runs as usual,
    through screen, approval and act)."""
    catalog = services.toolbox.catalog
    known = {spec.name for spec in catalog}
    bound = set(tools)
    answers: list[ToolMessage] = []
    for call in message.tool_calls:
        name = str(call.get("name"))
        if name != MORE_TOOLS:
            if name in known and name not in bound:
                log.info("selection missed %s: the model called it, bound from now on", name)
                bound.add(name)
            continue
        found, unknown = requested_tools(call.get("args") or {}, catalog)
        bound.update(found)
        text = f"Bound for your next step: {', '.join(found)}." if found else "No tool was bound."
        if unknown:
            text += f" Not tools of this clinic: {', '.join(unknown)}."
        log.info("the model asked for %d more tool(s): %s", len(found), ", ".join(found) or "none known")
        answers.append(ToolMessage(content=text, tool_call_id=str(call.get("id")), name=MORE_TOOLS))
    return bind_order(bound), answers


def _answer_invalid_calls(
    services: Services, message: AIMessage
) -> tuple[AIMessage, list[ToolMessage], list[dict[str, Any]]]:
    """Calls whose arguments could not be parsed: each gets an id, an error answer and a `failed` outcome."""
    fixed, answers, failed = [], [], []
    for raw in message.invalid_tool_calls:
        call_id = str(raw.get("id") or f"call_{uuid.uuid4().hex[:16]}")
        name = str(raw.get("name") or "unknown")
        fixed.append({**raw, "id": call_id})
        reason = (
            f"Invalid arguments, nothing was sent: the arguments of {name} are not a valid JSON object "
            f"({raw.get('error') or 'could not be parsed'}). Call the tool again with complete JSON arguments."
        )
        answers.append(ToolMessage(content=reason, tool_call_id=call_id, name=name, status="error"))
        try:
            spec: ToolSpec | None = services.toolbox.executor.spec(name)
        except UnknownToolError:
            spec = None
        failed.append({**action_entry(call_id, spec, {}, "failed", name=name, reason=reason), "sent": False})
    log.info("model sent %d call(s) with unparsable arguments: answered with the error", len(answers))
    return message.model_copy(update={"invalid_tool_calls": fixed}), answers, failed


async def approve(state: AssistantState, runtime: Runtime[Context]) -> Command[Any]:
    """Calls that need a human wait in one interrupt (HITLRequest); each decision binds to its exact call.

    approve: that call (tool + the arguments shown) may run once. edit: the edited call runs instead (approved as
    edited). reject: the call is answered with an error carrying the reviewer's message; nothing is sent.
    """
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    pending = calls_needing_approval(services, state)
    if not pending:
        return Command(goto="act")
    request = approval_request(pending)
    answer = interrupt(request)
    while True:
        try:
            decisions = parse_decisions(answer, len(pending))
            break
        except DecisionError as exc:
            # A malformed answer is an error, never a reject: nothing is decided, and the same request is asked
            # again with what was wrong (`error`), so the thread stays answerable and a correct answer then works.
            log.warning("approval answer not understood (%s): nothing decided, asked again", exc)
            answer = interrupt({**request, "error": f"the answer was not understood: {exc}"})
    ai_message, _ = pending_tool_calls(list(state.get("messages", [])))
    granted = APPROVALS.granted(state)
    rejected: list[ToolMessage] = []
    outcomes = list(state["outcomes"])
    edits: dict[str, dict[str, Any]] = {}
    for item, decision in zip(pending, decisions, strict=True):
        call_id = str(item.call.get("id"))
        if decision["type"] == "approve":
            granted.append(item.fingerprint)
        elif decision["type"] == "edit":
            action = decision["edited_action"]
            name, args = str(action["name"]), dict(action.get("args") or {})
            edits[call_id] = {**item.call, "name": name, "args": args}
            try:
                spec = services.toolbox.executor.spec(name)
            except UnknownToolError:
                continue  # act answers the edited call with an error
            granted.append(call_fingerprint(spec.name, fill_ids(spec, args, default_ids(state))))
        else:
            reason = str(decision.get("message") or "").strip()
            outcomes.append(
                action_entry(call_id, item.spec, item.arguments, "rejected", reason=reason or "rejected by the user")
            )
            rejected.append(
                ToolMessage(
                    content=f"{NOT_APPROVED}: {item.spec.name} was not sent."
                    + (f" The user said: {reason}" if reason else "")
                    + " Do not retry it; tell the user it was not done.",
                    tool_call_id=call_id,
                    name=item.spec.name,
                    status="error",
                )
            )
    kinds = Counter(str(d["type"]) for d in decisions)
    log.info("approval decisions: %s", ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    update: dict[str, Any] = {"approvals": granted, "messages": [], "outcomes": outcomes}
    if edits and ai_message is not None:
        calls = [edits.get(str(c.get("id")), dict(c)) for c in ai_message.tool_calls]
        update["messages"].append(ai_message.model_copy(update={"tool_calls": calls}))
    update["messages"].extend(rejected)
    _, calls_left = pending_tool_calls(list(state.get("messages", [])))
    answered = {m.tool_call_id for m in rejected}
    others = [c for c in calls_left if str(c.get("id")) not in answered]
    return Command(goto="act" if others else "plan", update=update)


def action_entry(
    call_id: str,
    spec: ToolSpec | None,
    arguments: Mapping[str, Any],
    status: str,
    *,
    name: str = "",
    reason: str = "",
    result: Any = None,
) -> dict[str, Any]:
    """One outcome: the call (tool, arguments, whether it changes the account), its status and what came back.

    status: done (with the ids and entry URLs the server returned), refused (by Coviu or by the temporal guards
    that know Coviu's rules; `reason` is theirs), rejected (by the person), failed (`reason` is the error),
    not_attempted (waiting for approval, or never reached)."""
    entry: dict[str, Any] = {
        "call_id": call_id,
        "tool": spec.name if spec is not None else name,
        "change": bool(spec is not None and spec.needs_approval),
        "arguments": dict(arguments),
        "status": status,
    }
    if reason:
        entry["reason"] = reason
    if status == "done" and isinstance(result, Mapping):
        ids = {k: v for k, v in result.items() if k.endswith("_id") and isinstance(v, str | int)}
        if ids and entry["change"]:
            entry["ids"] = ids
        if isinstance(result.get("entry_url"), str):
            entry["entry_urls"] = [result["entry_url"]]
    return entry


COVIU_REFUSES = frozenset({400, 403, 405, 409, 422})  # Coviu (through Truto) said no to this exact request


def action_outcome(outcome: CallOutcome) -> dict[str, Any]:
    """The outcome entry of one executed (or stopped) call, from what the tool layer returned."""
    error = outcome.error
    if outcome.kind == "ok":
        status, reason = "done", ""
    elif outcome.kind == "refused":
        status = "not_attempted" if UNAPPROVED in outcome.text else "refused"
        reason = outcome.text
    elif isinstance(error, TrutoError) and error.status_code in COVIU_REFUSES:
        status, reason = "refused", error.describe()
    else:
        status, reason = "failed", outcome.text or type(error).__name__
    entry = action_entry(
        outcome.call_id,
        outcome.spec,
        outcome.arguments,
        status,
        name=outcome.name,
        reason=reason,
        result=outcome.result,
    )
    if isinstance(error, ToolArgumentError | UnknownToolError):
        entry["sent"] = False  # the model's call was invalid: answered with the error so it can correct it
    if isinstance(error, UnknownToolError):
        entry["unknown_tool"] = True
    return entry


def on_result(outcome: CallOutcome, state: AssistantState, services: Services) -> dict[str, Any]:
    """Record the call's outcome; remember refusals (for the stop rule) and the session this conversation created."""
    update: dict[str, Any] = {"outcomes": [*state["outcomes"], action_outcome(outcome)]}
    if outcome.kind == "refused":
        update["last_refusal"] = outcome.text
        return update
    spec = outcome.spec
    if (
        outcome.kind == "ok"
        and spec is not None
        and spec.resource == "sessions"
        and spec.method == "create"
        and isinstance(outcome.result, Mapping)
        and outcome.result.get("session_id")
    ):
        update["session_id"] = str(outcome.result["session_id"])
    return update


async def screen(state: AssistantState, runtime: Runtime[Context]) -> Command[Any]:
    """No approval for what cannot succeed: a change that validation or the temporal guards refuse is answered to
    the model now (refused, or the error to correct) and never shown to a person; the rest goes on to `approve`."""
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    ids = default_ids(state)
    known = dict(state["known_sessions"])
    answers: list[ToolMessage] = []
    outcomes = list(state["outcomes"])
    refusals = state["refusals"]
    last_refusal = state["last_refusal"]
    for item in calls_needing_approval(services, state):
        call_id = str(item.call.get("id"))
        stopped = await precheck_call(
            services, item.spec.name, item.call.get("args") or {}, call_id=call_id, ids=ids, known_sessions=known
        )
        if stopped is None or stopped.kind == "transient":  # a transient read in the guard: act retries it
            continue
        if stopped.kind == "refused":
            refusals += 1
            last_refusal = stopped.text
        log.info("%s %s before approval: not shown to a person", item.spec.name, stopped.kind)
        outcomes.append(action_outcome(stopped))
        answers.append(ToolMessage(content=stopped.text, tool_call_id=call_id, name=item.spec.name, status="error"))
    if not answers:
        return Command(goto="approve")
    _, calls = pending_tool_calls(list(state.get("messages", [])))
    answered = {m.tool_call_id for m in answers}
    left = [c for c in calls if str(c.get("id")) not in answered]
    update = {"messages": answers, "outcomes": outcomes, "refusals": refusals, "last_refusal": last_refusal}
    return Command(goto="approve" if left else "plan", update=update)


def build_act_node() -> Any:
    """The shared act node as the assistant uses it: guarded calls only with an unused approval of that exact call."""
    return make_act_node(
        on_result=on_result, after="plan", ids_from_state=default_ids, approved=APPROVALS, added=ADDED_KEYS
    )


def build_assistant_graph() -> StateGraph[AssistantState, Context, AssistantInput, AssistantOutput]:
    """The assistant builder; compile it with a checkpointer (approvals interrupt the run)."""
    builder = StateGraph(
        AssistantState, context_schema=Context, input_schema=AssistantInput, output_schema=AssistantOutput
    )
    builder.add_node("prepare", prepare)
    builder.add_node("plan", plan, destinations=("screen", "plan", END))
    builder.add_node("screen", screen, destinations=("approve", "plan"))
    builder.add_node("approve", approve, destinations=("act", "plan"))
    # act reads the whole state (ids, approvals): not only the keys its signature names
    builder.add_node("act", build_act_node(), input_schema=AssistantState, destinations=("plan", "wait_and_retry"))
    builder.add_node("wait_and_retry", wait_and_retry, destinations=("act",))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "plan")
    return builder


def compile_assistant(
    checkpointer: Any = None,
) -> CompiledStateGraph[AssistantState, Context, AssistantInput, AssistantOutput]:
    return build_assistant_graph().compile(checkpointer=checkpointer, name="assistant")
