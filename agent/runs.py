"""One run of a graph from start to typed result: thread ids, resume-or-start, checkpoint clean-up, exit codes.

The CLI parses flags into `TriageArgs` / `AuditArgs`, calls `run_triage` / `run_audit` and prints the result;
tests call the same functions with injected services and an in-memory checkpointer. Nothing here prints:
status lines go to the caller's `on_event`. Heavy imports (LangGraph) happen inside functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, EXIT_UPSTREAM, BadInput

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    from agent.settings import Settings
    from graphs.context import Services

Event = Callable[[str], None]
Progress = Callable[[str, int, int], None]
TRIAGE_RECURSION_LIMIT = 60
AUDIT_RECURSION_LIMIT = 10_000
AUDIT_CONCURRENCY = 4


@asynccontextmanager
async def _services_and_saver(
    settings: Settings,
    services: Services | None,
    checkpointer: BaseCheckpointSaver[str] | None,
    **build: Any,
) -> AsyncIterator[tuple[Services, BaseCheckpointSaver[str]]]:
    """The given services (with `build`'s fields set) or freshly opened ones; the given checkpointer or the
    settings' one. What this opened, it closes."""
    from agent.checkpoint import open_checkpointer
    from agent.services import open_services

    if services is not None:
        given = dataclasses.replace(services, **{k: v for k, v in build.items() if v is not None})
        if checkpointer is not None:
            yield given, checkpointer
            return
        async with open_checkpointer(settings.state) as saver:
            yield given, saver
        return
    async with open_services(settings, **build) as opened:
        if checkpointer is not None:
            yield opened, checkpointer
            return
        async with open_checkpointer(settings.state) as saver:
            yield opened, saver


async def _resume_or_start(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: Any,
    inputs: Mapping[str, Any],
    context: Any,
    *,
    before_resume: Callable[[Mapping[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Finish an interrupted run of the thread (crash, kill) instead of starting a second one; else start.
    Returns (the graph's output, whether it resumed)."""
    snapshot = await graph.aget_state(config)
    if snapshot.next:
        if before_resume is not None:
            before_resume(snapshot.values)
        state = await graph.ainvoke(None, config, context=context, durability="sync")
        return dict(state), True
    state = await graph.ainvoke(dict(inputs), config, context=context, durability="sync")
    return dict(state), False


# --- triage --------------------------------------------------------------------------------------


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


@dataclass
class TriageResult:
    """A finished (or stopped) triage: the graph's output and the thread it ran on."""

    thread_id: str
    resumed: bool
    state: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)  # e.g. rate_limit_waits

    @property
    def failure(self) -> str | None:
        failure = self.state.get("failure")
        return str(failure) if failure else None

    @property
    def exit_code(self) -> int:
        """0 done; 2 when the queue was never read because it does not exist (404); else 3."""
        if not self.failure:
            return EXIT_OK
        if self.state.get("queue") is None and self.state.get("last_error_status") == 404:
            return EXIT_BAD_INPUT
        return EXIT_UPSTREAM

    def as_dict(self) -> dict[str, Any]:
        """The result object of `triage --json` (README)."""
        result: dict[str, Any] = {
            "team_id": self.state.get("team_id"),
            "queue_id": self.state.get("waiting_queue_id"),
            "queue": self.state.get("queue"),
            "alerts": self.state.get("alerts", []),
            "session": self.state.get("session"),
            "participants": self.state.get("participants", []),
            "reply": self.state.get("reply", ""),
        }
        if self.state.get("planned_calls") is not None:  # a dry run (its input flags are reset when it ends)
            result["dry_run"] = True
            result["planned_calls"] = self.state.get("planned_calls") or []
        result["figures"] = self.figures
        return result


def triage_thread(team: str | None, queue: str | None, patient: str | None, request: str, day: str) -> str:
    """The default triage thread: the same request on the same day resumes an interrupted run.

    Hashed, so no patient name is stored in a thread id.
    """
    key = "|".join([team or "", queue or "", patient or "", request, day])
    return f"triage:{hashlib.sha256(key.encode()).hexdigest()[:24]}"


async def run_triage(
    settings: Settings,
    args: TriageArgs,
    *,
    services: Services | None = None,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    on_event: Event | None = None,
) -> TriageResult:
    """Run (or resume) one triage. The default thread resumes an interrupted run of the same request today;
    a finished one of the same request starts a new thread beside it."""
    from langchain_core.runnables import RunnableConfig

    from graphs.context import Context
    from graphs.triage import compile_triage

    async with _services_and_saver(settings, services, checkpointer) as (svc, saver):
        graph = compile_triage(saver)
        thread = args.thread_id or triage_thread(
            args.team_id or svc.team_id,
            args.queue_id or svc.waiting_queue_id,
            args.patient_name,
            args.request + ("|dry-run" if args.dry_run else ""),
            svc.clock.now().astimezone(svc.zone).date().isoformat(),
        )
        config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": TRIAGE_RECURSION_LIMIT}
        snapshot = await graph.aget_state(config)
        if not snapshot.next and snapshot.values and not args.thread_id:
            thread = f"{thread}:{uuid.uuid4().hex[:8]}"  # this request finished before: a new run beside it
            config = {"configurable": {"thread_id": thread}, "recursion_limit": TRIAGE_RECURSION_LIMIT}
        context = Context(team_id=args.team_id, waiting_queue_id=args.queue_id, services=svc)

        def announce(_: Mapping[str, Any]) -> None:
            if on_event is not None:
                on_event(f"resuming triage thread {thread}")

        state, resumed = await _resume_or_start(graph, config, args.inputs(), context, before_resume=announce)
        figures = {"rate_limit_waits": svc.toolbox.rate_limit_waits}
    return TriageResult(thread, resumed, state, figures)


# --- audit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditArgs:
    """An audit request: a day or a window (default yesterday), ids defaulting to the settings'."""

    day: str | None = None
    since: str | None = None
    until: str | None = None
    team_id: str | None = None
    collection_id: str | None = None
    overrun_threshold_minutes: float = 10
    out_dir: Path = Path("reports")
    thread_id: str | None = None


@dataclass
class AuditResult:
    """A finished audit: the report, the files written, and the thread it ran on (deleted once written)."""

    thread_id: str
    resumed: bool
    state: dict[str, Any]

    @property
    def report(self) -> dict[str, Any] | None:
        report = self.state.get("report")
        return report if isinstance(report, dict) and report else None

    @property
    def paths(self) -> dict[str, str]:
        return dict(self.state.get("report_paths") or {})

    @property
    def produced(self) -> bool:
        return self.report is not None and bool(self.paths)

    @property
    def complete(self) -> bool:
        return self.report is not None and bool(self.report.get("complete", True))

    @property
    def exit_code(self) -> int:
        """0 done; 3 no report; 5 the report is written but incomplete."""
        if not self.produced:
            return EXIT_UPSTREAM
        return EXIT_OK if self.complete else EXIT_INCOMPLETE


def audit_window(settings: Settings, args: AuditArgs, now: datetime) -> tuple[datetime, datetime]:
    """The audited [since, until), checked before any request (BadInput names the flag)."""
    from graphs.audit import WindowError, resolve_window

    try:
        since, until, _ = resolve_window(settings.zone, now, day=args.day, since=args.since, until=args.until)
    except WindowError as exc:
        raise BadInput(str(exc)) from None
    return since, until


def audit_thread(arguments: dict[str, Any]) -> str:
    """The default audit thread: the same arguments resume an interrupted run; other arguments start afresh."""
    key = json.dumps(arguments, sort_keys=True)
    return f"audit:{arguments['team_id']}:{arguments['since'][:10]}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def check_resumable(thread: str, values: Mapping[str, Any], arguments: dict[str, Any]) -> None:
    """Refuse to resume a thread that was started with other arguments (exit 2, with a hint)."""
    stored = {
        "team_id": values.get("team_id"),
        "collection_id": values.get("collection_id"),
        "since": (values.get("window") or {}).get("since"),
        "until": (values.get("window") or {}).get("until"),
        "overrun_threshold_minutes": values.get("overrun_threshold_minutes"),
    }
    differing = sorted(k for k, v in stored.items() if v is not None and v != arguments[k])
    if differing:
        raise BadInput(
            f"--thread-id: thread {thread} was started with other arguments ({', '.join(differing)}); "
            "rerun with the same arguments to resume it, or drop --thread-id to start a new audit"
        )


async def run_audit(
    settings: Settings,
    args: AuditArgs,
    *,
    services: Services | None = None,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    on_progress: Progress | None = None,
    on_event: Event | None = None,
) -> AuditResult:
    """Run (or resume) one audit; once its report is written, the thread's checkpoints (patient data) go."""
    from langchain_core.runnables import RunnableConfig

    from graphs.audit import compile_audit
    from graphs.context import Context

    async with _services_and_saver(
        settings, services, checkpointer, report_dir=args.out_dir, on_progress=on_progress
    ) as (svc, saver):
        since, until = audit_window(settings, args, svc.clock.now())
        # Every argument that changes the result is in the thread id: a resume never mixes two runs' flags.
        arguments = {
            "team_id": args.team_id or svc.team_id,
            "collection_id": args.collection_id or svc.collection_id,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "overrun_threshold_minutes": args.overrun_threshold_minutes,
        }
        thread = args.thread_id or audit_thread(arguments)
        config: RunnableConfig = {
            "configurable": {"thread_id": thread},
            "recursion_limit": AUDIT_RECURSION_LIMIT,
            "max_concurrency": AUDIT_CONCURRENCY,
        }
        inputs: dict[str, Any] = {"overrun_threshold_minutes": args.overrun_threshold_minutes}
        if args.day:
            inputs["date"] = args.day
        if args.since and args.until:
            inputs["since"], inputs["until"] = args.since, args.until
        if args.team_id:
            inputs["team_id"] = args.team_id
        if args.collection_id:
            inputs["collection_id"] = args.collection_id

        def resume(values: Mapping[str, Any]) -> None:
            check_resumable(thread, values, arguments)
            if on_event is not None:
                on_event(f"resuming audit thread {thread}")

        graph = compile_audit(saver)
        context = Context(team_id=args.team_id, collection_id=args.collection_id, services=svc)
        state, resumed = await _resume_or_start(graph, config, inputs, context, before_resume=resume)
        result = AuditResult(thread, resumed, state)
        if result.paths:
            await saver.adelete_thread(thread)  # the report is written: the checkpoints hold patient data
    return result
