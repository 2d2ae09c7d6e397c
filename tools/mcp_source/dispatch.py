"""`ToolExecutor`'s dispatch for the MCP source: the governor, `tools/call` by name, results as the proxy's (binary
results as `BinaryBody` metadata, never bytes), failures through errors.py."""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
from mcp import types
from mcp.shared.exceptions import McpError

from tools.catalog import ToolSpec
from tools.client import HTTP_VERBS, BinaryBody, TrutoClient
from tools.clock import Clock
from tools.errors import MalformedResponseError, TransportError
from tools.executor import ToolCall
from tools.mcp_source.errors import Observe, error_from_rpc, error_from_tool_result
from tools.mcp_source.http import CALL_MARKER, Exchange
from tools.mcp_source.session import McpSource
from tools.ratelimit import RateLimitBudget, RateLimitGovernor, Ticket, parse_rate_limit_headers

log = logging.getLogger(__name__)


def _base64_size(data: str) -> int:
    text = "".join(data.split())
    return max(0, len(text) * 3 // 4 - (len(text) - len(text.rstrip("="))))


def _binary(block: Any) -> BinaryBody | None:
    """Metadata for a binary content block; None for text."""
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        content_type = resource.mimeType or "application/octet-stream"
        if isinstance(resource, types.BlobResourceContents):
            return BinaryBody(content_type, _base64_size(resource.blob), 200)
        if "json" in content_type:
            return None
        return BinaryBody(content_type, len(resource.text.encode()), 200)
    if isinstance(block, types.ImageContent | types.AudioContent):
        return BinaryBody(block.mimeType, _base64_size(block.data), 200)
    if isinstance(block, types.ResourceLink):
        return BinaryBody(block.mimeType or "application/octet-stream", block.size, 200)
    return None


def _text(blocks: list[Any]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
            parts.append(block.resource.text)
    return "".join(parts)


class McpDispatch:
    """`ToolExecutor`'s dispatch for the MCP source: governor, `tools/call` by name, typed errors."""

    def __init__(self, source: McpSource, client: TrutoClient) -> None:
        self.source = source
        self.governor: RateLimitGovernor = client.governor
        self.budget: RateLimitBudget = client.budget  # the run's (the client's: `TrutoClient.for_run`)
        self.clock: Clock = client.clock

    async def __call__(self, spec: ToolSpec, call: ToolCall) -> Any:
        verb = HTTP_VERBS.get(spec.method, "POST")
        path = f"mcp:{spec.name}"
        session = await self.source.session()
        marker = uuid.uuid4().hex
        key = call.idempotency_key
        if key is None and verb != "GET":
            key = str(uuid.uuid4())
        exchange = Exchange(idempotency_key=key)
        self.source.exchanges[marker] = exchange
        try:
            ticket = await self.governor.acquire(self.budget, self.clock.sleep, f"MCP {spec.name}")
            if ticket.waited > 0:
                log.debug("paced %.2fs before MCP %s", ticket.waited, spec.name)
            observe = functools.partial(self._observe, ticket)
            try:
                result = await session.call_tool(spec.name, dict(call.arguments), meta={CALL_MARKER: marker})
            except McpError as exc:
                raise error_from_rpc(
                    exc,
                    method=verb,
                    path=path,
                    host=self.source.host,
                    opening=False,
                    observe=observe,
                    received_at=self.clock.now(),
                ) from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                raise TransportError("connection closed", "the MCP session ended", method=verb, path=path) from exc
        finally:
            self.source.exchanges.pop(marker, None)
        return self._result(result, exchange, verb, path, observe)

    def _observe(self, ticket: Ticket, headers: Mapping[str, str], status: int) -> float:
        info = parse_rate_limit_headers(headers, self.clock.now())
        return self.governor.observe(info, status_code=status, ticket=ticket)

    def _result(self, result: types.CallToolResult, exchange: Exchange, verb: str, path: str, observe: Observe) -> Any:
        headers = exchange.headers
        if result.isError:
            raise error_from_tool_result(
                _text(result.content),
                http_status=exchange.status,
                headers=headers,
                observe=observe,
                method=verb,
                path=path,
                received_at=self.clock.now(),
            )
        observe(headers, exchange.status or 200)
        for block in result.content:
            binary = _binary(block)
            if binary is not None:
                return binary
        text = _text(result.content)
        if not text.strip():
            if result.structuredContent is not None:
                return result.structuredContent
            raise MalformedResponseError("the tool result is empty", method=verb, path=path)
        try:
            return json.loads(text)
        except ValueError:
            if result.structuredContent is not None:
                return result.structuredContent
            raise MalformedResponseError(
                f"malformed JSON: {len(text)} characters could not be parsed", method=verb, path=path
            ) from None
