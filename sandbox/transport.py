"""An httpx transport that runs the sandbox in-process yet fails like a network: read timeouts, cut connections.

Use `httpx.AsyncClient(transport=SandboxTransport(sb), base_url="http://sandbox")`.
"""

from __future__ import annotations

import asyncio

import httpx

from sandbox.app import Sandbox
from sandbox.faults import ConnectionDropped


class SandboxTransport(httpx.ASGITransport):
    """`httpx.ASGITransport` over a `Sandbox`, enforcing the read timeout and mapping dropped connections."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(app=sandbox)
        self.sandbox = sandbox

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        read_timeout = timeouts.get("read")
        try:
            if read_timeout is None:
                return await super().handle_async_request(request)
            return await asyncio.wait_for(super().handle_async_request(request), timeout=read_timeout)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"sandbox did not answer within {read_timeout} s", request=request) from exc
        except ConnectionDropped as exc:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=request
            ) from exc
