"""Planners: the LLM with Truto's tools bound, or deterministic rules; both emit AIMessage tool calls.

Whichever plans, the same `act` node executes, so the rules path exercises the LLM path's machinery.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, SystemMessage, ToolMessage

from graphs.context import Services
from tools.binding import bind_order, compact_tool, more_tools_schema
from tools.errors import ModelFailedError, RateLimitBudgetError, model_failure
from tools.ratelimit import parse_retry_after, parse_retry_after_ms
from tools.retry import RetryPolicy

log = logging.getLogger(__name__)

TOOL_MESSAGE_CAP = 8000
# The model's 429s and 5xx/connection/timeouts are retried here (the openai SDK's own retries are off: agent/model.py),
# each wait claimed from the run's rate-limit wait budget, Retry-After honoured; then ModelFailedError (exit 3).
MODEL_RETRY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=30.0)


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


def _retry_after(exc: BaseException, services: Services) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    milliseconds = parse_retry_after_ms(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds
    return parse_retry_after(headers.get("retry-after"), services.clock.now())


def _timed_out(exc: BaseException) -> bool:
    """A model call that ended because no answer came in the client's timeout (LangChain's ModelTimeoutError)."""
    from langchain_core.exceptions import ModelTimeoutError

    return isinstance(exc, ModelTimeoutError)


async def invoke_model(services: Services, runnable: Any, prompt: Any, *, what: str) -> Any:
    """Every chat model call of every graph: 429, 5xx, connection failures and timeouts retried (MODEL_RETRY's
    attempts, each wait claimed from the run's wait budget, Retry-After honoured), then `ModelFailedError` (exit 3);
    a refused configuration is `ModelConfigError` (exit 2). Anything else propagates."""
    attempt = 0
    while True:
        started = services.clock.monotonic()
        try:
            return await runnable.ainvoke(prompt)
        except Exception as exc:
            # an attempt that timed out is time the run sat waiting on the model: claimed with the backoff, so a
            # model that never answers is bounded by the wait budget, not only by attempts x the client's timeout
            hung = services.clock.monotonic() - started if _timed_out(exc) else 0.0
            failure = model_failure(exc, what)
            if failure is None:
                raise
            attempt += 1
            if not getattr(exc, "is_retryable", False) or attempt >= MODEL_RETRY.max_attempts:
                if getattr(exc, "is_retryable", False):
                    raise ModelFailedError(f"{failure} (after {attempt} attempts)") from None
                raise failure from None
            delay = _retry_after(exc, services)
            delay = MODEL_RETRY.delay_for(exc, attempt) if delay is None else delay
            try:
                services.budget.claim(
                    hung + delay, services.clock, what=f"asking the model again ({what})", why=type(exc).__name__
                )
            except RateLimitBudgetError as budget:
                waited = f"after {hung:.0f} s without an answer, " if hung else ""
                raise ModelFailedError(
                    f"{failure}: {waited}waiting {delay:.0f} s more would exceed this run's {budget.budget:.0f} s wait "
                    "budget "
                    f"({budget.left:.0f} s left); allow longer waits with --max-wait / COVIU_AGENT_MAX_WAIT"
                ) from None
            log.warning(
                "the model failed (%s, %s); asking again in %.1f s (attempt %d of %d)",
                what,
                type(exc).__name__,
                delay,
                attempt + 1,
                MODEL_RETRY.max_attempts,
            )
            await services.clock.sleep(delay)


def bound_tools(services: Services, tool_names: list[str] | None, *, more_tools: bool = False) -> list[Any]:
    """What is bound for one model call, in one order for every request (`tools/binding.py`): the named tools (None:
    every catalog tool, as written) with compact schemas, after `more_tools` when the model may ask for more."""
    executor = services.toolbox.executor
    if tool_names is None:
        return list(executor.langchain_tools())
    from langchain_core.utils.function_calling import convert_to_openai_tool

    tools = {t.name: compact_tool(convert_to_openai_tool(t)) for t in executor.langchain_tools(tool_names)}
    ordered = [tools[name] for name in bind_order(tools)]
    return [more_tools_schema(executor.catalog), *ordered] if more_tools else ordered


async def llm_plan(
    services: Services,
    system_prompt: str | Sequence[str],
    messages: Sequence[AnyMessage],
    tool_names: list[str] | None = None,
    *,
    more_tools: bool = False,
) -> AIMessage:
    """One model call with the account's tools bound (`bound_tools`); the system prompt is one message, or several
    (what stays the same from one request to the next first, so a provider's prompt cache serves it)."""
    if services.model is None:
        raise RuntimeError("the LLM planner needs a model (set OPENAI_API_KEY)")
    tools = bound_tools(services, tool_names, more_tools=more_tools)
    bound = services.model.bind_tools(tools) if tools else services.model
    systems = [system_prompt] if isinstance(system_prompt, str) else list(system_prompt)
    prompt = [*(SystemMessage(content=text) for text in systems), *_capped(messages)]
    reply = await invoke_model(services, bound, prompt, what="planning the next step")
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=str(getattr(reply, "content", reply)))
    return reply
