"""The MCP tool source: Truto's per-account MCP server (`tools/list`, `tools/call`) instead of `/tools` + proxy.

Selected by `TRUTO_MCP_URL` (agent/services.py). It produces the same `ToolCatalog`/`ToolSpec` objects as
`/tools`, and plugs into `ToolExecutor.run` as its `dispatch`, so validation, id filling, the binary guard,
the approval gate, the governor and the graphs' retry path do not know which source is in use.

- One `mcp.ClientSession` per process, over the `mcp` package's streamable HTTP client. A background task owns
  it (anyio scopes must be exited by the task that entered them); callers in any task share it. If it dies,
  the next call reopens it.
- The URL is a secret (its token is the auth). The `mcp` client and httpx only ever see an alias with the
  token replaced (`…/mcp/token-redacted`), so their logs and exceptions cannot leak it; `_McpHttp`, the httpx
  transport underneath, swaps in the real URL per request.
- `_McpHttp` also turns what would kill the session (HTTP 4xx/5xx, connect errors, timeouts, a cut or malformed
  body) into a JSON-RPC error for that one request, with the details in `error.data`, and records each
  `tools/call`'s HTTP status and headers (found by a marker in the call's `_meta`), so `McpDispatch` can map
  them onto `TrutoError`/`RateLimitedError`/`TransportError` and feed the governor's `observe`.
- Binary results (embedded blobs, images, audio, resource links) become `BinaryBody` metadata: the executor's
  binary guard then answers with metadata only, never bytes.

Resource and method come from each tool's `_meta` (`truto.resource`/`truto.method`, or flat `resource`/`method`)
when the server sends them. Otherwise they are inferred from Truto's naming convention (README, "Tool sources":
`list_all_{integration}_{resource}`, `get_single_{integration}_{singular}_by_id`, `create_a_…`, `update_a_…_by_id`,
`delete_a_…_by_id`), the singular mapped to a list tool's resource when one exists; any other name becomes a
`custom` method (never read-only). Dispatch itself is by tool name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from tools.catalog import ToolCatalog, ToolSpec
from tools.client import DEFAULT_TIMEOUT, HTTP_VERBS, BinaryBody
from tools.clock import Clock, SystemClock
from tools.errors import (
    CoviuAgentError,
    MalformedResponseError,
    RateLimitedError,
    TransportError,
    TrutoError,
    error_from_httpx,
    error_from_payload,
)
from tools.executor import ToolCall
from tools.ratelimit import RateLimitGovernor, parse_rate_limit_headers
from tools.retry import call_with_retries
from tools.toolbox import Toolbox, open_toolbox

log = logging.getLogger(__name__)

CALL_MARKER = "coviu-agent/call"  # key in a tools/call's `_meta`: ties the HTTP exchange to the call
ALIAS_PATH = "/mcp/token-redacted"
_SHIM_ERROR_CODE = -32050  # a JSON-RPC error made by `_McpHttp` (details in `data["coviu_agent"]`)
_RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after")
MAX_TOOL_PAGES = 100
CLIENT_INFO = types.Implementation(name="coviu-agent", version="0.1.0")


class McpUrlError(CoviuAgentError, ValueError):
    """TRUTO_MCP_URL is not a usable MCP URL (nothing was sent). The message never contains the URL."""


class McpRefusedError(CoviuAgentError):
    """The MCP server refused the URL's token (unknown, expired, deleted) or the session could not start."""


# ----------------------------------------------------------------------------------------------- the URL


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


# ----------------------------------------------------------------------------------------------- the http layer


@dataclass
class _Exchange:
    """What one tools/call's HTTP exchange looked like (filled by `_McpHttp`)."""

    idempotency_key: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


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


class _McpHttp(httpx.AsyncBaseTransport):
    """The httpx transport under the `mcp` client: real URL in, failures out as per-request JSON-RPC errors."""

    def __init__(self, real_url: httpx.URL, alias_url: httpx.URL, inner: httpx.AsyncBaseTransport | None) -> None:
        self._real = real_url
        self._alias = alias_url
        self._owns_inner = inner is None
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.exchanges: dict[str, _Exchange] = {}

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
            "headers": {k.lower(): v for k, v in response.headers.items() if k.lower() in _RATE_HEADERS},
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
            "error": {"code": _SHIM_ERROR_CODE, "message": message, "data": {"coviu_agent": data}},
        }
        return httpx.Response(200, json=payload, request=request)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def _shim_data(error: McpError) -> dict[str, Any] | None:
    data = error.error.data
    if isinstance(data, dict) and isinstance(data.get("coviu_agent"), dict):
        return data["coviu_agent"]
    return None


def _unwrap(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from anyio task groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [
            e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError | anyio.get_cancelled_exc_class())
        ]
        if not inner:
            return exc.exceptions[0]
        exc = inner[0]
    return exc


# ----------------------------------------------------------------------------------------------- the session


class McpSource:
    """One MCP session to Truto's MCP server, shared by the whole process."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        real = check_mcp_url(url)
        self._alias = httpx.URL(redacted_mcp_url(real))
        self.display_url = str(self._alias)
        self._http = _McpHttp(real, self._alias, transport)
        self._timeout = timeout
        self._headers = dict(headers or {})
        read = timeout.read if timeout.read is not None else 30.0
        self._read_timeout = timedelta(seconds=read + 15.0)  # a backstop: `_McpHttp` answers timeouts first
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self.sessions_opened = 0
        self.server_name: str | None = None

    @property
    def exchanges(self) -> dict[str, _Exchange]:
        return self._http.exchanges

    @property
    def is_open(self) -> bool:
        return self._session is not None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Open the session (initialize) unless it is open. Raises typed errors; safe to retry."""
        async with self._lock:
            if self.is_open:
                return
            await self._stop()
            ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
            self._closing = asyncio.Event()
            self._task = asyncio.create_task(self._own(ready, self._closing), name="coviu-agent mcp session")
            try:
                self._session = await ready
            except BaseException:
                await self._stop()
                raise
            self.sessions_opened += 1

    async def _own(self, ready: asyncio.Future[ClientSession], closing: asyncio.Event) -> None:
        """The session's owner task: enters every context, initializes, then waits for `aclose`."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=self._http, timeout=self._timeout, headers=self._headers, follow_redirects=False
                    )
                )
                read, write, _ = await stack.enter_async_context(
                    streamable_http_client(str(self._alias), http_client=http)
                )
                session = await stack.enter_async_context(
                    ClientSession(read, write, read_timeout_seconds=self._read_timeout, client_info=CLIENT_INFO)
                )
                result = await session.initialize()
                self.server_name = result.serverInfo.name
                ready.set_result(session)
                await closing.wait()
        except BaseException as exc:  # handed to the waiting caller, or logged
            error = _unwrap(exc)
            if not ready.done():
                ready.set_exception(self._open_error(error))
            elif not isinstance(error, asyncio.CancelledError):
                log.warning("the MCP session ended: %s", type(error).__name__)
        finally:
            self._session = None

    def _open_error(self, error: BaseException) -> BaseException:
        where = "MCP initialize"
        if isinstance(error, McpError):
            data = _shim_data(error)
            if data and "transport" in data:
                return transport_error(
                    str(data["transport"]), str(data.get("detail", "")), method="POST", path=where, sent=False
                )
            if data and isinstance(data.get("status"), int):
                status = int(data["status"])
                if status in (401, 403, 404, 410):
                    return McpRefusedError(
                        f"the MCP server at {self._alias.host} refused the token in TRUTO_MCP_URL ({status}): it is "
                        "invalid, expired or deleted. Create a new one with `coviu-agent mcp create` and set "
                        "TRUTO_MCP_URL to the URL it prints."
                    )
                error_name = str(data.get("reason") or "")
                if status == 429:
                    return RateLimitedError(status, error_name, error.error.message, method="POST", path=where)
                return TrutoError(status, error_name, error.error.message, method="POST", path=where)
            return McpRefusedError(f"the MCP server at {self._alias.host} refused to start a session: {error}")
        if isinstance(error, CoviuAgentError):
            return error
        return McpRefusedError(
            f"could not start an MCP session with {self._alias.host}: {type(error).__name__}: {_short(error)}"
        )

    async def session(self) -> ClientSession:
        """The open session; reopened when the previous one ended."""
        if not self.is_open:
            await self.start()
        assert self._session is not None
        return self._session

    async def list_tools(self) -> list[types.Tool]:
        """Every tool (following `nextCursor`)."""
        session = await self.session()
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            try:
                page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            except McpError as exc:
                raise self._open_error(exc) from None
            tools.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                return tools
        raise McpRefusedError(f"the MCP server's tools/list did not end after {MAX_TOOL_PAGES} pages")

    async def _stop(self) -> None:
        task, closing = self._task, self._closing
        self._task, self._closing, self._session = None, None, None
        if task is None:
            return
        if closing is not None:
            closing.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()

    async def aclose(self) -> None:
        async with self._lock:
            await self._stop()
        await self._http.aclose()


# ----------------------------------------------------------------------------------------------- the catalog

_NAME_PATTERNS = (
    (re.compile(r"^list_all_(?P<rest>.+)$"), "list"),
    (re.compile(r"^get_single_(?P<rest>.+)_by_id$"), "get"),
    (re.compile(r"^create_an?_(?P<rest>.+)$"), "create"),
    (re.compile(r"^update_an?_(?P<rest>.+)_by_id$"), "update"),
    (re.compile(r"^delete_an?_(?P<rest>.+)_by_id$"), "delete"),
)


def _plural(word: str) -> str:
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    return word + "s"


def _truto_meta(tool: types.Tool) -> dict[str, Any]:
    """resource/method/tags from the tool's `_meta` (flat, `truto/…` keys or a `truto` object) or annotations."""
    found: dict[str, Any] = {}
    sources: list[Mapping[str, Any]] = []
    if isinstance(tool.meta, dict):
        if isinstance(tool.meta.get("truto"), dict):
            sources.append(tool.meta["truto"])
        sources.append({k.removeprefix("truto/").removeprefix("truto_"): v for k, v in tool.meta.items()})
    if tool.annotations is not None and tool.annotations.model_extra:
        sources.append(tool.annotations.model_extra)
    for source in sources:
        for key in ("resource", "method", "tags"):
            if key not in found and source.get(key):
                found[key] = source[key]
    return found


def _integration_prefix(rests: list[str], integration: str | None) -> str:
    if integration and rests and all(r.startswith(f"{integration}_") for r in rests):
        return f"{integration}_"
    if len(rests) < 2:
        return rests[0].split("_", 1)[0] + "_" if rests else ""
    first, last = min(rests), max(rests)
    common = first[: next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))]
    return common[: common.rfind("_") + 1] if "_" in common else ""


def infer_resource_and_method(names: Iterable[str], integration: str | None = "coviu") -> dict[str, tuple[str, str]]:
    """The fallback: resource + method for each tool name by Truto's naming convention (see module doc)."""
    matched: dict[str, tuple[str, str]] = {}
    for name in names:
        for pattern, method in _NAME_PATTERNS:
            m = pattern.match(name)
            if m:
                matched[name] = (method, m.group("rest"))
                break
    prefix = _integration_prefix([rest for _, rest in matched.values()], integration)
    listed = {rest.removeprefix(prefix) for method, rest in matched.values() if method == "list"}
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        if name not in matched:
            out[name] = (name, "custom")
            continue
        method, rest = matched[name]
        noun = rest.removeprefix(prefix)
        if method == "list":
            resource = noun
        else:
            resource = next((r for r in sorted(listed) if r == noun or _plural(noun) == r), _plural(noun))
        out[name] = (resource, method)
    return out


def catalog_from_mcp(tools: Iterable[types.Tool], *, integration: str | None = "coviu") -> ToolCatalog:
    """ToolSpecs from MCP `tools/list`: the input schema as one (query) schema, so `args_schema` validates the same."""
    tools = list(tools)
    inferred = infer_resource_and_method([t.name for t in tools], integration)
    specs: list[ToolSpec] = []
    for tool in tools:
        meta = _truto_meta(tool)
        guess_resource, guess_method = inferred[tool.name]
        schema = _dict(tool.inputSchema)
        properties = _dict(schema.get("properties"))
        required = _list(schema.get("required"))
        tags = meta.get("tags")
        specs.append(
            ToolSpec(
                name=tool.name,
                description=tool.description or "",
                resource=str(meta.get("resource") or guess_resource),
                method=str(meta.get("method") or guess_method),
                query_schema={"type": "object", "properties": dict(properties)},
                body_schema={},
                required=tuple(str(r) for r in required),
                tags=tuple(str(t) for t in tags) if isinstance(tags, list | tuple) else (),
            )
        )
    return ToolCatalog(specs, source="mcp")


DISCOVERY_TOOLS = frozenset({"search_tools", "get_tool_schema", "call_tool"})


def check_exposure(catalog: ToolCatalog) -> None:
    """Refuse a server made with `tool_exposure: "discovery"`: its meta-tools hide the schemas the graphs need."""
    if set(catalog.names) and set(catalog.names) <= DISCOVERY_TOOLS:
        raise McpRefusedError(
            "the MCP server in TRUTO_MCP_URL exposes only discovery meta-tools (tool_exposure 'discovery'); "
            "create one with tool_exposure 'all' (`coviu-agent mcp create` does)"
        )


# ----------------------------------------------------------------------------------------------- dispatch


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


def _json_in(text: str) -> Any:
    """The JSON value in a tool's text (also after a prefix such as `Error: `); raises ValueError."""
    try:
        return json.loads(text)
    except ValueError:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start <= 0:
            raise
        return json.loads(text[start:])


class McpDispatch:
    """`ToolExecutor`'s dispatch for the MCP source: governor, `tools/call` by name, typed errors."""

    def __init__(self, source: McpSource, governor: RateLimitGovernor, clock: Clock) -> None:
        self.source = source
        self.governor = governor
        self.clock = clock

    async def __call__(self, spec: ToolSpec, call: ToolCall) -> Any:
        verb = HTTP_VERBS.get(spec.method, "POST")
        path = f"mcp:{spec.name}"
        session = await self.source.session()
        marker = uuid.uuid4().hex
        key = call.idempotency_key
        if key is None and verb != "GET":
            key = str(uuid.uuid4())
        exchange = _Exchange(idempotency_key=key)
        self.source.exchanges[marker] = exchange
        try:
            waited = await self.governor.acquire(self.clock.sleep, f"MCP {spec.name}")
            if waited > 0:
                log.debug("paced %.2fs before MCP %s", waited, spec.name)
            try:
                result = await session.call_tool(spec.name, dict(call.arguments), meta={CALL_MARKER: marker})
            except McpError as exc:
                raise self._call_error(exc, verb, path) from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                raise TransportError("connection closed", "the MCP session ended", method=verb, path=path) from exc
        finally:
            self.source.exchanges.pop(marker, None)
        return self._result(result, exchange, verb, path)

    def _observe(self, headers: Mapping[str, str], status: int) -> float:
        return self.governor.observe(parse_rate_limit_headers(headers, self.clock.now()), status_code=status)

    def _call_error(self, error: McpError, verb: str, path: str) -> Exception:
        data = _shim_data(error)
        if data and "transport" in data:
            return transport_error(
                str(data["transport"]), str(data.get("detail", "")), method=verb, path=path, sent=bool(data.get("sent"))
            )
        if data and isinstance(data.get("status"), int):
            status = int(data["status"])
            headers = _dict(data.get("headers"))
            hold = self._observe(headers, status)
            if status in (401, 403, 404, 410):
                return McpRefusedError(
                    f"the MCP server refused the token in TRUTO_MCP_URL ({status}) during {path}: it was deleted or "
                    "expired. Create a new one with `coviu-agent mcp create`."
                )
            body = data.get("body")
            payload = body if isinstance(body, dict) else {}
            return self._truto_error(status, payload, str(data.get("reason") or ""), headers, hold, verb, path)
        code = error.error.code
        if code == httpx.codes.REQUEST_TIMEOUT:
            return TransportError("timeout", "no answer from the MCP server", method=verb, path=path)
        if code == types.CONNECTION_CLOSED:
            return TransportError("connection closed", error.error.message, method=verb, path=path)
        status = 404 if code == types.METHOD_NOT_FOUND else 400
        return TrutoError(status, "MCP error", f"{error.error.message} (JSON-RPC {code})", method=verb, path=path)

    def _truto_error(
        self,
        status: int,
        payload: Mapping[str, Any],
        reason: str,
        headers: Mapping[str, str],
        hold: float,
        verb: str,
        path: str,
    ) -> TrutoError:
        return error_from_payload(status, payload, reason=reason, headers=headers, method=verb, path=path, hold=hold)

    def _result(self, result: types.CallToolResult, exchange: _Exchange, verb: str, path: str) -> Any:
        headers = exchange.headers
        if result.isError:
            text = _text(result.content)
            try:
                payload = _json_in(text)
            except ValueError:
                payload = {}
            if not isinstance(payload, dict):
                payload = {"raw_response": payload}
            raw_status = payload.get("statusCode") or payload.get("status")
            if raw_status is None:
                found = re.search(r"\b([45]\d\d)\b", text)
                raw_status = found.group(1) if found else 400
            try:
                status = int(raw_status)
            except (TypeError, ValueError):
                status = 400
            if not payload.get("message") and "statusCode" not in payload:
                # not Truto's error body: the text is the message (Truto's own body may leave `message` empty,
                # with the provider's text in raw_response: TrutoError.provider_message reads it there)
                payload = {**payload, "message": text[:500]}
            hold = self._observe(headers, status)
            raise self._truto_error(status, payload, "", headers, hold, verb, path)
        self._observe(headers, exchange.status or 200)
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


def transport_error(kind: str, detail: str, *, method: str, path: str, sent: bool) -> TransportError:
    """The typed transport error the proxy path would raise for the same failure."""
    if kind in ("malformed response", "malformed JSON"):
        return MalformedResponseError(detail, method=method, path=path, sent=sent)
    return TransportError(kind, detail, method=method, path=path, sent=sent)


# ----------------------------------------------------------------------------------------------- the toolbox


async def open_mcp_toolbox(
    *,
    mcp_url: str,
    base_url: str,
    api_key: str,
    integrated_account_id: str,
    transport: httpx.AsyncBaseTransport | None = None,
    mcp_transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    integration: str | None = "coviu",
    **toolbox_options: Any,
) -> Toolbox:
    """A `Toolbox` whose catalog comes from MCP `tools/list` and whose executor dispatches by `tools/call`.

    The toolbox keeps its `TrutoClient` (same account governor; binary downloads and admin calls still use the
    proxy). `mcp_transport` defaults to `transport`, so an in-process sandbox serves both. The API token is sent
    to the MCP server only when it is on the same host as `base_url`.
    """
    clock = clock or SystemClock()
    # The API token goes along only to Truto's own host (for servers made with `require_api_token_auth`).
    same_host = check_mcp_url(mcp_url).host == httpx.URL(base_url).host
    headers = {"Authorization": f"Bearer {api_key}"} if same_host else None
    source = McpSource(mcp_url, transport=mcp_transport or transport, timeout=timeout, headers=headers)
    try:
        await call_with_retries("opening the MCP session", source.start, clock=clock)
        tools = await call_with_retries("listing the MCP tools", source.list_tools, clock=clock)
        catalog = catalog_from_mcp(tools, integration=integration)
        check_exposure(catalog)
        toolbox = await open_toolbox(
            base_url=base_url,
            api_key=api_key,
            integrated_account_id=integrated_account_id,
            transport=transport,
            clock=clock,
            timeout=timeout,
            catalog=catalog,
            dispatch=lambda governor, clock: McpDispatch(source, governor, clock),
            **toolbox_options,
        )
    except BaseException:
        await source.aclose()
        raise
    toolbox.resources.append(source)
    log.info("MCP session open (%s): %d tools", source.server_name or "server", len(catalog))
    return toolbox
