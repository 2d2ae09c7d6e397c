"""The httpx transport under the `mcp` client: the real URL in (the client and its logs only see an alias), and
failures out as per-request JSON-RPC errors (errors.py reads them) instead of a dead session."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tools.errors import error_from_httpx
from tools.mcp_source.errors import SHIM_KEY, McpUrlError

CALL_MARKER = "coviu-agent/call"  # key in a tools/call's `_meta`: ties the HTTP exchange to the call
ALIAS_PATH = "/mcp/token-redacted"
SHIM_ERROR_CODE = -32050  # a JSON-RPC error made by `McpHttp` (details in `data["coviu_agent"]`)
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after")


def check_mcp_url(url: str) -> httpx.URL:
    """Parse TRUTO_MCP_URL: http(s), a host, and a path holding the token. Errors never echo the URL."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise McpUrlError("TRUTO_MCP_URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise McpUrlError("TRUTO_MCP_URL must be an http(s) URL (https://api.truto.one/mcp/<token>)")
    if not parsed.host:
        raise McpUrlError("TRUTO_MCP_URL has no host (expected https://api.truto.one/mcp/<token>)")
    if parsed.path.strip("/") == "":
        raise McpUrlError("TRUTO_MCP_URL has no token in its path (expected https://api.truto.one/mcp/<token>)")
    if parsed.userinfo:
        raise McpUrlError("TRUTO_MCP_URL must not contain a user name or password")
    return parsed


def redacted_mcp_url(url: httpx.URL) -> str:
    """The URL with its token (path and query) replaced: safe for messages and logs."""
    return str(url.copy_with(path=ALIAS_PATH, query=None, fragment=None))


@dataclass
class Exchange:
    """What one tools/call's HTTP exchange looked like (filled by `McpHttp`)."""

    idempotency_key: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _jsonrpc_fields(request: httpx.Request) -> tuple[Any, str | None, str | None]:
    """(id, method, call marker) of a JSON-RPC POST body; (None, None, None) when it is not one."""
    if request.method != "POST":
        return None, None, None
    try:
        message = json.loads(request.content or b"null")
    except (ValueError, httpx.RequestNotRead):
        return None, None, None
    if not isinstance(message, dict):
        return None, None, None
    marker = _dict(_dict(message.get("params")).get("_meta")).get(CALL_MARKER)
    return message.get("id"), message.get("method"), (str(marker) if marker else None)


class McpHttp(httpx.AsyncBaseTransport):
    """The httpx transport under the `mcp` client: real URL in, failures out as per-request JSON-RPC errors."""

    def __init__(self, real_url: httpx.URL, alias_url: httpx.URL, inner: httpx.AsyncBaseTransport | None) -> None:
        self._real = real_url
        self._alias = alias_url
        self._owns_inner = inner is None
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.exchanges: dict[str, Exchange] = {}

    async def aclose(self) -> None:
        if self._owns_inner:
            await self._inner.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = self._real if request.url.copy_with(query=None) == self._alias else request.url
        headers = httpx.Headers(request.headers)
        rpc_id, method, marker = _jsonrpc_fields(request)
        exchange = self.exchanges.get(marker) if marker else None
        if exchange is not None and exchange.idempotency_key:
            headers["Idempotency-Key"] = exchange.idempotency_key
        outgoing = httpx.Request(
            request.method,
            url,
            headers=headers,
            content=request.content if request.method == "POST" else None,
            extensions=request.extensions,
        )
        is_rpc = method is not None
        try:
            response = await self._inner.handle_async_request(outgoing)
        except httpx.TransportError as exc:
            mapped = error_from_httpx(exc)
            return self._failed(request, rpc_id, is_rpc, exc, mapped.kind, mapped.detail, mapped.sent)
        if exchange is not None:
            exchange.status = response.status_code
            exchange.headers = {k.lower(): v for k, v in response.headers.items()}
        if not is_rpc:
            return response  # the GET stream and the closing DELETE: the mcp client copes with these itself
        content_type = response.headers.get("content-type", "").lower()
        if response.status_code < 300 and not content_type.startswith("application/json"):
            return response  # 202 for notifications, or an SSE stream
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx.TransportError as exc:
            return self._failed(request, rpc_id, is_rpc, exc, "connection dropped", type(exc).__name__, True)
        finally:
            await response.aclose()
        decoded = httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(raw))
        content = await decoded.aread()
        if response.status_code >= 300:
            return self._http_error(request, rpc_id, response, content)
        try:
            json.loads(content)
        except ValueError:
            return self._rpc_error(
                request,
                rpc_id,
                "malformed JSON from the MCP server",
                {
                    "transport": "malformed response",
                    "detail": f"{len(content)} bytes of JSON could not be parsed",
                    "sent": True,
                },
            )
        kept = {k: v for k, v in response.headers.items() if k.lower() not in ("content-encoding", "content-length")}
        return httpx.Response(response.status_code, headers=kept, content=content, request=request)

    def _failed(
        self,
        request: httpx.Request,
        rpc_id: Any,
        is_rpc: bool,
        exc: Exception,
        kind: str,
        detail: str,
        sent: bool,
    ) -> httpx.Response:
        if not is_rpc:
            raise exc
        return self._rpc_error(
            request, rpc_id, f"{kind} talking to the MCP server", {"transport": kind, "detail": detail, "sent": sent}
        )

    def _http_error(
        self, request: httpx.Request, rpc_id: Any, response: httpx.Response, content: bytes
    ) -> httpx.Response:
        body: Any
        try:
            body = json.loads(content) if content.strip() else None
        except ValueError:
            body = content[:1000].decode("utf-8", "replace")
        message = f"HTTP {response.status_code} from the MCP server"
        if isinstance(body, dict):
            inner = body.get("error")
            if isinstance(inner, dict) and inner.get("message"):
                message = f"{message}: {inner['message']}"
            elif body.get("message"):
                message = f"{message}: {body['message']}"
        data = {
            "status": response.status_code,
            "reason": response.reason_phrase,
            "headers": {k.lower(): v for k, v in response.headers.items() if k.lower() in RATE_HEADERS},
            "body": body,
        }
        return self._rpc_error(request, rpc_id, message, data)

    @staticmethod
    def _rpc_error(request: httpx.Request, rpc_id: Any, message: str, data: dict[str, Any]) -> httpx.Response:
        if rpc_id is None:  # a notification: nothing waits for an answer
            return httpx.Response(202, request=request)
        payload = {
            "jsonrpc": "2.0",
            "id": rpc_id,
            "error": {"code": SHIM_ERROR_CODE, "message": message, "data": {SHIM_KEY: data}},
        }
        return httpx.Response(200, json=payload, request=request)
