"""Shared helpers for the tool-layer tests: Truto-shaped responses served by `httpx.MockTransport`.

Nothing here touches the network or really sleeps: clients get a `FakeClock`-driven governor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import httpx

from tools.catalog import ToolCatalog
from tools.client import TrutoClient
from tools.clock import FakeClock
from tools.executor import ToolExecutor
from tools.ratelimit import RateLimitGovernor

BASE_URL = "https://api.truto.test"
API_KEY = "truto-test-token"
ACCOUNT_ID = "ia-7f3c"

Handler = Callable[[httpx.Request], httpx.Response]


# --- Truto-shaped responses ------------------------------------------------------------------------


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=dict(headers or {}))


def list_page(items: list[Any], next_cursor: str | None = None, *, key: str = "result") -> httpx.Response:
    """Truto's list envelope (`result`/`results` + `next_cursor`)."""
    return json_response(
        {key: items, "next_cursor": next_cursor, "prev_cursor": None, "result_count": len(items)},
    )


def truto_error(
    status: int,
    message: str = "",
    *,
    error: str | None = None,
    remote: bool | None = None,
    raw: Any = None,
    insight: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Truto's error body: statusCode, error, message (+ truto_is_remote_error, raw_response, insight)."""
    body: dict[str, Any] = {
        "statusCode": status,
        "error": error if error is not None else httpx.codes.get_reason_phrase(status),
        "message": message,
    }
    if remote is not None:
        body["truto_is_remote_error"] = remote
    if raw is not None:
        body["raw_response"] = raw
    if insight is not None:
        body["truto_error_insight"] = insight
    return httpx.Response(status, json=body, headers=dict(headers or {}))


class ExplodingStream(httpx.AsyncByteStream):
    """A response body that fails the test if anyone reads it; records whether it was closed."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.reads += 1
        raise AssertionError("the binary body was read")
        yield b""  # pragma: no cover (makes this an async generator)

    async def aclose(self) -> None:
        self.closed = True


class ChunkStream(httpx.AsyncByteStream):
    """A streamed body that yields chunks, or raises `error` after the first chunk."""

    def __init__(self, chunks: Iterable[bytes], error: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error
        self.reads = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            self.reads += 1
            yield chunk
            if self.error is not None and i == 0:
                raise self.error

    async def aclose(self) -> None:
        pass


# --- a recording mock server -----------------------------------------------------------------------


class MockTruto:
    """Wraps a handler (or a fixed sequence of responses) and records every request it gets."""

    def __init__(self, handler: Handler | None = None, responses: Iterable[httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._handler = handler
        self._responses = list(responses or [])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self._handler is not None:
            return self._handler(request)
        if not self._responses:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        return self._responses.pop(0) if len(self._responses) > 1 else self._responses[0]

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    @property
    def count(self) -> int:
        return len(self.requests)


def params(request: httpx.Request) -> list[tuple[str, str]]:
    """The decoded query pairs, in order."""
    return list(request.url.params.multi_items())


def body_json(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def make_client(
    handler: Handler,
    *,
    clock: FakeClock | None = None,
    governor: RateLimitGovernor | None = None,
    account: str = ACCOUNT_ID,
) -> TrutoClient:
    clock = clock or FakeClock()
    governor = governor or RateLimitGovernor(clock=clock)
    return TrutoClient(
        base_url=BASE_URL,
        api_key=API_KEY,
        integrated_account_id=account,
        governor=governor,
        transport=httpx.MockTransport(handler),
        budget=governor.budget,  # a test's governor used on its own: its budget is the run's
    )


def make_executor(handler: Handler, catalog: ToolCatalog | None = None, **kwargs: Any) -> ToolExecutor:
    return ToolExecutor(make_client(handler, **kwargs), catalog or coviu_catalog())


# --- a small Coviu-like catalog --------------------------------------------------------------------

DATE_TIME = {"type": "string", "format": "date-time"}

COVIU_TOOLS: list[dict[str, Any]] = [
    {
        "name": "list_all_coviu_sessions",
        "description": "List sessions in a time range.",
        "resource": "sessions",
        "method": "list",
        "query_schema": {
            "type": "object",
            "properties": {
                "start_time": {**DATE_TIME, "description": "Sessions starting after this time."},
                "end_time": DATE_TIME,
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "include_canceled": {"type": "boolean"},
            },
        },
        "body_schema": {"type": "object", "properties": {}},
        "required": [],
        "tags": ["sessions"],
    },
    {
        "name": "get_single_coviu_session_by_id",
        "description": "Get one session.",
        "resource": "sessions",
        "method": "get",
        "query_schema": {"type": "object", "properties": {"id": {"type": "string", "description": "Session id."}}},
        "body_schema": {},
        "required": ["id"],
    },
    {
        "name": "create_a_coviu_session",
        "description": "Create a session.",
        "resource": "sessions",
        "method": "create",
        "query_schema": {"type": "object", "properties": {}},
        "body_schema": {
            "type": "object",
            "properties": {
                "session_name": {"type": "string"},
                "start_time": DATE_TIME,
                "end_time": DATE_TIME,
                "picture": {"type": "string"},
            },
        },
        "required": ["session_name", "start_time", "end_time"],
    },
    {
        "name": "update_a_coviu_session_by_id",
        "description": "Update a session.",
        "resource": "sessions",
        "method": "update",
        "query_schema": {},
        "body_schema": {
            "type": "object",
            "properties": {"session_name": {"type": "string"}, "start_time": DATE_TIME, "end_time": DATE_TIME},
        },
        "required": ["id"],
    },
    {
        "name": "delete_a_coviu_session_by_id",
        "description": "Cancel a session (irreversible).",
        "resource": "sessions",
        "method": "delete",
        "query_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        "required": ["id"],
    },
    {
        "name": "create_a_coviu_participant",
        "description": "Add a participant to a session.",
        "resource": "participants",
        "method": "create",
        "body_schema": {
            "type": "object",
            "properties": {
                "session_id": {"type": "string"},
                "display_name": {"type": "string"},
                "role": {"type": "string", "enum": ["guest", "host"]},
            },
        },
        "required": ["session_id", "display_name", "role"],
    },
    {
        "name": "list_all_coviu_participants",
        "description": "List a session's participants.",
        "resource": "participants",
        "method": "list",
        "query_schema": {"type": "object", "properties": {"session_id": {"type": "string"}}},
        "required": ["session_id"],
    },
    {
        "name": "get_single_coviu_recording_by_id",
        "description": "Download a recording.",
        "resource": "recordings",
        "method": "get",
        "query_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        "required": ["id"],
    },
    {
        "name": "end_a_coviu_session",
        "description": "A custom method: end a session now.",
        "resource": "sessions",
        "method": "end",
        "body_schema": {"type": "object", "properties": {"session_id": {"type": "string"}}},
        "required": ["session_id"],
    },
]


def coviu_catalog() -> ToolCatalog:
    return ToolCatalog.from_truto_response({"result": COVIU_TOOLS})
