"""Shared fixtures: a fake clock, the in-process sandbox, and services wired to it.

Every test runs against the sandbox (or mocks); nothing leaves loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from graphs.context import Services
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    Sandbox,
    SandboxConfig,
    SandboxTransport,
    create_sandbox,
)
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor
from tools.toolbox import open_toolbox

START = datetime(2026, 11, 25, 9, 0, 7, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig()


@pytest.fixture
def sandbox(clock: FakeClock, sandbox_config: SandboxConfig) -> Sandbox:
    return create_sandbox(config=sandbox_config, clock=clock)


async def make_services(
    sandbox: Sandbox, clock: FakeClock, report_dir: Path, *, timeout: httpx.Timeout | None = None, **kwargs: object
) -> Services:
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
        **({"timeout": timeout} if timeout is not None else {}),  # type: ignore[arg-type]
    )
    return Services(
        toolbox=toolbox,
        team_id=DEMO_TEAM_ID,
        waiting_queue_id=DEMO_WAITING_QUEUE_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        report_dir=report_dir,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def services(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Services]:
    built = await make_services(sandbox, clock, tmp_path / "reports")
    yield built
    await built.toolbox.aclose()
