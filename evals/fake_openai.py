"""A fake OpenAI-compatible Chat Completions server: each request is answered by a script over LangChain messages.

The scripted evals reach it through the real `ChatOpenAI` client (in-process, an httpx ASGI transport), so a
scripted run goes through the same client, request body and response parsing as a live one; the live-path test
serves the same app on loopback. `usage` is estimated from the request body (see `estimate_tokens`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Script = Callable[[list[BaseMessage], list[str]], AIMessage]
# which script answers a conversation (the live-path server holds every case's, picked by the first user message)
Pick = Callable[[list[BaseMessage]], Script | None]
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens as OpenAI's rule of thumb counts them: about 4 characters of English or JSON each.

    tiktoken is installed (with langchain-openai) but fetches its encodings from the internet on first use, which
    tests must not do; this estimate is within about 20% of o200k_base on our prompts. A live server's own `usage`
    replaces it in `coviu-agent eval`."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def to_langchain(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """OpenAI chat messages as LangChain messages (tool results carry the name of the call they answer)."""
    out: list[BaseMessage] = []
    names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        content = _text(message.get("content"))
        if role in ("system", "developer"):
            out.append(SystemMessage(content))
        elif role == "user":
            out.append(HumanMessage(content))
        elif role == "assistant":
            calls = []
            for raw in message.get("tool_calls") or []:
                function = raw.get("function") or {}
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = {}
                names[str(raw.get("id"))] = str(function.get("name"))
                calls.append({"name": function.get("name"), "args": args, "id": raw.get("id"), "type": "tool_call"})
            out.append(AIMessage(content, tool_calls=calls))
        elif role == "tool":
            call_id = str(message.get("tool_call_id"))
            out.append(ToolMessage(content, tool_call_id=call_id, name=names.get(call_id)))
    return out


def to_openai(reply: AIMessage) -> dict[str, Any]:
    """A script's reply as an OpenAI assistant message; `invalid_tool_calls` carry raw (e.g. truncated) arguments."""
    calls = [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("args") or {})},
        }
        for call in reply.tool_calls
    ]
    calls += [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": call.get("name"), "arguments": str(call.get("args") or "")},
        }
        for call in reply.invalid_tool_calls
    ]
    message: dict[str, Any] = {"role": "assistant", "content": _text(reply.content) or None}
    if calls:
        message["tool_calls"] = calls
    return message


@dataclass
class FakeOpenAI:
    """The server's state: how it picks a script, and every request it answered (for tests and token figures)."""

    pick: Pick
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("stream"):
            return JSONResponse({"error": {"message": "streaming is not served by this fake"}}, status_code=400)
        messages = to_langchain(list(body.get("messages") or []))
        tools = [str(t.get("function", {}).get("name")) for t in body.get("tools") or []]
        script = self.pick(messages)
        if script is None:
            return JSONResponse({"error": {"message": "no scripted case for this conversation"}}, status_code=404)
        message = to_openai(script(messages, tools))
        prompt = estimate_tokens(json.dumps(body.get("messages")) + json.dumps(body.get("tools") or []))
        completion = estimate_tokens((message.get("content") or "") + json.dumps(message.get("tool_calls") or []))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        self.requests.append({"model": body.get("model"), "tools": tools, "usage": usage})
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or "scripted",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/chat/completions", self.completions, methods=["POST"]),
            ]
        )


def scripted_model(script: Script, *, server: FakeOpenAI | None = None) -> tuple[Any, FakeOpenAI]:
    """A `ChatOpenAI` whose every call is answered in-process by `script` (through the fake server's app)."""
    import httpx
    from langchain_openai import ChatOpenAI

    fake = server or FakeOpenAI(pick=lambda messages: script)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()), base_url="http://fake-openai.local")
    model = ChatOpenAI(
        model="scripted",
        api_key="scripted",  # type: ignore[arg-type]
        base_url="http://fake-openai.local/v1",
        http_async_client=client,
        max_retries=0,
        temperature=0,
        use_responses_api=False,
    )
    return model, fake
