"""The assistant: a ReAct loop with every catalog tool bound to the LLM, made safe for a clinic.

plan (LLM) → approve (a human approves anything destructive) → the shared act → plan, bounded per request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs import context as ctx
from graphs.context import Context, Services, resolve_services
from graphs.nodes import (
    MAX_REFUSALS,
    CallOutcome,
    RetryState,
    default_ids,
    fill_ids,
    make_act_node,
    pending_tool_calls,
    settled,
    wait_and_retry,
)
from graphs.planning import llm_plan
from prompts import load_prompt
from tools.errors import UnknownToolError

log = logging.getLogger(__name__)

NOT_APPROVED = "Not approved by the user"


class AssistantInput(TypedDict, total=False):
    """What a caller gives the assistant: the conversation (a LangGraph server sends just this)."""

    messages: Annotated[list[AnyMessage], add_messages]


class AssistantState(TypedDict, total=False):
    """The conversation plus per-request bookkeeping (bounds, approvals, refusals, retries)."""

    messages: Annotated[list[AnyMessage], add_messages]
    team_id: str | None
    waiting_queue_id: str | None
    collection_id: str | None
    session_id: str | None  # the last session this conversation created ("that session")
    approved: list[str]  # tool-call ids a human approved in this request
    model_calls: int
    refusals: int
    last_refusal: str | None
    known_sessions: dict[str, dict[str, Any]]
    retry: RetryState


class PendingAction(TypedDict):
    """One destructive call waiting for a human's yes or no (the interrupt's payload)."""

    call_id: str
    tool: str
    arguments: dict[str, Any]
    action: str


def approval_granted(answer: Any) -> bool:
    """The resume value: `{"approved": true}` (or a bare bool). Anything else means no."""
    if isinstance(answer, Mapping):
        return answer.get("approved") is True
    return answer is True


def _is_approved(state: Mapping[str, Any], call_id: str) -> bool:
    return call_id in (state.get("approved") or [])


def _action_text(name: str, spec_description: str, arguments: Mapping[str, Any]) -> str:
    first = spec_description.split(". ")[0].rstrip(".") if spec_description else name
    target = arguments.get("id")
    return f"{first} ({target})" if target else first


def destructive_calls(services: Services, state: Mapping[str, Any]) -> list[PendingAction]:
    """Pending destructive calls of the last model turn that nobody approved yet, with the ids that will be sent."""
    _, calls = pending_tool_calls(list(state.get("messages", [])))
    approved = set(state.get("approved") or [])
    ids = default_ids(state)
    out: list[PendingAction] = []
    for call in calls:
        call_id = str(call.get("id"))
        try:
            spec = services.toolbox.executor.spec(str(call.get("name")))
        except UnknownToolError:
            continue  # act answers it with an error; nothing is sent
        if not spec.is_destructive or call_id in approved:
            continue
        arguments = fill_ids(spec, call.get("args") or {}, ids)
        out.append(
            PendingAction(
                call_id=call_id,
                tool=spec.name,
                arguments=arguments,
                action=_action_text(spec.name, spec.description, arguments),
            )
        )
    return out


async def prepare(state: AssistantState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ids from context and settings; per-request bounds start from zero."""
    services = await resolve_services(runtime.context)
    return {
        "team_id": ctx.team_id(runtime.context, services),
        "waiting_queue_id": ctx.waiting_queue_id(runtime.context, services),
        "collection_id": ctx.collection_id(runtime.context, services),
        "approved": [],
        "model_calls": 0,
        "refusals": 0,
        "last_refusal": None,
        "known_sessions": {},  # facts for the temporal guards are re-read in each request, never stale
        "retry": settled(state.get("retry")),
    }


def system_prompt(state: Mapping[str, Any], services: Services, now: datetime) -> str:
    local = now.astimezone(services.zone)
    return load_prompt(
        "assistant",
        now=local.isoformat(timespec="seconds"),
        weekday=local.strftime("%A %d %B %Y"),
        timezone=services.zone.key,
        example_time=local.replace(hour=10, minute=0, second=0, microsecond=0).isoformat(),
        team_id=state.get("team_id") or "not set",
        waiting_queue_id=state.get("waiting_queue_id") or "not set",
        collection_id=state.get("collection_id") or "not set",
    )


def _with_call_ids(message: AIMessage) -> AIMessage:
    """Every tool call needs an id (its ToolMessage answers it); a few servers omit them."""
    if all(call.get("id") for call in message.tool_calls):
        return message
    calls = [{**call, "id": call.get("id") or f"call_{uuid.uuid4().hex[:16]}"} for call in message.tool_calls]
    return message.model_copy(update={"tool_calls": calls})


async def plan(state: AssistantState, runtime: Runtime[Context]) -> Command[Any]:
    """One model call with every tool bound, unless a bound says stop (then a clear final answer)."""
    services = await resolve_services(runtime.context)
    if int(state.get("refusals", 0)) >= MAX_REFUSALS:
        refusal = state.get("last_refusal") or "a write was refused twice"
        return Command(goto=END, update={"messages": [AIMessage(content=f"I stopped here. {refusal}")]})
    calls = int(state.get("model_calls", 0))
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
    message = _with_call_ids(await llm_plan(services, system, state.get("messages", [])))
    update: dict[str, Any] = {"messages": [message], "model_calls": calls + 1}
    if message.tool_calls:
        log.info("model asked for %s", ", ".join(str(c.get("name")) for c in message.tool_calls))
        return Command(goto="approve", update=update)
    return Command(goto=END, update=update)


async def approve(state: AssistantState, runtime: Runtime[Context]) -> Command[Any]:
    """Destructive calls wait for a human: one interrupt for all of them; a no answers them with an error."""
    services = await resolve_services(runtime.context)
    pending = destructive_calls(services, state)
    if not pending:
        return Command(goto="act")
    answer = interrupt(
        {
            "question": "Approve these irreversible actions?",
            "pending": pending,
            "resume": {"approved": True},
        }
    )
    ids = [p["call_id"] for p in pending]
    if approval_granted(answer):
        log.info("approved by the user: %s", ", ".join(p["tool"] for p in pending))
        return Command(goto="act", update={"approved": [*(state.get("approved") or []), *ids]})
    log.info("not approved by the user: %s", ", ".join(p["tool"] for p in pending))
    rejected = [
        ToolMessage(
            content=f"{NOT_APPROVED}: {p['tool']} was not sent. Do not retry it; tell the user it was not done.",
            tool_call_id=p["call_id"],
            name=p["tool"],
            status="error",
        )
        for p in pending
    ]
    _, calls = pending_tool_calls(list(state.get("messages", [])))
    others = [c for c in calls if str(c.get("id")) not in ids]
    return Command(goto="act" if others else "plan", update={"messages": rejected})


def on_result(outcome: CallOutcome, state: Mapping[str, Any], services: Services) -> dict[str, Any]:
    """Remember refusals (for the stop rule) and the session this conversation created."""
    if outcome.kind == "refused":
        return {"last_refusal": outcome.text}
    spec = outcome.spec
    if (
        outcome.kind == "ok"
        and spec is not None
        and spec.resource == "sessions"
        and spec.method == "create"
        and isinstance(outcome.result, Mapping)
        and outcome.result.get("session_id")
    ):
        return {"session_id": str(outcome.result["session_id"])}
    return {}


def build_act_node() -> Any:
    """The shared act node as the assistant uses it: destructive calls only with a recorded approval."""
    return make_act_node(on_result=on_result, after="plan", ids_from_state=default_ids, approved=_is_approved)


def build_assistant_graph() -> StateGraph[AssistantState, Context, AssistantInput, AssistantState]:
    """The assistant builder; compile it with a checkpointer (approvals interrupt the run)."""
    builder = StateGraph(AssistantState, context_schema=Context, input_schema=AssistantInput)
    builder.add_node("prepare", prepare)
    builder.add_node("plan", plan, destinations=("approve", END))
    builder.add_node("approve", approve, destinations=("act", "plan"))
    builder.add_node("act", build_act_node(), destinations=("plan", "wait_and_retry"))
    builder.add_node("wait_and_retry", wait_and_retry, destinations=("act",))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "plan")
    return builder


def compile_assistant(
    checkpointer: Any = None,
) -> CompiledStateGraph[AssistantState, Context, AssistantInput, AssistantState]:
    return build_assistant_graph().compile(checkpointer=checkpointer, name="assistant")
