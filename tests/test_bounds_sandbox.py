"""Bounds against the sandbox's fault modes: storms waited out by time, huge or broken Retry-After values end
the run at once, dripped and oversized bodies end within the deadline.

The audit runs in-process on a fake clock (seconds, not minutes); bodies that must really stream (drip, oversized)
go through the sandbox served by uvicorn on loopback, since `httpx.ASGITransport` buffers whole bodies.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.audit import build_audit_graph
from graphs.context import Context, Services
from sandbox import FaultConfig, Sandbox, SandboxConfig, create_sandbox, generate_sessions
from sandbox.testing import sandbox_client
from tests.conftest import START, make_services
from tests.e2e import serve
from tools.client import TrutoClient
from tools.clock import FakeClock
from tools.errors import MalformedResponseError, RateLimitBudgetError, RetriesExhaustedError, TransportError
from tools.ratelimit import MIN_429_WAIT, RateLimitBudget, RateLimitGovernor

YESTERDAY = date(2026, 11, 24)
IA = {"integrated_account_id": "sandbox"}


async def audit(services: Services) -> dict[str, Any]:
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "a"}, "recursion_limit": 2000}
    return dict(await graph.ainvoke({"date": YESTERDAY.isoformat()}, config, context=Context(services=services)))


def world(**config: Any) -> tuple[Sandbox, FakeClock]:
    clock = FakeClock(start=START)
    sandbox = create_sandbox(SandboxConfig(**config), clock=clock)
    generate_sessions(sandbox.store, YESTERDAY, 30, seed=4)
    return sandbox, clock


def report_of(state: dict[str, Any]) -> dict[str, Any]:
    report = dict(state["report"])
    report.pop("generated_at", None)
    report.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    return report


# --- the sandbox's new fault modes ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
async def test_a_storm_of_the_next_n_calls_is_n_remote_429s_of_one_or_two_seconds(fmt: str) -> None:
    clock = FakeClock(start=START)
    sb = create_sandbox(
        SandboxConfig(faults=FaultConfig(rate_limit_storm_next=5), retry_after_format=fmt),  # type: ignore[arg-type]
        clock=clock,
    )
    async with sandbox_client(sb) as client:
        responses = [await client.get("/proxy/sessions", params=IA) for _ in range(6)]
    assert [r.status_code for r in responses] == [429] * 5 + [200]
    for r in responses[:5]:
        value = r.headers["retry-after"]
        assert value in ("1", "2") if fmt == "seconds" else value.endswith("GMT")
        assert r.json()["truto_is_remote_error"] is True


@pytest.mark.parametrize("value", ["3600", "inf", "1e400", "soon"])
async def test_the_storm_can_carry_any_raw_retry_after(value: str) -> None:
    sb = create_sandbox(SandboxConfig(faults=FaultConfig(rate_limit_storm_next=1, retry_after_value=value)))
    async with sandbox_client(sb) as client:
        response = await client.get("/proxy/sessions", params=IA)
    assert response.status_code == 429
    assert response.headers["retry-after"] == value == response.headers["ratelimit-reset"]


async def test_exhausted_reset_marks_successes_as_remaining_zero() -> None:
    sb = create_sandbox(SandboxConfig(faults=FaultConfig(exhausted_reset="86400")))
    async with sandbox_client(sb) as client:
        response = await client.get("/proxy/sessions", params=IA)
    assert response.status_code == 200
    assert (response.headers["ratelimit-remaining"], response.headers["ratelimit-reset"]) == ("0", "86400")


# --- the audit: a storm is waited out by time --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
async def test_the_audit_sits_out_a_storm_of_twenty_429s_and_reports_as_if_healthy(fmt: str, tmp_path: Path) -> None:
    sandbox, clock = world(retry_after_format=fmt)
    services = await make_services(sandbox, clock, tmp_path / "clean")
    try:
        healthy = report_of(await audit(services))
        services.report_dir = tmp_path / "storm"
        services.toolbox.budget.restart()
        sandbox.set_faults(FaultConfig(rate_limit_storm_next=20))
        stormy = report_of(await audit(services))
    finally:
        await services.toolbox.aclose()
    assert stormy == healthy
    assert sum(1 for r in sandbox.requests if r.fault == "rate_limit_storm") == 20
    waited = services.toolbox.rate_limit_waits
    assert waited["count"] >= 10 and 10 <= waited["seconds"] <= 60


@pytest.mark.parametrize("value", ["3600", "7200"])
async def test_a_retry_after_past_the_budget_ends_the_audit_at_once_naming_the_time(value: str, tmp_path: Path) -> None:
    sandbox, clock = world()
    services = await make_services(sandbox, clock, tmp_path)
    services.toolbox.client.budget = RateLimitBudget(1800)
    sandbox.set_faults(FaultConfig(rate_limit_storm_next=1, retry_after_value=value))
    started = clock.now()
    try:
        with pytest.raises(RateLimitBudgetError) as info:
            await audit(services)
    finally:
        await services.toolbox.aclose()
    assert info.value.until == started + timedelta(seconds=int(value))
    assert clock.now() - started < timedelta(seconds=5), "nothing was waited"
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


async def test_retry_after_zero_on_every_429_costs_a_floor_wait_each(tmp_path: Path) -> None:
    """A server answering every request 429 with `Retry-After: 0` (and `ratelimit-reset: 0`): each retry still waits
    `MIN_429_WAIT`, so a 120 s budget allows at most 120 / MIN_429_WAIT of them, then the run ends naming the limit.
    Before, each was retried at once: ~5 a second (586 requests in a 120 s probe; here the whole 1,000-429 storm)."""
    sandbox, clock = world()
    services = await make_services(sandbox, clock, tmp_path)
    budget = 120.0
    services.toolbox.client.budget = RateLimitBudget(budget)
    sandbox.set_faults(FaultConfig(rate_limit_storm_next=1000, retry_after_value="0"))
    started = clock.now()
    try:
        with pytest.raises(RateLimitBudgetError):
            await audit(services)
    finally:
        await services.toolbox.aclose()
    asked = sum(1 for r in sandbox.requests if r.fault == "rate_limit_storm")
    assert MIN_429_WAIT >= 1.0
    assert 10 <= asked <= budget / MIN_429_WAIT + 1
    assert clock.now() - started <= timedelta(seconds=budget + 10)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-5", "soon"])
async def test_broken_retry_after_values_fall_back_to_the_default_back_off(value: str, tmp_path: Path) -> None:
    sandbox, clock = world()
    services = await make_services(sandbox, clock, tmp_path / "clean")
    try:
        healthy = report_of(await audit(services))
        services.report_dir = tmp_path / "broken"
        sandbox.set_faults(FaultConfig(rate_limit_storm_next=3, retry_after_value=value))
        started = clock.now()
        broken = report_of(await audit(services))
    finally:
        await services.toolbox.aclose()
    assert broken == healthy
    assert timedelta(seconds=29) <= clock.now() - started < timedelta(seconds=60)  # 3 x the 10 s default


async def test_remaining_zero_for_a_day_ends_the_audit_instead_of_pacing_a_day(tmp_path: Path) -> None:
    sandbox, clock = world()
    services = await make_services(sandbox, clock, tmp_path)
    sandbox.set_faults(FaultConfig(exhausted_reset="86400"))
    started = clock.now()
    try:
        with pytest.raises(RateLimitBudgetError) as info:
            await audit(services)
    finally:
        await services.toolbox.aclose()
    assert "rate limited until" in str(info.value)
    assert clock.now() - started < timedelta(seconds=5)


# --- real HTTP: dripped and oversized bodies end within the deadline -------------------------------------


def served_client(url: str, **kwargs: Any) -> TrutoClient:
    return TrutoClient(
        base_url=url,
        api_key="sandbox",
        integrated_account_id="sandbox",
        governor=RateLimitGovernor(),
        timeout=httpx.Timeout(5.0),
        **kwargs,
    )


async def test_a_dripped_body_over_http_ends_at_the_deadline() -> None:
    sandbox = create_sandbox(SandboxConfig(faults=FaultConfig(drip_seconds=0.05)))
    with serve(sandbox) as served:
        async with served_client(served.url, request_deadline=0.6) as client:
            started = time.monotonic()
            with pytest.raises(TransportError, match="deadline"):
                await client.proxy("sessions", "list")
            elapsed = time.monotonic() - started
    assert elapsed < 2.0


async def test_an_oversized_body_over_http_is_stopped_at_the_cap() -> None:
    sandbox = create_sandbox(SandboxConfig(faults=FaultConfig(oversized_bytes=50_000_000)))
    with serve(sandbox) as served:
        async with served_client(served.url, max_json_bytes=2_000_000) as client:
            with pytest.raises(MalformedResponseError, match="cap"):
                await client.proxy("sessions", "list")


async def test_an_oversized_body_ends_the_audit_with_retries_spent(tmp_path: Path) -> None:
    sandbox, clock = world()
    sandbox.set_faults(FaultConfig(oversized_bytes=3_000_000, only_resources=["sessions"]))
    services = await make_services(sandbox, clock, tmp_path)
    services.toolbox.client.max_json_bytes = 1_000_000
    try:
        with pytest.raises(RetriesExhaustedError):
            await audit(services)
    finally:
        await services.toolbox.aclose()
