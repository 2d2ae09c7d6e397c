"""Helpers for tests against the sandbox: an httpx client wired to the app in-process.

Tests drive the sandbox's clock with the product's `tools.clock.FakeClock` (the sandbox takes any object with
`now`, `monotonic` and `sleep`; it imports nothing of the product).
"""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.app import Sandbox
from sandbox.transport import SandboxTransport


def sandbox_client(sandbox: Sandbox, token: str = "sandbox-token", **kwargs: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` on `SandboxTransport(sandbox)` with base URL `http://sandbox` and a bearer token."""
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return httpx.AsyncClient(transport=SandboxTransport(sandbox), base_url="http://sandbox", headers=headers, **kwargs)
