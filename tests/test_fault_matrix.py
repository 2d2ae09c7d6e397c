"""Triage and the audit under every injected fault: the fault-free result, or a clear failure.

Never a partial report presented as complete, never a duplicate write. In-process, on a fake clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from graphs.audit import build_audit_graph
from graphs.context import Context, Services
from graphs.triage import build_triage_graph
from sandbox import (
    FaultConfig,
    Sandbox,
    SandboxConfig,
    create_sandbox,
    generate_sessions,
)
from tests.conftest import START, make_services
from tools.clock import FakeClock
from tools.errors import RetriesExhaustedError
from tools.ratelimit import RateLimitBudget

YESTERDAY = date(2026, 11, 24)


@dataclass(frozen=True)
class Case:
    name: str
    faults: FaultConfig
    config: dict[str, Any]
    triage_faults: FaultConfig | None = None  # triage makes ~5 requests: denser faults so some land


CASES = [
    Case("429 storm, reset in seconds", FaultConfig(seed=1, rate_limit_storm=0.35), {}),
    Case(
        "429 storm, reset as Unix time", FaultConfig(seed=2, rate_limit_storm=0.35), {"ratelimit_reset_format": "unix"}
    ),
    Case(
        "429 storm, Retry-After as HTTP date",
        FaultConfig(seed=3, rate_limit_storm=0.3),
        {"retry_after_format": "http-date"},
    ),
    Case("502/504 burst", FaultConfig(seed=4, server_errors=0.3), {}),
    Case(
        "slow responses past the client timeout",
        FaultConfig(seed=5, slow=0.1, slow_seconds=1.5),
        {},
        FaultConfig(seed=3, slow=0.4, slow_seconds=1.5),
    ),
    Case("connections dropped mid-response", FaultConfig(seed=6, drop=0.25), {}, FaultConfig(seed=3, drop=0.4)),
    Case(
        "malformed JSON bodies", FaultConfig(seed=7, malformed_json=0.25), {}, FaultConfig(seed=3, malformed_json=0.6)
    ),
    Case("lost response on a create", FaultConfig(seed=8, lost_response=0.5), {"honour_idempotency_keys": False}),
]


async def build(sandbox: Sandbox, clock: FakeClock, tmp: Path) -> Services:
    """The shared test services, with a short client timeout so slow responses time out."""
    return await make_services(sandbox, clock, tmp, timeout=httpx.Timeout(0.5))


@pytest.fixture
async def world(tmp_path: Path, sandbox_config: SandboxConfig) -> AsyncIterator[tuple[Sandbox, FakeClock, Path]]:
    """A sandbox on this run's profile (every fault case runs on every profile), its clock and a directory."""
    clock = FakeClock(start=START)
    yield create_sandbox(sandbox_config, clock=clock), clock, tmp_path


async def triage(services: Services) -> dict[str, Any]:
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}, "recursion_limit": 200}
    state = await graph.ainvoke(
        {"messages": [HumanMessage("now")], "patient_name": "Mia Fault"}, config, context=Context(services=services)
    )
    return dict(state)


async def audit(services: Services) -> dict[str, Any]:
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "a"}, "recursion_limit": 2000}
    return dict(await graph.ainvoke({"date": YESTERDAY.isoformat()}, config, context=Context(services=services)))


def sessions_named(sandbox: Sandbox, name: str) -> list[Any]:
    return [s for s in sandbox.store.sessions.values() if s.session_name == name]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_triage_under_faults(case: Case, world: tuple[Sandbox, FakeClock, Path]):
    profiled, clock, tmp = world
    sandbox = create_sandbox(profiled.config.model_copy(update=case.config), clock=clock)
    services = await build(sandbox, clock, tmp)
    sandbox.set_faults(case.triage_faults or case.faults)
    try:
        state = await triage(services)
    except RetriesExhaustedError as exc:
        assert "gave up after" in str(exc)  # a clear failure (exit 3 in the CLI)
        state = None
    finally:
        await services.toolbox.aclose()
    made = sessions_named(sandbox, "Triage – Mia Fault")
    assert len(made) <= 1, "never a duplicate session"
    if state is not None:
        assert not state.get("failure"), state.get("failure")
        assert len(made) == 1 and state["session"]["session_id"] == made[0].session_id
        participants = [sandbox.store.participants[p] for p in made[0].participant_ids]
        assert sorted(p.role for p in participants) == ["GUEST", "HOST"], "never a duplicate participant"
        assert state["queue"]["waiting"] == 5
    assert sum(1 for r in sandbox.requests if r.fault) > 0, "the case injected no fault"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_audit_under_faults(case: Case, world: tuple[Sandbox, FakeClock, Path]):
    profiled, clock, tmp = world
    sandbox = create_sandbox(profiled.config.model_copy(update=case.config), clock=clock)
    generate_sessions(sandbox.store, YESTERDAY, 80, seed=9)
    services = await build(sandbox, clock, tmp / "clean")
    clean = (await audit(services))["report"]
    services.report_dir = tmp / "faulty"
    # the faulty run's own wait budget, with room: on small-page profiles a storm hits twice as many requests, and
    # the budget (a clear stop when spent, tested elsewhere) is not what this matrix is about
    services.toolbox.client.budget = RateLimitBudget(1800)
    services.audit_store = None  # no summary cache from the clean run: the faulty run fetches every summary again
    sandbox.set_faults(case.faults)
    try:
        faulty = (await audit(services))["report"]
    except RetriesExhaustedError:
        assert not (tmp / "faulty").exists() or not any((tmp / "faulty").iterdir()), "no partial report"
        return
    finally:
        await services.toolbox.aclose()
    assert sandbox.count(truto_method="create") == 0
    clean.pop("generated_at")
    clean.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    faulty.pop("generated_at")
    faulty.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    assert faulty == clean
    faults_seen = sum(1 for r in sandbox.requests if getattr(r, "fault", None))
    if case.faults.lost_response == 0:  # the audit makes no creates, so a lost create cannot happen to it
        assert faults_seen > 0, "the case injected no fault"


async def test_retries_spent_is_a_clear_failure_with_nothing_doubled(world: tuple[Sandbox, FakeClock, Path]):
    sandbox, clock, tmp = world
    services = await build(sandbox, clock, tmp)
    sandbox.set_faults(FaultConfig(seed=4, drop=0.4))  # five drops in a row on the queue list
    with pytest.raises(RetriesExhaustedError, match="gave up after 5 attempts"):
        await triage(services)
    await services.toolbox.aclose()
    assert sandbox.count(resource="sessions", truto_method="create") == 0
