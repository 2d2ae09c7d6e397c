"""Runs catalog tools against Truto: validate, split, dispatch, paginate, guard binaries.

This is the single execution path under every graph, the CLI and the LangChain tool wrappers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tools.catalog import ToolCatalog, ToolSpec
from tools.client import HTTP_VERBS, BinaryBody, TrutoClient
from tools.errors import MalformedResponseError, ToolArgumentError
from tools.paging import MAX_PAGES, PageWalk, PaginationError, list_envelope

if TYPE_CHECKING:  # langchain_core is heavy: imported where a model is given the tools, not by `tools`
    from langchain_core.tools import StructuredTool

log = logging.getLogger(__name__)

MODEL_RESULT_CAP = 8000  # characters of a tool result a model may see
# Keys an error object carries; a 2xx body made only of these is an error, not a record.
ERROR_ONLY_KEYS = frozenset({"error", "errors", "message", "status", "statusCode", "status_code", "code", "details"})

__all__ = [
    "MAX_PAGES",
    "MODEL_RESULT_CAP",
    "PaginationError",
    "ToolCall",
    "ToolExecutor",
    "check_body",
    "list_envelope",
    "render_for_model",
]


def check_body(spec: ToolSpec, body: Any) -> None:
    """Valid or error: a list must be a list envelope, a get (or write) an object, and no 2xx may be an error object.

    A body that fails is a `MalformedResponseError` (retried like other transient failures), never an empty result.
    An object whose `error`/`errors` holds something is an error whatever else it carries (Truto's own error body
    has `truto_is_remote_error` and `raw_response` too; an `error` beside a record's id is no record).
    The error names the call's HTTP verb: a write whose answer fails here may have been written (`may_have_written`).
    """
    verb = HTTP_VERBS.get(spec.method, "POST")
    if isinstance(body, Mapping) and (
        body.get("error")
        or body.get("errors")
        or (("error" in body or "errors" in body) and set(body) <= ERROR_ONLY_KEYS)
    ):
        raise MalformedResponseError(f"{spec.name}: a success status carried an error object", method=verb)
    if spec.method == "delete":
        return
    if spec.method == "list":
        list_envelope(body, tool=spec.name)
        return
    if body is None:
        raise MalformedResponseError(f"{spec.name}: the response body is null", method=verb)
    if spec.method in ("get", "create", "update") and not isinstance(body, Mapping):
        raise MalformedResponseError(f"{spec.name}: expected an object, got {type(body).__name__}", method=verb)


# Where a binary is (or will be) on disk, e.g. the recordings worker's manifest lookup.
BinaryLocator = Callable[[ToolSpec, Mapping[str, Any]], Mapping[str, Any]]


def binary_summary(
    spec: ToolSpec, arguments: Mapping[str, Any], body: BinaryBody, locator: BinaryLocator | None = None
) -> dict[str, Any]:
    """The binary guard's tool result: metadata and where the bytes will be fetched, never the bytes."""
    summary: dict[str, Any] = {
        "binary": True,
        "content_type": body.content_type,
        "size_bytes": body.size,
        "fetched_by": {"tool": spec.name, "arguments": dict(arguments)},
        "note": (
            "Binary media is not shown to the model. The recordings worker downloads it: "
            "`coviu-agent recordings --download DIR` (by --date or --session-id)."
        ),
    }
    if locator is not None:
        summary.update(locator(spec, arguments))
    return summary


def render_for_model(value: Any, cap: int = MODEL_RESULT_CAP) -> str:
    """Compact JSON for a model, capped at `cap` characters with a note saying what was cut."""
    text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    if len(text) <= cap:
        return text
    if isinstance(value, Mapping) and isinstance(value.get("result"), list):
        items = value["result"]
        kept = len(items)
        while kept > 0:
            kept = kept // 2 if kept > 8 else kept - 1
            trimmed = {
                **value,
                "result": items[:kept],
                "note": f"cut: showing {kept} of {len(items)} items to fit {cap} characters; "
                "narrow the query or page with a smaller limit",
            }
            text = json.dumps(trimmed, separators=(",", ":"), default=str, ensure_ascii=False)
            if len(text) <= cap:
                return text
    note = f"…[cut: {len(text) - cap + 80} more characters not shown; narrow the request]"
    return text[: max(0, cap - len(note))] + note


@dataclass(frozen=True)
class ToolCall:
    """One validated call, in both shapes a source may want: the proxy's split and the whole argument object."""

    arguments: Mapping[str, Any]  # validated arguments plus any extra query (cursor, limit): an MCP tools/call
    record_id: str | None
    query: Mapping[str, Any]
    body: Mapping[str, Any]
    idempotency_key: str | None = None


class Dispatch(Protocol):
    """How a validated call reaches Truto: the proxy (`/tools` source) or MCP `tools/call` (MCP source).

    Returns the JSON body, or `BinaryBody` metadata (never bytes); raises the typed errors of `tools.errors`.
    """

    async def __call__(self, spec: ToolSpec, call: ToolCall) -> Any: ...


class ProxyDispatch:
    """The `/tools` source's dispatch: Truto's proxy API by resource + method."""

    def __init__(self, client: TrutoClient) -> None:
        self.client = client

    async def __call__(self, spec: ToolSpec, call: ToolCall) -> Any:
        return await self.client.proxy(
            spec.resource,
            spec.method,
            record_id=call.record_id,
            query=call.query,
            body=call.body,
            idempotency_key=call.idempotency_key,
        )


# How a source's dispatch is made for a client (the run's: its budget paces the calls): `ProxyDispatch`, or the MCP
# source's `McpDispatch` bound to its session.
DispatchFor = Callable[[TrutoClient], Dispatch]


class ToolExecutor:
    """Executes tools by name: the one way any part of the app calls Coviu.

    Validation, the id check and the binary guard happen here whatever the source; only `dispatch`
    (proxy or MCP) differs.
    """

    def __init__(
        self,
        client: TrutoClient,
        catalog: ToolCatalog,
        binary_locator: BinaryLocator | None = None,
        dispatch: DispatchFor = ProxyDispatch,
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.binary_locator = binary_locator
        self._dispatch_for = dispatch
        self.dispatch: Dispatch = dispatch(client)

    def for_client(self, client: TrutoClient) -> ToolExecutor:
        """This executor sending through `client` (a run's: `TrutoClient.for_run`), with the same catalog and source."""
        return ToolExecutor(client, self.catalog, self.binary_locator, self._dispatch_for)

    def spec(self, name: str) -> ToolSpec:
        return self.catalog.get(name)

    def validate(self, name: str, arguments: Mapping[str, Any]) -> ToolSpec:
        spec = self.catalog.get(name)
        spec.validate(arguments)
        return spec

    def prepare(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> tuple[ToolSpec, ToolCall]:
        """Validate (the one place arguments are checked) and split a call; nothing is sent.

        Raises `ToolArgumentError` naming the field, or `UnknownToolError`.
        """
        spec = self.validate(name, arguments)
        record_id, query, body = spec.split(arguments)
        if spec.method in ("get", "update", "delete") and not record_id:
            raise ToolArgumentError(spec.name, "id", "the record's id (required for this tool)")
        if extra_query:
            query.update(extra_query)
        call = ToolCall(
            arguments={**arguments, **(extra_query or {})},
            record_id=record_id,
            query=query,
            body=body,
            idempotency_key=idempotency_key,
        )
        return spec, call

    async def send(self, spec: ToolSpec, call: ToolCall) -> Any:
        """Send a prepared call. Returns the checked JSON body, or the binary guard's metadata dict."""
        log.debug("tool %s (%s %s) id=%s", spec.name, spec.resource, spec.method, call.record_id)
        result = await self.dispatch(spec, call)
        if isinstance(result, BinaryBody) and spec.method in ("create", "update", "delete"):
            # a write answers with its record (or nothing), never media: not a success, and it may have been written
            raise MalformedResponseError(
                f"{spec.name}: a {result.content_type} body where a record was expected",
                method=HTTP_VERBS.get(spec.method, "POST"),
            )
        if isinstance(result, BinaryBody):
            arguments = {k: v for k, v in call.arguments.items() if k in spec.argument_names}  # not paging extras
            return binary_summary(spec, arguments, result, self.binary_locator)
        check_body(spec, result)
        return result

    async def run(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        extra_query: Mapping[str, Any] | None = None,
    ) -> Any:
        """Validate, then send. Returns the JSON body, or the binary guard's metadata dict."""
        spec, call = self.prepare(name, arguments, idempotency_key=idempotency_key, extra_query=extra_query)
        return await self.send(spec, call)

    def page_arguments(
        self, name: str, arguments: Mapping[str, Any], cursor: str | None, limit: int | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(arguments, extra query) for one page: `limit` and `next_cursor` go where the schema has them."""
        spec = self.spec(name)
        args = dict(arguments)
        extra: dict[str, Any] = {}
        for key, value in (("limit", limit), ("next_cursor", cursor)):
            if value is None:
                continue
            if spec.wants(key):
                args[key] = value
            else:
                extra[key] = value
        return args, extra

    async def pages(
        self, name: str, arguments: Mapping[str, Any], *, cursor: str | None = None, limit: int | None = None
    ) -> AsyncIterator[tuple[list[Any], str | None]]:
        """Yield (new rows, next_cursor) page by page until the list ends (the one pager: `PageWalk`)."""
        walk = PageWalk(name, self.spec(name).resource, cursor=cursor)
        while not walk.done:
            args, extra = self.page_arguments(name, arguments, walk.cursor, limit)
            rows = walk.take(await self.run(name, args, extra_query=extra))
            yield rows, walk.cursor

    async def all_items(self, name: str, arguments: Mapping[str, Any], *, limit: int | None = None) -> list[Any]:
        items: list[Any] = []
        async for page, _ in self.pages(name, arguments, limit=limit):
            items.extend(page)
        return items

    def langchain_tools(self, names: list[str] | None = None) -> list[StructuredTool]:
        """One StructuredTool per spec, for `bind_tools` (and usable on their own)."""
        return [self._structured_tool(spec) for spec in self.catalog if names is None or spec.name in names]

    def _structured_tool(self, spec: ToolSpec) -> StructuredTool:
        async def _run(**kwargs: Any) -> str:
            return render_for_model(await self.run(spec.name, kwargs))

        from langchain_core.tools import StructuredTool  # heavy: only where a model is given the tools

        return StructuredTool.from_function(
            coroutine=_run,
            name=spec.name,
            description=spec.description or spec.name,
            args_schema=spec.args_schema,
        )
