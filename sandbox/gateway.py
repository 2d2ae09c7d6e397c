"""What the sandbox's MCP servers (sandbox/mcp.py) need of the Truto simulator (sandbox/app.py's `Sandbox`).

A third module so that neither imports the other back: `Sandbox` makes its `SandboxMcp` and is this protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request

from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.replies import Reply, RequestRecord


class TrutoGateway(Protocol):
    """The account's settings, clock, request log, published tools, token check and proxy handler."""

    config: SandboxConfig
    requests: list[RequestRecord]

    @property
    def clock(self) -> Clock: ...

    def tools(self, methods: list[str], tags: list[str]) -> list[dict[str, Any]]:
        """The tools the account publishes, filtered like `/tools` (methods AND tags)."""
        ...

    def authenticate(self, request: Request) -> None:
        """Raise TrutoError(401) unless the request carries the account's API token."""
        ...

    async def proxy(self, request: Request, record: RequestRecord, rest: list[str]) -> Reply:
        """Answer a `/proxy/...` request (`rest`: the path after `proxy`) with the account's rules and faults."""
        ...
