"""One MCP session per process, owned by a background task (anyio scopes must be exited by the task that entered
them); callers in any task share it, and the next call reopens it when it died."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import timedelta

import anyio
import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from tools.client import DEFAULT_TIMEOUT
from tools.mcp_source.errors import McpRefusedError, error_opening
from tools.mcp_source.http import Exchange, McpHttp, check_mcp_url, redacted_mcp_url

log = logging.getLogger(__name__)

MAX_TOOL_PAGES = 100
CLIENT_INFO = types.Implementation(name="coviu-agent", version="0.1.0")


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
        self._http = McpHttp(real, self._alias, transport)
        self._timeout = timeout
        self._headers = dict(headers or {})
        read = timeout.read if timeout.read is not None else 30.0
        self._read_timeout = timedelta(seconds=read + 15.0)  # a backstop: `McpHttp` answers timeouts first
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self.sessions_opened = 0
        self.server_name: str | None = None

    @property
    def exchanges(self) -> dict[str, Exchange]:
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

    @property
    def host(self) -> str:
        """The MCP server's host (messages name it; the URL's token stays out)."""
        return self._alias.host

    def _open_error(self, error: BaseException) -> BaseException:
        return error_opening(error, host=self.host)

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
