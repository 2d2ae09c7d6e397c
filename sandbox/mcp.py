"""Truto's per-account MCP servers, simulated: the admin routes and the `/mcp/{token}` endpoint.

- `POST /integrated-account/{id}/mcp` `{name, config: {methods, tags, require_api_token_auth}, expires_at}` creates a
  server and answers `{id, name, config, expires_at, created_at, token, url}` (the token and URL only here);
  `GET` lists them (no token or URL), `GET|DELETE /integrated-account/{id}/mcp/{mcp_id}` reads or deletes one.
  `methods` and `tags` filter the tools like `/tools` does (AND); no matching tool is a 400. Expired servers are gone.
- `/mcp/{token}`: the `mcp` package's low-level `Server` over streamable HTTP (stateless, JSON responses), one
  short-lived server per request. `tools/list` gives the same names, descriptions and schemas as `/tools` (query ∪
  body properties, Truto's `required`), with `_meta.truto = {resource, method, tags}` and the standard annotations.
  `tools/call` runs through the sandbox's own proxy handler (`Sandbox.proxy`, typed by sandbox/gateway.py), so the
  account's rules, rate limit, idempotency keys (the MCP request's `Idempotency-Key` header) and faults are the
  proxy's: a proxy error comes back as an `isError` result holding Truto's error JSON; the proxy's
  `ratelimit-*`/`retry-after` headers go on the MCP HTTP response; slow and dropped responses happen to the MCP HTTP
  response itself. Binary bodies come back as an embedded blob resource. An unknown, deleted or expired token is a
  404 with a JSON-RPC error body.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import StreamableHTTPServerTransport
from starlette.requests import Request

from sandbox.catalog import CRUD_METHODS, METHOD_GROUPS
from sandbox.errors import TrutoError
from sandbox.gateway import TrutoGateway
from sandbox.querystring import parse_query
from sandbox.replies import Reply, RequestRecord, error_reply
from sandbox.timefmt import TimeParseError, format_time, parse_time

# The embedded sandbox always has this MCP server, so `TRUTO_MCP_URL=http://sandbox.local/mcp/<this>` works offline.
DEMO_MCP_TOKEN = "sandbox-mcp-demo"
DEMO_MCP_ID = "mcp-demo"

HTTP_VERBS = {"list": "GET", "get": "GET", "create": "POST", "update": "PATCH", "delete": "DELETE"}
FORWARDED_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after")
METHOD_NAMES = set(CRUD_METHODS) | set(METHOD_GROUPS) | {"custom"}
NOT_FOUND_CODE = -32001  # JSON-RPC: the MCP server (token) does not exist
UNAUTHORIZED_CODE = -32002

Message = MutableMapping[str, Any]


@dataclass
class McpServerRecord:
    """One MCP server of the integrated account."""

    id: str
    name: str
    token: str
    methods: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    require_api_token_auth: bool = False
    expires_at: datetime | None = None
    created_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """As `GET` lists it: no token, no URL."""
        return {
            "id": self.id,
            "name": self.name,
            "config": {
                "methods": list(self.methods),
                "tags": list(self.tags),
                "tool_exposure": "all",
                "require_api_token_auth": self.require_api_token_auth,
            },
            "expires_at": format_time(self.expires_at) if self.expires_at else None,
            "created_at": format_time(self.created_at) if self.created_at else None,
            "updated_at": format_time(self.created_at) if self.created_at else None,
        }


@dataclass
class _Delivery:
    """How the MCP HTTP response must be delivered, learnt from the proxy reply of its tools/call."""

    headers: dict[str, str] = field(default_factory=dict)
    slow_seconds: float = 0.0
    drop: bool = False


def _rpc_error(rpc_id: Any, code: int, message: str, status: int) -> Reply:

    return Reply.json({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}, status)


def _rpc_id(body: bytes) -> Any:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message.get("id") if isinstance(message, dict) else None


def _encode_query(params: dict[str, Any]) -> str:
    """Truto's query syntax (as the proxy client sends it): true/false, `a[b]=x`, `arr[]=1&arr[]=2`."""
    pairs: list[tuple[str, str]] = []

    def add(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, dict):
            for k, v in value.items():
                add(f"{key}[{k}]", v)
        elif isinstance(value, list | tuple):
            for v in value:
                add(f"{key}[]", v)
        else:
            pairs.append((key, str(value)))

    for k, v in params.items():
        add(k, v)
    return urlencode(pairs)


def mcp_tool(tool: dict[str, Any]) -> types.Tool:
    """A `/tools` entry as MCP `tools/list` shows it."""
    properties = {**tool["query_schema"].get("properties", {}), **tool["body_schema"].get("properties", {})}
    method = tool["method"]
    return types.Tool(
        name=tool["name"],
        description=tool["description"],
        inputSchema={"type": "object", "properties": properties, "required": list(tool["required"])},
        annotations=types.ToolAnnotations(
            readOnlyHint=method in ("list", "get"),
            destructiveHint=method == "delete",
            idempotentHint=method in ("list", "get", "update", "delete"),
            openWorldHint=True,
        ),
        _meta={"truto": {"resource": tool["resource"], "method": method, "tags": list(tool["tags"])}},
    )


class SandboxMcp:
    """The account's MCP servers and the `/mcp/{token}` endpoint."""

    def __init__(self, sandbox: TrutoGateway) -> None:
        self.sandbox = sandbox
        self.servers: dict[str, McpServerRecord] = {}
        self.servers[DEMO_MCP_ID] = McpServerRecord(id=DEMO_MCP_ID, name="demo", token=DEMO_MCP_TOKEN)

    # ------------------------------------------------------------------ admin routes

    def _live(self) -> dict[str, McpServerRecord]:
        now = self.sandbox.clock.now()
        for key, server in list(self.servers.items()):
            if server.expires_at is not None and server.expires_at <= now:
                del self.servers[key]  # Truto deletes expired tokens
        return self.servers

    def by_token(self, token: str) -> McpServerRecord | None:
        return next((s for s in self._live().values() if secrets.compare_digest(s.token, token)), None)

    async def admin(self, request: Request, account_id: str, mcp_id: str | None) -> Reply:

        if account_id != self.sandbox.config.integrated_account_id:
            raise TrutoError(404, f"integrated account not found: {account_id}")
        servers = self._live()
        if mcp_id is None:
            if request.method == "GET":
                return Reply.json({"result": [s.public() for s in servers.values()], "next_cursor": None})
            if request.method == "POST":
                return await self._create(request)
            raise TrutoError(405, f"{request.method} is not allowed on /integrated-account/{{id}}/mcp")
        server = servers.get(mcp_id)
        if server is None:
            raise TrutoError(404, f"MCP server not found: {mcp_id}")
        if request.method == "GET":
            return Reply.json(server.public())
        if request.method == "DELETE":
            del servers[mcp_id]
            return Reply.json({"id": mcp_id})
        raise TrutoError(405, f"{request.method} is not allowed on /integrated-account/{{id}}/mcp/{{mcp_id}}")

    async def _create(self, request: Request) -> Reply:

        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise TrutoError(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise TrutoError(400, "request body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise TrutoError(400, "`name` is required: a non-empty string of at most 200 characters")
        config = body.get("config") or {}
        if not isinstance(config, dict):
            raise TrutoError(400, "`config` must be an object")
        methods = _string_list(config.get("methods"), "config.methods")
        unknown = [m for m in methods if m not in METHOD_NAMES]
        if unknown:
            raise TrutoError(400, f"config.methods: unknown method(s) {', '.join(unknown)}")
        tags = _string_list(config.get("tags"), "config.tags")
        exposure = config.get("tool_exposure", "all")
        if exposure != "all":
            raise TrutoError(400, f"config.tool_exposure {exposure!r} is not supported by the sandbox (use 'all')")
        require_auth = config.get("require_api_token_auth", False)
        if not isinstance(require_auth, bool):
            raise TrutoError(400, "config.require_api_token_auth must be a boolean")
        expires_at = None
        if body.get("expires_at") is not None:
            if not isinstance(body["expires_at"], str):
                raise TrutoError(400, "`expires_at` must be an ISO-8601 time or null")
            try:
                expires_at = parse_time(body["expires_at"])
            except TimeParseError as exc:
                raise TrutoError(400, f"`expires_at`: {exc}") from exc
            if expires_at <= self.sandbox.clock.now():
                raise TrutoError(400, "`expires_at` must be in the future")
        if not self.sandbox.tools(methods, tags):
            raise TrutoError(400, "no AI-ready tool matches config.methods and config.tags; widen the filter")
        server = McpServerRecord(
            id=str(uuid.uuid4()),
            name=name.strip(),
            token=secrets.token_urlsafe(24),
            methods=methods,
            tags=tags,
            require_api_token_auth=require_auth,
            expires_at=expires_at,
            created_at=self.sandbox.clock.now(),
        )
        self.servers[server.id] = server
        url = f"{str(request.base_url).rstrip('/')}/mcp/{server.token}"
        return Reply.json({**server.public(), "token": server.token, "url": url}, status=201)

    # ------------------------------------------------------------------ the MCP endpoint

    async def serve(self, request: Request, token: str) -> Reply:
        """One MCP HTTP request: the token's server answers it; the reply is delivered like a proxy reply."""

        body = await request.body()
        rpc_id = _rpc_id(body)
        server = self.by_token(token) if token else None
        if server is None:
            return _rpc_error(
                rpc_id, NOT_FOUND_CODE, "MCP server not found: the token is invalid, expired or was deleted", 404
            )
        if server.require_api_token_auth:
            try:
                self.sandbox.authenticate(request)
            except TrutoError as error:
                return _rpc_error(rpc_id, UNAUTHORIZED_CODE, error.message, 401)
        delivery = _Delivery()
        scope = dict(request.scope)
        scope["sandbox.mcp"] = delivery
        status, headers, content = await self._run(server, scope, body)
        content_type = headers.pop("content-type", "application/json")
        headers.pop("content-length", None)
        headers.update(delivery.headers)
        return Reply(status, content, content_type, headers, slow_seconds=delivery.slow_seconds, drop=delivery.drop)

    async def _run(self, record: McpServerRecord, scope: Message, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Run the `mcp` server's streamable HTTP transport on this request, collecting its response."""
        received = False

        async def receive() -> Message:
            nonlocal received
            if received:
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 500
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for key, value in message.get("headers", []):
                    headers[key.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        server = self._server(record)
        transport = StreamableHTTPServerTransport(mcp_session_id=None, is_json_response_enabled=True)
        async with anyio.create_task_group() as tg:

            async def run_server(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                async with transport.connect() as (read_stream, write_stream):
                    task_status.started()
                    await server.run(read_stream, write_stream, server.create_initialization_options(), stateless=True)

            await tg.start(run_server)
            try:
                await transport.handle_request(scope, receive, send)
            finally:
                await transport.terminate()
                tg.cancel_scope.cancel()
        return status, headers, b"".join(chunks)

    def _server(self, record: McpServerRecord) -> Server[Any, Any]:
        server: Server[Any, Any] = Server("truto-mcp-sandbox", instructions="Coviu tools of the sandbox account")
        tools = {t["name"]: t for t in self.sandbox.tools(record.methods, record.tags)}

        @server.list_tools()
        async def list_tools() -> list[types.Tool]:
            return [mcp_tool(t) for t in tools.values()]

        @server.call_tool(validate_input=False)
        async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            request = server.request_context.request
            delivery = request.scope.get("sandbox.mcp") if isinstance(request, Request) else None
            key = request.headers.get("idempotency-key") if isinstance(request, Request) else None
            tool = tools.get(name)
            if tool is None:
                return _error_result(TrutoError(404, f"tool not found on this MCP server: {name}"))
            return await self._call(tool, arguments or {}, key, delivery)

        return server

    async def _call(
        self, tool: dict[str, Any], arguments: dict[str, Any], idempotency_key: str | None, delivery: _Delivery | None
    ) -> types.CallToolResult:
        """Run one tool through the proxy handler, exactly as `/proxy` would have run it."""

        method = tool["method"]
        body_keys = set(tool["body_schema"].get("properties", {}))
        record_id: str | None = None
        query: dict[str, Any] = {}
        body: dict[str, Any] = {}
        for key, value in arguments.items():
            if key == "id" and method in ("get", "update", "delete"):
                record_id = str(value)
            elif key in body_keys:
                body[key] = value
            else:
                query[key] = value
        if method in ("get", "update", "delete") and not record_id:
            return _error_result(TrutoError(400, f"missing required argument `id` for {tool['name']}"))
        verb = HTTP_VERBS.get(method, "POST")
        custom = method not in HTTP_VERBS  # a custom method: POST /proxy/{resource}/{method}
        rest = [tool["resource"]] + ([record_id] if record_id else []) + ([method] if custom else [])
        raw_query = _encode_query({**query, "integrated_account_id": self.sandbox.config.integrated_account_id})
        content = json.dumps(body).encode() if verb in ("POST", "PATCH") else b""
        request = _internal_request(verb, "/proxy/" + "/".join(rest), raw_query, content, idempotency_key)
        record = RequestRecord(
            method=verb,
            path=request.url.path,
            resource=None,
            truto_method=None,
            status=0,
            idempotency_key=idempotency_key,
            query=parse_query(raw_query),
        )
        self.sandbox.requests.append(record)
        try:
            reply = await self.sandbox.proxy(request, record, rest)
        except TrutoError as error:
            reply = error_reply(error, config=self.sandbox.config)
        record.status = reply.status
        if delivery is not None:
            delivery.headers.update({k: v for k, v in reply.headers.items() if k.lower() in FORWARDED_HEADERS})
            delivery.slow_seconds = max(delivery.slow_seconds, reply.slow_seconds)
            delivery.drop = delivery.drop or reply.drop
        if reply.status >= 400:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=reply.body.decode("utf-8", "replace"))], isError=True
            )
        if reply.content_type != "application/json":
            blob = types.BlobResourceContents(
                uri=f"truto://proxy/{'/'.join(rest)}",  # type: ignore[arg-type]
                mimeType=reply.content_type,
                blob=base64.b64encode(reply.body).decode("ascii"),
            )
            return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=blob)])
        text = reply.body.decode("utf-8", "replace")
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def _error_result(error: TrutoError) -> types.CallToolResult:
    text = json.dumps(error.body(), separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def _string_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TrutoError(400, f"`{name}` must be a list of strings")
    return list(value)


def _internal_request(verb: str, path: str, raw_query: str, content: bytes, idempotency_key: str | None) -> Request:
    """A Starlette request for the proxy handler, as if it had come over HTTP."""
    headers = [(b"content-type", b"application/json")]
    if idempotency_key:
        headers.append((b"idempotency-key", idempotency_key.encode("latin-1")))
    scope = {
        "type": "http",
        "method": verb,
        "path": path,
        "raw_path": path.encode(),
        "query_string": raw_query.encode(),
        "headers": headers,
        "scheme": "http",
        "server": ("sandbox.local", 80),
        "root_path": "",
        "http_version": "1.1",
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": content, "more_body": False}

    return Request(scope, receive)
