"""Planners: the LLM with Truto's tools bound, or deterministic rules; both emit AIMessage tool calls.

Whichever plans, the same `act` node executes, so the rules path exercises the LLM path's machinery.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, SystemMessage, ToolMessage

from graphs.context import Services

TOOL_MESSAGE_CAP = 8000


def tool_call(name: str, args: dict[str, Any], *, tag: str = "") -> dict[str, Any]:
    """A tool call as the rules planner writes it (same shape as a model's)."""
    return {"name": name, "args": args, "id": f"rules_{tag or name}_{uuid.uuid4().hex[:12]}", "type": "tool_call"}


def rules_message(calls: list[dict[str, Any]], text: str = "") -> AIMessage:
    return AIMessage(content=text, tool_calls=calls)


def _capped(messages: Sequence[AnyMessage]) -> list[AnyMessage]:
    """Tool results are capped before any model sees them (they are already compact JSON)."""
    out: list[AnyMessage] = []
    for message in messages:
        if (
            isinstance(message, ToolMessage)
            and isinstance(message.content, str)
            and len(message.content) > TOOL_MESSAGE_CAP
        ):
            cut = len(message.content) - TOOL_MESSAGE_CAP
            message = message.model_copy(
                update={"content": message.content[:TOOL_MESSAGE_CAP] + f"…[cut: {cut} characters not shown]"}
            )
        out.append(message)
    return out


def invalid_call_answers(message: AIMessage) -> list[ToolMessage]:
    """An error answer for each tool call of the model's turn whose arguments were not valid JSON (LangChain keeps
    them in `invalid_tool_calls`, not `tool_calls`): nothing was sent; the model may correct the call."""
    answers = []
    for call in message.invalid_tool_calls:
        name = str(call.get("name") or "?")
        answers.append(
            ToolMessage(
                content=f"Invalid arguments, nothing was sent: the arguments of {name} were not valid JSON "
                f"({str(call.get('error') or 'could not be parsed')[:200]}). Call the tool again with valid JSON.",
                tool_call_id=str(call.get("id") or f"invalid_{uuid.uuid4().hex[:12]}"),
                name=name,
                status="error",
            )
        )
    return answers


async def llm_plan(
    services: Services,
    system_prompt: str,
    messages: Sequence[AnyMessage],
    tool_names: list[str] | None = None,
) -> AIMessage:
    """One model call with the account's tools bound."""
    if services.model is None:
        raise RuntimeError("the LLM planner needs a model (set OPENAI_API_KEY)")
    tools = services.toolbox.executor.langchain_tools(tool_names)
    bound = services.model.bind_tools(tools) if tools else services.model
    reply = await bound.ainvoke([SystemMessage(content=system_prompt), *_capped(messages)])
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=str(getattr(reply, "content", reply)))
    return reply
