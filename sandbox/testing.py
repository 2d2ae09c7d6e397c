"""Helpers for tests against the sandbox: a fake clock and an httpx client wired to the app in-process.

`FakeClock` moves only when told to (`advance`, `set`), so temporal rules and rate windows need no sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from sandbox.app import Sandbox
from sandbox.transport import SandboxTransport

DEFAULT_NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock for tests: wall time and monotonic time advance together, only when told to."""

    def __init__(self, start: datetime = DEFAULT_NOW, monotonic_start: float = 1000.0) -> None:
        self._wall = start
        self._mono = monotonic_start

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, moment: datetime) -> None:
        """Jump the wall clock (the monotonic clock moves by the same amount, never backwards)."""
        delta = (moment - self._wall).total_seconds()
        self._wall = moment
        self._mono += max(0.0, delta)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


def sandbox_client(sandbox: Sandbox, token: str = "sandbox-token", **kwargs: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` on `SandboxTransport(sandbox)` with base URL `http://sandbox` and a bearer token."""
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return httpx.AsyncClient(transport=SandboxTransport(sandbox), base_url="http://sandbox", headers=headers, **kwargs)
