"""Issue 23, state: a dry run is the command's, never the thread's; one run per thread at a time (a lock on the
thread in the state store, stale once its holder is gone)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agent.checkpoint import open_checkpointer
from agent.cli.common import run_async
from agent.errors import EXIT_OK, EXIT_UPSTREAM, BadInput
from agent.runs import AuditArgs, AuditResult, TriageArgs, run_ask, run_audit, run_triage
from agent.settings import Settings
from agent.threadlock import ThreadBusy, lock_path, thread_lock
from graphs.assistant import build_assistant_graph
from graphs.audit_store import open_audit_store
from graphs.context import Context, Services
from graphs.triage import build_triage_graph
from sandbox import DEMO_ACCOUNT_ID, Sandbox, SandboxTransport
from tests.fakes import ScriptedChatModel
from tests.test_assistant import demo
from tests.test_safety import cancel_a_then_b
from tools.clock import FakeClock
from tools.ratelimit import RateLimitGovernor
from tools.toolbox import open_toolbox


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


def writes(sandbox: Sandbox) -> list[tuple[str, str]]:
    return [
        (r.resource, r.truto_method)
        for r in sandbox.requests
        if r.resource is not None and r.truto_method not in ("list", "get")
    ]


async def interrupted_triage(saver: InMemorySaver, services: Services, thread: str) -> None:
    """A triage that stopped (crash, kill) after reading nothing: its next steps create a session and two links."""
    graph = build_triage_graph().compile(checkpointer=saver, interrupt_before=["act"])
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 60}
    inputs = {"messages": [HumanMessage("A priority patient needs a duty nurse now")], "patient_name": "Ava Jenkins"}
    await graph.ainvoke(inputs, config, context=Context(services=services))
    assert (await graph.aget_state(config)).next == ("act",)


async def test_a_dry_run_never_resumes_an_interrupted_triage(
    settings: Settings, services: Services, sandbox: Sandbox
) -> None:
    saver = InMemorySaver()
    await interrupted_triage(saver, services, "t-crashed")
    with pytest.raises(BadInput, match=r"--dry-run: thread t-crashed .* nothing was sent"):
        await run_triage(
            settings, TriageArgs(thread_id="t-crashed", dry_run=True), services=services, checkpointer=saver
        )
    assert writes(sandbox) == []
    # the thread is undamaged: the real command finishes it, once
    done = await run_triage(settings, TriageArgs(thread_id="t-crashed"), services=services, checkpointer=saver)
    assert done.resumed and done.failure is None
    assert sorted(writes(sandbox)) == [("participants", "create"), ("participants", "create"), ("sessions", "create")]


async def test_a_dry_run_on_a_fresh_thread_plans_and_sends_nothing(
    settings: Settings, services: Services, sandbox: Sandbox
) -> None:
    args = TriageArgs(thread_id="t-new", dry_run=True, patient_name="Ava Jenkins")
    result = await run_triage(settings, args, services=services, checkpointer=InMemorySaver())
    assert result.as_dict()["dry_run"] is True and result.as_dict()["planned_calls"]
    assert writes(sandbox) == []


# --------------------------------------------------------------------------- one run per thread at a time


def audit_settings(settings: Settings, wait: float = 10.0) -> Settings:
    return settings.model_copy(update={"thread_lock_wait_seconds": wait})


class GatedTransport(SandboxTransport):
    """The sandbox, holding the first summary request until `gate` opens: a run caught in the middle."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.gate = asyncio.Event()
        self.reached = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "session_summaries" in request.url.path and not self.gate.is_set():
            self.reached.set()
            await self.gate.wait()
        return await super().handle_async_request(request)


async def test_two_audits_of_one_day_started_together_never_damage_the_thread(
    settings: Settings, services: Services, sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    """A cron's audit is in the middle of the day when a person starts the same audit: the second waits its bound
    and exits 3 (it used to finish and delete the first one's rows: that one, and every rerun, then exited 3)."""
    saver = InMemorySaver()
    store = open_audit_store(settings.state)  # the side rows both runs see, as two processes do
    gated = GatedTransport(sandbox)
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=gated,
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    cron = dataclasses.replace(services, toolbox=toolbox, audit_store=store)
    person = dataclasses.replace(services, audit_store=store)
    args = AuditArgs(day="2026-11-24", out_dir=tmp_path / "out")
    first = asyncio.create_task(run_audit(settings, args, services=cron, checkpointer=saver))
    await asyncio.wait_for(gated.reached.wait(), 30)
    second: AuditResult | BaseException
    try:
        second = await run_audit(settings, args, services=person, checkpointer=saver)
    except ThreadBusy as exc:
        second = exc
    gated.gate.set()
    done = await first
    await toolbox.aclose()
    assert isinstance(second, ThreadBusy), second
    assert re.search(r"another run of this thread is in progress \(pid \d+, since 2026-", str(second))
    assert done.exit_code == EXIT_OK and done.complete
    rerun = await run_audit(settings, args, services=person, checkpointer=saver)
    await store.aclose()
    assert rerun.exit_code == EXIT_OK and rerun.complete


async def test_a_run_of_a_held_thread_waits_its_bound_then_exits_3_and_a_rerun_completes(
    settings: Settings, services: Services, clock: FakeClock, tmp_path: Path
) -> None:
    saver = InMemorySaver()
    args = AuditArgs(day="2026-11-24", out_dir=tmp_path / "out", thread_id="audit-day")
    waited_before = sum(clock.sleeps)
    async with thread_lock(settings.state, "audit-day", clock):
        with pytest.raises(ThreadBusy, match=rf"in progress \(pid {os.getpid()}, since 2026-11-25T09:00:07"):
            await run_audit(audit_settings(settings, 5), args, services=services, checkpointer=saver)
    assert 5 <= sum(clock.sleeps) - waited_before <= 6  # the bound, on the injected clock
    assert not [c async for c in saver.alist({"configurable": {"thread_id": "audit-day"}})]  # untouched
    done = await run_audit(settings, args, services=services, checkpointer=saver)
    assert done.exit_code == EXIT_OK
    assert not lock_path(settings.state, "audit-day").exists()  # its holder removed it


def test_the_cli_says_a_held_thread_in_one_line_with_exit_3(tmp_path: Path) -> None:
    async def held() -> None:
        raise ThreadBusy("audit-day", "pid 41, since 2026-11-25T09:00:07+00:00")

    with pytest.raises(typer.Exit) as caught:
        run_async(held, as_json=False)
    assert caught.value.exit_code == EXIT_UPSTREAM


LOCK_HOLDER = """
import fcntl, json, os, sys, time
path = sys.argv[1]
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "since": "2026-11-25T08:00:00+00:00"}).encode())
print("held", flush=True)
time.sleep(60)
"""


async def test_a_lock_left_by_a_killed_run_does_not_block(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    path = lock_path(settings.state, "audit-day")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        args = AuditArgs(day="2026-11-24", out_dir=tmp_path / "out", thread_id="audit-day")
        with pytest.raises(ThreadBusy, match=rf"pid {holder.pid}, since 2026-11-25T08:00:00"):
            await run_audit(audit_settings(settings, 0), args, services=services, checkpointer=InMemorySaver())
    finally:
        holder.kill()  # kill -9: the lock file stays behind, its flock goes with the process
        holder.wait()
    assert path.exists()
    done = await run_audit(audit_settings(settings, 0), args, services=services, checkpointer=InMemorySaver())
    assert done.exit_code == EXIT_OK


async def interrupted_ask(settings: Settings, services: Services, sandbox: Sandbox, thread: str) -> str:
    """An ask whose cancel was approved, then the process died before the call was sent: next is `act`."""
    a = demo(sandbox).sessions["future"]
    services.model = ScriptedChatModel(script=cancel_a_then_b)
    first = await run_ask(settings, f"cancel {a} {a}", services=services, thread_id=thread)
    assert [p["args"]["id"] for p in first.pending] == [a]
    async with open_checkpointer(settings.state) as saver:
        graph = build_assistant_graph().compile(checkpointer=saver, interrupt_before=["act"])
        config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 50}
        await graph.ainvoke(
            Command(resume={"decisions": [{"type": "approve"}]}), config, context=Context(services=services)
        )
        assert (await graph.aget_state(config)).next == ("act",)
    return a


@pytest.mark.profiles("default")
async def test_ask_dry_run_never_resumes_an_interrupted_thread(
    settings: Settings, services: Services, sandbox: Sandbox
) -> None:
    a = await interrupted_ask(settings, services, sandbox, "ask:crashed")
    for request in ("", "and what else?"):
        with pytest.raises(BadInput, match=r"--dry-run: thread ask:crashed .* nothing was sent"):
            await run_ask(settings, request, services=services, thread_id="ask:crashed", dry_run=True)
    assert sandbox.store.sessions[a].canceled_time is None and sandbox.count(truto_method="delete") == 0


class TickingClock(FakeClock):
    """A fake clock whose monotonic time moves a little at every read, as a real one does."""

    def monotonic(self) -> float:
        self.advance(0.001)
        return super().monotonic()


@pytest.mark.profiles("default")
async def test_a_run_waiting_for_a_held_thread_says_so_once_on_a_clock_that_moves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The 'waiting up to' line was said only when no time at all passed between two reads of the clock (a fake
    clock): on a real one, a run waited its bound in silence."""
    import logging

    state = str(tmp_path / "state.sqlite")
    clock = TickingClock()
    caplog.set_level(logging.INFO, logger="agent.threadlock")
    async with thread_lock(state, "audit-day", clock):
        with pytest.raises(ThreadBusy):
            async with thread_lock(state, "audit-day", clock, wait_seconds=2):
                pass
    said = [r for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(said) == 1


@pytest.mark.profiles("default")
async def test_one_state_store_named_through_a_symlink_holds_one_lock_per_thread(tmp_path: Path) -> None:
    """A cron naming the store by a symlink and a person naming the file itself run on one store: their locks were
    in two folders (`<link>.locks`, `<file>.locks`), so both ran the same thread at once."""
    real = tmp_path / "data" / "state.sqlite"
    real.parent.mkdir()
    real.touch()
    link = tmp_path / "state-link.sqlite"
    link.symlink_to(real)
    clock = FakeClock()
    async with thread_lock(str(real), "audit-day", clock):
        with pytest.raises(ThreadBusy):
            async with thread_lock(str(link), "audit-day", clock, wait_seconds=0):
                pass
