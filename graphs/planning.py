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
