"""The triage run: its request, its default thread (the same request today resumes an interrupted run), and
the run on that thread under its lock.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import BadInput
from agent.runs.base import Event, _resume_or_start, _services_and_saver, dry_run_meets_interrupted, observed
from agent.runs.results import TriageResult

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    from agent.settings import Settings
    from graphs.context import Context, Services


TRIAGE_RECURSION_LIMIT = 60


@dataclass(frozen=True)
class TriageArgs:
    """A triage request as the caller gave it (flags or fields); ids default to the settings'."""

    request: str = ""
    team_id: str | None = None
    queue_id: str | None = None
    patient_name: str | None = None
    host_name: str = "Duty clinician"
    duration_minutes: int = 30
    wait_threshold_minutes: float = 15
    thread_id: str | None = None
    dry_run: bool = False  # plan every write and send none

    def inputs(self) -> dict[str, Any]:
        from langchain_core.messages import HumanMessage

        inputs: dict[str, Any] = {
            "messages": [HumanMessage(content=self.request or "Triage the waiting queue now.")],
            "host_name": self.host_name,
            "duration_minutes": self.duration_minutes,
            "wait_threshold_minutes": self.wait_threshold_minutes,
        }
        if self.patient_name:
            inputs["patient_name"] = self.patient_name
        if self.dry_run:
            inputs["dry_run"] = True
        return inputs


def triage_thread(team: str | None, queue: str | None, patient: str | None, request: str, day: str) -> str:
    """The default triage thread: the same request on the same day resumes an interrupted run.

    Hashed, so no patient name is stored in a thread id.
    """
    key = "|".join([team or "", queue or "", patient or "", request, day])
    return f"triage:{hashlib.sha256(key.encode()).hexdigest()[:24]}"


@observed("triage")
async def run_triage(
    settings: Settings,
    args: TriageArgs,
    *,
    services: Services | None = None,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    on_event: Event | None = None,
) -> TriageResult:
    """Run (or resume) one triage. The default thread resumes an interrupted run of the same request today;
    a finished one of the same request starts a new thread beside it. The run holds the thread's lock
    (`agent.threadlock`): a second run of the same thread waits for it, then fails with ThreadBusy (exit 3)."""
    from agent.threadlock import thread_lock
    from graphs.context import Context, run_ids
    from graphs.triage import compile_triage

    async with _services_and_saver(settings, services, checkpointer) as (svc, saver):
        graph = compile_triage(saver)
        # the ids go in the run's context, the one place the graph reads them from (settings as defaults)
        context = Context(team_id=args.team_id, waiting_queue_id=args.queue_id, services=svc)
        ids = run_ids(context, svc)
        thread = args.thread_id or triage_thread(
            ids.team_id,
            ids.waiting_queue_id,
            args.patient_name,
            args.request + ("|dry-run" if args.dry_run else ""),
            svc.clock.now().astimezone(svc.zone).date().isoformat(),
        )
        async with thread_lock(settings.state, thread, svc.clock, wait_seconds=settings.thread_lock_wait_seconds):
            return await _triage_on(graph, thread, args, context, on_event)


async def _triage_on(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    thread: str,
    args: TriageArgs,
    context: Context,
    on_event: Event | None,
) -> TriageResult:
    """Triage on its thread, whose lock the caller holds."""
    from langchain_core.runnables import RunnableConfig

    assert context.services is not None
    svc = context.services
    config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": TRIAGE_RECURSION_LIMIT}
    snapshot = await graph.aget_state(config)
    if not snapshot.next and snapshot.values and not args.thread_id:
        thread = f"{thread}:{uuid.uuid4().hex[:8]}"  # this request finished before: a new run beside it
        config = {"configurable": {"thread_id": thread}, "recursion_limit": TRIAGE_RECURSION_LIMIT}
    if args.dry_run and (await graph.aget_state(config)).next:
        raise BadInput(dry_run_meets_interrupted("triage", thread))

    def announce(_: Mapping[str, Any]) -> None:
        if on_event is not None:
            on_event(f"resuming triage thread {thread}")

    state, resumed = await _resume_or_start(graph, config, args.inputs(), context, before_resume=announce)
    figures = {"rate_limit_waits": svc.toolbox.rate_limit_waits}
    return TriageResult(thread, resumed, state, figures)
