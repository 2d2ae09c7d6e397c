"""One run of a graph from start to typed result: thread ids, resume-or-start, checkpoint clean-up, exit codes.

`run_triage`, `run_audit`, `run_ask` (the assistant), `run_recordings` (the download worker), `run_tools` (the
catalog) and `run_queue_watch`: each opens the services (`agent.services.open_services`) and the checkpointer it
needs, unless the caller passes its own, and returns a typed result. The CLI parses flags, calls one of these and
prints the result; tests call the same functions with injected services and an in-memory checkpointer. Nothing here
prints: status lines go to the caller's `on_event`. Heavy imports (LangGraph) happen inside functions.

Two run families live beside this module, each one concern: agent/schedules.py (`run_schedule_audit`,
`run_schedule_list`, `run_schedule_delete`, `run_server_status`: crons on a LangGraph server) and
agent/mcp_servers.py (`run_mcp_create`, `run_mcp_list`, `run_mcp_delete`: the account's Truto MCP servers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import shlex
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from agent.errors import (
    EXIT_APPROVAL,
    EXIT_BAD_INPUT,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_UPSTREAM,
    BadInput,
    exit_code_for,
)

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    from agent.settings import Settings
    from graphs.context import Context, Services
    from workers.recordings import RecordingsReport, Transcriber

P = ParamSpec("P")
R = TypeVar("R")
Event = Callable[[str], None]
Progress = Callable[[str, int, int], None]
TRIAGE_RECURSION_LIMIT = 60
AUDIT_RECURSION_LIMIT = 10_000
AUDIT_CONCURRENCY = 4


@asynccontextmanager
async def _services(settings: Settings, services: Services | None, **build: Any) -> AsyncIterator[Services]:
    """The given services (a copy with `build`'s Services fields set; the caller's stay as they are) or services
    opened from the settings with `build` (`agent.services.open_services`), closed after the block."""
    from agent.services import open_services

    if services is not None:
        fields = {f.name for f in dataclasses.fields(services)}
        yield dataclasses.replace(services, **{k: v for k, v in build.items() if v is not None and k in fields})
        return
    async with open_services(settings, **build) as opened:
        yield opened


@asynccontextmanager
async def _services_and_saver(
    settings: Settings,
    services: Services | None,
    checkpointer: BaseCheckpointSaver[str] | None,
    **build: Any,
) -> AsyncIterator[tuple[Services, BaseCheckpointSaver[str]]]:
    """`_services`, and the given checkpointer or the settings' one. What this opened, it closes."""
    from agent.checkpoint import open_checkpointer

    async with _services(settings, services, **build) as svc:
        if checkpointer is not None:
            yield svc, checkpointer
            return
        async with open_checkpointer(settings.state) as saver:
            yield svc, saver


def dry_run_meets_interrupted(command: str, thread: str) -> str:
    """A dry run never resumes: an interrupted thread's next step may be a write (exit 2, nothing sent)."""
    return (
        f"--dry-run: thread {thread} holds an interrupted {command} run whose next steps may write; a dry run "
        f"never resumes one and nothing was sent. Finish it with `coviu-agent {command} --thread-id {thread}` "
        "(without --dry-run), or drop --thread-id to plan afresh"
    )


async def _resume_or_start(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: Any,
    inputs: Mapping[str, Any],
    context: Any,
    *,
    before_resume: Callable[[Mapping[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Finish an interrupted run of the thread (crash, kill) instead of starting a second one; else start.
    Returns (the graph's output, whether it resumed). Every input key must be one the graph's input schema
    declares (LangGraph drops any other without a word); the ids go in the run's context."""
    undeclared = sorted(set(inputs) - declared_inputs(graph))
    if undeclared:
        raise TypeError(f"{graph.get_name()}: inputs {', '.join(undeclared)} are not in its input schema")
    snapshot = await graph.aget_state(config)
    if snapshot.next:
        if before_resume is not None:
            before_resume(snapshot.values)
        state = await graph.ainvoke(None, config, context=context, durability="sync")
        return dict(state), True
    state = await graph.ainvoke(dict(inputs), config, context=context, durability="sync")
    return dict(state), False


def declared_inputs(graph: CompiledStateGraph[Any, Any, Any, Any]) -> frozenset[str]:
    """The keys a caller may give `graph` (its `input_schema`, a TypedDict): what the CLI and the server send."""
    schema = graph.builder.input_schema
    return frozenset(getattr(schema, "__required_keys__", set()) | getattr(schema, "__optional_keys__", set()))


def observed(graph: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """A run of `graph`, traced and counted (`tools.telemetry.run`, a no-op unless configured): its clinic, outcome,
    exit code, duration, and (audit) sessions and flags, (triage) alerts, from its result."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            from tools import telemetry

            with telemetry.run(graph, _clinic_hint(args, kwargs)) as traced:
                # The run log's write is blocking SQLite (waiting up to 30 s for the file's lock): off the event loop,
                # where another run of this process (a fleet's clinic) may hold that lock until the loop lets it
                # commit. On the loop, the two waited on each other: "database is locked" (issue 28).
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        await asyncio.to_thread(_log_run, args, kwargs, traced.record, None, exc)
                    else:  # cancelled or interrupted: the loop is stopping, nothing else of ours runs on it
                        _log_run(args, kwargs, traced.record, None, exc)
                    raise
                traced.finish(**run_facts(result))
                await asyncio.to_thread(_log_run, args, kwargs, traced.record, result, None)
                return result

        return run

    return wrap


def _log_run(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], record: Any, result: Any, error: BaseException | None
) -> None:
    """One row in the run log of the settings' state store (`agent.runlog`), for `coviu-agent status`; a run given
    its own checkpointer (a test, an embedding) keeps its own books."""
    settings = args[0] if args else kwargs.get("settings")
    state = getattr(settings, "state", None)
    if kwargs.get("checkpointer") is not None or not isinstance(state, str):
        return
    import time
    from datetime import UTC

    from agent import runlog
    from tools.telemetry import OUTCOMES, exit_code_of

    facts = run_facts(result) if result is not None else {}
    code = exit_code_of(error) if error is not None else int(facts.get("exit_code", EXIT_OK))
    paths = getattr(result, "paths", None) or {}
    now = time.time()
    runlog.record(
        state,
        runlog.RunEntry(
            graph=record.graph,
            clinic=str(facts.get("clinic") or record.clinic or ""),
            thread_id=getattr(result, "thread_id", None),
            started_at=datetime.fromtimestamp(record.started, UTC).isoformat(timespec="seconds"),
            finished_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            duration_seconds=round(now - record.started, 3),
            outcome=OUTCOMES.get(code, "error"),
            exit_code=code,
            report_path=paths.get("md") or paths.get("json") or next(iter(paths.values()), None),
        ),
    )


def _clinic_hint(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The clinic (team id) a run is for, before it starts: the request's, else the settings' (the result's wins)."""
    request = args[1] if len(args) > 1 else None
    team = (
        getattr(request, "team_id", None) or kwargs.get("team_id") or getattr(kwargs.get("services"), "team_id", None)
    )
    settings = args[0] if args else None
    # no team known (a clinic that failed before its graph ran): its account, so that clinics stay apart
    account = getattr(settings, "truto_integrated_account_id", None)
    return str(team or getattr(settings, "coviu_team_id", None) or account or "")


def run_facts(result: Any) -> dict[str, Any]:
    """What a run's result says for its metrics: outcome, exit code, clinic, counts (ids and counts only)."""
    from tools.telemetry import OUTCOMES

    code = int(getattr(result, "exit_code", EXIT_OK))
    facts: dict[str, Any] = {"outcome": OUTCOMES.get(code, "error"), "exit_code": code}
    state = getattr(result, "state", None)
    if isinstance(state, Mapping):
        facts["clinic"] = state.get("team_id")
    if isinstance(result, AuditResult) and result.report is not None:
        from collections import Counter

        sessions = list(result.report.get("sessions") or [])
        facts["clinic"] = result.report.get("team_id") or facts.get("clinic")
        facts["sessions"] = len(sessions)
        facts["flags"] = dict(Counter(str(f) for row in sessions for f in row.get("flags") or []))
    elif isinstance(result, TriageResult):
        facts["alerts"] = len(result.state.get("alerts") or [])
    elif isinstance(result, RecordingsRun):
        facts["clinic"] = result.team_id
    return facts


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
        """0 done; 2 when the failure was our input (an invalid id, nothing sent; or an id the account does not
        know, a 404); else 3."""
        if not self.failure:
            return EXIT_OK
        if self.state.get("last_error_input") or self.state.get("last_error_status") == 404:
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
            # llm, rules, or "llm then rules" (the rules finished what the model skipped); the note says why
            "planner": self.state.get("planner"),
        }
        if self.state.get("planner_note"):
            result["planner_note"] = self.state.get("planner_note")
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
    refresh: bool = False  # fetch every summary again, ignoring (and rewriting) the summary cache
    rerun: str = "coviu-agent audit"  # the command staff are told to run again (its window flags are added)


@dataclass
class AuditResult:
    """A finished audit: the report, the files written, and the thread it ran on (deleted once written)."""

    thread_id: str
    resumed: bool
    state: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)  # this run's, not the day's: e.g. rate_limit_waits

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
    from graphs.audit_window import WindowError, resolve_window

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


@observed("audit")
async def run_audit(
    settings: Settings,
    args: AuditArgs,
    *,
    services: Services | None = None,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    on_progress: Progress | None = None,
    on_event: Event | None = None,
) -> AuditResult:
    """Run (or resume) one audit; once its report is written, the thread's checkpoints (patient data) go. With
    channels, staff are told of a failure (exit 3), also one before the graph ran (Truto down at the catalog)."""
    from agent.threadlock import ThreadBusy

    try:
        return await _audit(
            settings, args, services=services, checkpointer=checkpointer, on_progress=on_progress, on_event=on_event
        )
    except (BadInput, ThreadBusy):  # nothing was attempted, or another run of the same audit goes on
        raise
    except Exception as exc:
        if services is None:  # opened here (given services: the caller opened them and tells its own failure)
            await tell_audit_failed(settings, args, None, exc)
        raise


@observed("audit")
async def audit_not_started(settings: Settings, args: AuditArgs, error: Exception) -> AuditResult:
    """A fleet clinic whose services could not be opened (its account unknown, Truto down at the tool catalog):
    raises `error`, recorded as that clinic's failed audit run (run log for `status`, textfile, traces) as a run
    that started would be; without it the clinic's failure is nowhere but the fleet summary."""
    raise error


async def _audit(
    settings: Settings,
    args: AuditArgs,
    *,
    services: Services | None,
    checkpointer: BaseCheckpointSaver[str] | None,
    on_progress: Progress | None,
    on_event: Event | None,
) -> AuditResult:
    from langchain_core.runnables import RunnableConfig

    from agent.threadlock import thread_lock
    from graphs.audit import compile_audit
    from graphs.context import Context, run_ids

    async with _services_and_saver(
        settings, services, checkpointer, report_dir=args.out_dir, on_progress=on_progress
    ) as (svc, saver):
        since, until = audit_window(settings, args, svc.clock.now())
        # the ids go in the run's context, the one place the graph reads them from (settings as defaults)
        ids = run_ids(Context(team_id=args.team_id, collection_id=args.collection_id), svc)
        # Every argument that changes the result is in the thread id: a resume never mixes two runs' flags.
        arguments = {
            "team_id": ids.team_id,
            "collection_id": ids.collection_id,
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
        if args.refresh:
            inputs["refresh"] = True

        def resume(values: Mapping[str, Any]) -> None:
            check_resumable(thread, values, arguments)
            if on_event is not None:
                on_event(f"resuming audit thread {thread}")

        graph = compile_audit(saver)
        outbox = _audit_outbox(settings, svc, arguments, args)
        if outbox is not None:
            from agent.notify import audit_failure_notifier, audit_notifier, rerun_for_window

            clinic = _audit_clinic(settings, arguments)
            svc = dataclasses.replace(
                svc,
                on_report=audit_notifier(
                    outbox,
                    clinic=clinic,
                    zone=svc.zone,
                    rerun=lambda report: rerun_for_window(report, svc.zone, args.rerun),
                ),
                on_audit_failed=audit_failure_notifier(
                    outbox,
                    clinic=clinic,
                    label=svc.clinic_name or f"team {arguments['team_id']}",
                    zone=svc.zone,
                    rerun=args.rerun,
                ),
            )
        window = {"since": arguments["since"], "until": arguments["until"]}
        context = Context(team_id=args.team_id, collection_id=args.collection_id, services=svc)
        # one run of a thread at a time: a second one (a cron and a person) waits, then exits 3, thread untouched
        async with thread_lock(settings.state, thread, svc.clock, wait_seconds=settings.thread_lock_wait_seconds):
            try:
                state, resumed = await _resume_or_start(graph, config, inputs, context, before_resume=resume)
            except (BadInput, KeyboardInterrupt):
                raise
            except Exception as exc:
                if svc.on_audit_failed is not None:
                    what, resumes = f"{type(exc).__name__}: {exc}", exit_code_for(exc) == EXIT_UPSTREAM
                    await svc.on_audit_failed(window, what, resumes)
                raise
            result = AuditResult(thread, resumed, state, {"rate_limit_waits": svc.toolbox.rate_limit_waits})
            if svc.on_audit_failed is not None and not result.produced:
                await svc.on_audit_failed(window, str(state.get("failure") or "no report"), True)
            if result.paths:
                await saver.adelete_thread(thread)  # the report is written: the checkpoints hold patient data
    return result


def _audit_clinic(settings: Settings, arguments: Mapping[str, Any]) -> str:
    """The clinic an audit message is about: its account and team (clinics of a fleet may share a team id)."""
    return f"{settings.truto_integrated_account_id or 'sandbox'}:{arguments['team_id']}"


def _audit_outbox(settings: Settings, svc: Services, arguments: Mapping[str, Any], args: AuditArgs) -> Any:
    """The outbox the audit's messages go through, when a channel is configured (else None: nobody is told)."""
    channels = settings.channels()
    if not channels:
        return None
    from agent.notify import Outbox
    from graphs.audit_store import memory_store

    return Outbox(svc.audit_store or memory_store(), channels, svc.clock)


async def tell_audit_failed(settings: Settings, args: AuditArgs, clock: Any, exc: BaseException) -> None:
    """Tell the settings' channels that an audit failed before its services or graph were up (the tool catalog or
    the state store): the message a failure inside it sends (`agent.notify.audit_failure_notifier`), with the same
    id (so never twice). Never raises."""
    import logging

    from agent.checkpoint import StateStoreUnavailable
    from agent.local_inputs import StateStoreUnreachable
    from agent.notify import Outbox, audit_failure_notifier
    from agent.services import clinic_ids
    from graphs.audit_store import open_audit_store
    from tools.clock import SystemClock

    if isinstance(exc, StateStoreUnavailable | StateStoreUnreachable):
        return  # the outbox is in that store: nothing can be written (and a second connection would wait again)
    try:
        channels = settings.channels()
        team = args.team_id or clinic_ids(settings)[0]
        if not channels or not team:
            return
        clock = clock or SystemClock()
        since, until = audit_window(settings, args, clock.now())
        arguments = {"team_id": team, "since": since.isoformat(), "until": until.isoformat()}
        store = open_audit_store(settings.state)
        try:
            tell = audit_failure_notifier(
                Outbox(store, channels, clock),
                clinic=_audit_clinic(settings, arguments),
                label=settings.coviu_clinic_name or f"team {team}",
                zone=settings.zone,
                rerun=args.rerun,
            )
            window = {"since": arguments["since"], "until": arguments["until"]}
            await tell(window, f"{type(exc).__name__}: {exc}", exit_code_for(exc) == EXIT_UPSTREAM)
        finally:
            await store.aclose()
    except Exception as error:  # telling staff never changes the audit's own outcome
        logging.getLogger(__name__).warning("the audit's failure could not be told (%s)", type(error).__name__)


# --- tools ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolListing:
    """The tools Truto serves for the account, sorted by name."""

    source: str
    tools: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """The result object of `tools --json` (`catalog`: "tools" or "mcp"; the CLI adds the data's `source`)."""
        return {"catalog": self.source, "count": len(self.tools), "tools": self.tools}


async def run_tools(settings: Settings, *, services: Services | None = None) -> ToolListing:
    """The account's tool catalog: name, resource, method and required arguments of each tool."""
    async with _services(settings, services) as svc:
        catalog = svc.toolbox.catalog
        rows = [
            {"name": s.name, "resource": s.resource, "method": s.method, "required": list(s.args_schema["required"])}
            for s in sorted(catalog, key=lambda s: s.name)
        ]
        return ToolListing(str(catalog.source), rows)


# --- queue watch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueWatchArgs:
    """`queue watch`: which queue, how often, what counts as a long wait (and an escalation: default twice that),
    how many checks (0: until stopped)."""

    interval: float = 30
    threshold_minutes: float = 15
    team_id: str | None = None
    queue_id: str | None = None
    max_checks: int = 0
    escalate_minutes: float | None = None

    @property
    def escalation(self) -> float:
        return self.escalate_minutes if self.escalate_minutes is not None else 2 * self.threshold_minutes


@dataclass(frozen=True)
class QueueCheck:
    """One check of the queue: its summary and the alerts not raised by an earlier check; with notification
    channels, the events raised (ids and levels, no names), what was delivered, and whether it is quiet hours."""

    team_id: str
    queue_id: str
    at: datetime
    summary: dict[str, Any]
    alerts: list[str]
    events: list[dict[str, Any]] | None = None
    delivery: dict[str, Any] | None = None
    quiet: bool = False

    def as_dict(self) -> dict[str, Any]:
        """One line of `queue watch --json`."""
        out: dict[str, Any] = {
            "team_id": self.team_id,
            "queue_id": self.queue_id,
            "queue": self.summary,
            "alerts": self.alerts,
        }
        if self.events is not None:
            out["events"] = self.events
            out["delivery"] = self.delivery
            out["quiet_hours"] = self.quiet
            out["checked_at"] = self.at.isoformat()
        return out


QUEUE_MEMORY_SECONDS = 24 * 3600  # how far back `queue watch` remembers the alerts it raised (for "seen")
QUEUE_STATUS_KIND = "queue-watch"


def queue_status_run(team: str, queue: str) -> str:
    return f"queue-watch:{team}:{queue}"


async def run_queue_watch(
    settings: Settings,
    args: QueueWatchArgs,
    on_check: Callable[[QueueCheck], None],
    *,
    services: Services | None = None,
    sender: Any = None,
) -> int:
    """Check the waiting queue every `interval` seconds, alerting once per call over the threshold (and once per
    call whose wait cannot be read); each check may wait out rate limits for its own budget. Returns the checks.

    With notification channels (COVIU_AGENT_NOTIFY...), each call's alert, escalation and "seen" note goes through
    the outbox in the state store (once per call and level, remembered across restarts; held back as "quiet" in
    quiet hours). Each successful check's time is kept in the store (`coviu-agent queue status`)."""
    import asyncio

    from graphs.audit_store import memory_store
    from graphs.queue import QueueSummary, alert_lines, summarize_queue
    from tools.retry import call_with_retries

    channels = settings.channels()  # a bad URL is named before any request
    async with _services(settings, services) as svc:
        team = args.team_id or svc.team_id
        queue = args.queue_id or svc.waiting_queue_id
        if not team or not queue:
            raise BadInput("set COVIU_TEAM_ID and COVIU_WAITING_QUEUE_ID (or pass --team-id/--queue-id)")
        executor = svc.toolbox.executor
        store = svc.audit_store or memory_store()
        outbox = None
        if channels:
            from agent.notify import Outbox

            outbox = Outbox(store, channels, svc.clock, sender=sender)
            await outbox.flush()  # what an earlier run wrote and did not send
        clinic = f"{team}:{queue}"
        label = svc.clinic_name or f"team {team}"
        alerted: set[str] = set()
        checks = 0
        while True:
            svc.toolbox.budget.restart()  # each check may wait out rate limits for its own budget
            calls = await call_with_retries(
                "listing the waiting queue",
                lambda: executor.all_items(
                    "list_all_coviu_waiting_queue_calls", {"team_id": team, "waiting_queue_id": queue}
                ),
                clock=svc.clock,
                governor=svc.toolbox.governor,
                budget=svc.toolbox.budget,
            )
            now = svc.clock.now()
            summary = summarize_queue(calls, now, args.threshold_minutes)
            if outbox is None:
                fresh = [c for c in summary["over_threshold"] if c["call_id"] not in alerted]
                unknown = [c for c in summary["unknown_wait"] if f"unknown:{c}" not in alerted]
                alerted.update(c["call_id"] for c in fresh)
                alerted.update(f"unknown:{c}" for c in unknown)
                news: QueueSummary = {**summary, "over_threshold": fresh, "unknown_wait": unknown}
                check = QueueCheck(team, queue, now, dict(summary), alert_lines(news, args.threshold_minutes))
            else:
                check = await _notify_queue(
                    outbox, calls, now, summary, args, settings, svc, clinic=clinic, label=label, team=team, queue=queue
                )
            await _keep_status(store, team, queue, now, summary)
            on_check(check)
            checks += 1
            if args.max_checks and checks >= args.max_checks:
                return checks
            await asyncio.sleep(args.interval)


async def _notify_queue(
    outbox: Any,
    calls: list[Any],
    now: datetime,
    summary: Mapping[str, Any],
    args: QueueWatchArgs,
    settings: Settings,
    svc: Services,
    *,
    clinic: str,
    label: str,
    team: str,
    queue: str,
) -> QueueCheck:
    """One check's events through the outbox: written (or, in quiet hours, remembered and dropped), then sent."""
    from agent.notify import queue_message
    from agent.quiet import in_quiet_hours
    from graphs.queue import queue_events

    raised = await outbox.levels(clinic, "queue", now.timestamp() - QUEUE_MEMORY_SECONDS)
    events = queue_events(calls, now, args.threshold_minutes, args.escalation, raised)
    if any(e["level"] == "seen" for e in events):  # "seen" only for a call staff were told of (not quiet hours only)
        told = await outbox.levels(clinic, "queue", now.timestamp() - QUEUE_MEMORY_SECONDS, told=True)
        events = [e for e in events if e["level"] != "seen" or told.get(e["call_id"], set()) - {"seen"}]
    quiet = in_quiet_hours(settings.quiet_hours, now, svc.zone)
    lines: list[str] = []
    for event in events:
        message = queue_message(
            event,
            clinic=clinic,
            label=label,
            team_id=team,
            queue_id=queue,
            threshold_minutes=args.threshold_minutes,
            escalate_minutes=args.escalation,
        )
        await outbox.put(message, status="quiet" if quiet else "pending")
        lines.append(("(quiet hours, not sent) " if quiet else "") + message.body.split("\n\n")[0].replace("**", ""))
    delivery = await outbox.flush()
    return QueueCheck(
        team,
        queue,
        now,
        dict(summary),
        [f"{e['level']}: call {e['call_id']}: {line}" for e, line in zip(events, lines, strict=True)],
        events=[{k: e[k] for k in ("call_id", "level", "waited_minutes", "outcome")} for e in events],  # no names
        delivery={**delivery.as_dict(), "errors": delivery.errors},
        quiet=quiet,
    )


async def _keep_status(store: Any, team: str, queue: str, now: datetime, summary: Mapping[str, Any]) -> None:
    """The last successful check's time and counts, in the state store (`coviu-agent queue status`); a store that
    is busy does not stop the watcher."""
    import logging

    try:
        await store.put_rows(
            queue_status_run(team, queue),
            QUEUE_STATUS_KIND,
            {
                "last_ok": {
                    "at": now.isoformat(),
                    "waiting": summary["waiting"],
                    "longest_wait_minutes": summary["longest_wait_minutes"],
                }
            },
        )
    except Exception as exc:
        logging.getLogger(__name__).warning("queue watch: could not record the check (%s)", type(exc).__name__)


async def queue_status(settings: Settings, team: str, queue: str) -> dict[str, Any]:
    """The last successful check of this queue (any watcher on this state store) and the outbox's counts."""
    from agent.notify import Outbox
    from graphs.audit_store import open_audit_store
    from tools.clock import SystemClock

    store = open_audit_store(settings.state)
    try:
        rows = await store.rows(queue_status_run(team, queue), QUEUE_STATUS_KIND)
        counts = await Outbox(store, [], SystemClock()).counts(f"{team}:{queue}")
    finally:
        await store.aclose()
    return {"team_id": team, "queue_id": queue, "last_ok": rows.get("last_ok"), "outbox": counts}


# --- ask (the assistant) -------------------------------------------------------------------------

NO_LLM = (
    "the assistant needs an LLM: set OPENAI_API_KEY (for an OpenAI-compatible server such as vLLM, Ollama or "
    "LiteLLM, also set OPENAI_BASE_URL and COVIU_AGENT_MODEL)"
)
ASK_RECURSION_LIMIT = 200  # a backstop only: the graph bounds model calls per request itself
MAX_APPROVAL_ROUNDS = 50

# Given the pending approval request (HITLRequest) and whether an earlier run listed it (exit 4), the decisions
# (one approve/edit/reject per action, in order), or None when nobody can answer now (exit 4).
Decide = Callable[[dict[str, Any], bool], Awaitable[list[dict[str, Any]] | None]]


FAILED_STATUSES = ("refused", "failed", "not_attempted")
MAX_NOTE_CHARS = 4000  # the model's note as printed and returned


def _target(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What an action acts on: the ids among its arguments (`id`, `session_id`, `team_id`, ...)."""
    arguments = entry.get("arguments") or {}
    return {k: v for k, v in arguments.items() if k == "id" or k.endswith("_id")}


# Verbs in a made-up tool name that say it was meant to change the account (`cancel_coviu_session`, `addGuest`).
_CHANGE_VERBS = ("create", "delete", "update", "cancel", "remove", "add", "edit", "set", "reschedule", "move", "send")


def _sounds_like_change(entry: Mapping[str, Any]) -> bool:
    name = str(entry.get("tool") or "")
    words = "_".join(name.split()).replace("-", "_")
    words = "".join(f"_{c.lower()}" if c.isupper() else c for c in words).lower()
    return any(word in _CHANGE_VERBS for word in words.split("_"))


@dataclass
class AskOutcome:
    """How a request ended: one outcome per call the model asked for (from the tool results) and the model's note,
    or calls waiting for approval on `thread_id` (a HITLRequest)."""

    thread_id: str
    note: str = ""
    tool_calls: int = 0
    request: dict[str, Any] = field(default_factory=dict)
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> list[dict[str, Any]]:
        return list(self.request.get("action_requests") or [])

    @property
    def needs_approval(self) -> bool:
        return bool(self.pending)

    @property
    def unfinished(self) -> list[dict[str, Any]]:
        """Actions that were refused, failed or not attempted, less those the model made good later in the request:
        a later call of the same tool on the same target that was done (it corrected an invalid argument or a
        refused start time), or, for a call of a tool that does not exist, any later call that was done. The target
        is every id the call names (`id`, `session_id`, ...): a link done in one session never makes good a link
        refused in another."""
        out = []
        for i, entry in enumerate(self.outcomes):
            if entry.get("status") not in FAILED_STATUSES:
                continue
            target = _target(entry)
            done = [o for o in self.outcomes[i + 1 :] if o.get("status") == "done"]
            if entry.get("unknown_tool") and any(o.get("change") or not _sounds_like_change(entry) for o in done):
                continue  # a made-up name for a change is made good only by a change done, never by a read
            same_tool = [o for o in done if o.get("tool") == entry.get("tool")]
            if entry.get("sent") is False and not entry.get("arguments") and same_tool:
                continue  # unparsable arguments (no target known), then the same tool done
            if any(_target(o) == target for o in same_tool):
                continue
            out.append(entry)
        return out

    @property
    def exit_code(self) -> int:
        """0 every action the model asked for was done (or rejected by the person); 4 changes wait for approval;
        5 an action was refused (by Coviu or its rules), failed or was not attempted (`unfinished`)."""
        if self.needs_approval:
            return EXIT_APPROVAL
        return EXIT_INCOMPLETE if self.unfinished else EXIT_OK

    @property
    def resume(self) -> str:
        return f"coviu-agent ask --thread-id {shlex.quote(self.thread_id)} --yes"

    def as_dict(self) -> dict[str, Any]:
        """`ask --json` when the request ended (not waiting for approval)."""
        return {
            "thread_id": self.thread_id,
            "outcomes": self.outcomes,
            "note": self.note,
            "tool_calls": self.tool_calls,
            "exit_code": self.exit_code,
        }


def pending_request(snapshot: Any) -> dict[str, Any]:
    """The approval request (HITLRequest) a paused assistant thread is waiting on; empty when none."""
    for pending in getattr(snapshot, "interrupts", ()) or ():
        value = getattr(pending, "value", None)
        if isinstance(value, dict) and value.get("action_requests"):
            return dict(value)
    return {}


def _summarize(values: Mapping[str, Any], request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The request's outcomes (pending approvals added as not_attempted), the model's last text (its note) and the
    number of tool calls answered since the last user message."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    note = ""
    calls = 0
    for message in reversed(list(values.get("messages", []))):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            calls += 1
        elif isinstance(message, AIMessage) and not note and not message.tool_calls:
            note = message.text if hasattr(message, "text") else str(message.content)
    if len(note) > MAX_NOTE_CHARS:  # a model that rambles: the outcomes above say what happened
        note = f"{note[:MAX_NOTE_CHARS]}… [{len(note) - MAX_NOTE_CHARS} more characters of the model's note cut]"
    outcomes = [dict(o) for o in values.get("outcomes") or []]
    for action in (request or {}).get("action_requests") or []:
        outcomes.append(
            {
                "tool": action.get("name"),
                "change": True,
                "arguments": dict(action.get("args") or {}),
                "status": "not_attempted",
                "reason": "waiting for approval",
            }
        )
    return {"note": note, "tool_calls": calls, "outcomes": outcomes}


@observed("assistant")
async def run_ask(
    settings: Settings,
    request: str,
    *,
    services: Services | None = None,
    thread_id: str | None = None,
    decide: Decide | None = None,
    team_id: str | None = None,
    waiting_queue_id: str | None = None,
    collection_id: str | None = None,
    recordings_dir: Path | None = None,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    dry_run: bool = False,
) -> AskOutcome:
    """Run (or resume) one request on the assistant graph. Tests inject `services` (with a fake model).

    `dry_run` is the command's, never the thread's: no decision is taken (the first change stops the run, and is
    the plan), and a thread interrupted mid-run (not at an approval) is not resumed (BadInput, nothing sent).

    `recordings_dir`: where `coviu-agent recordings` downloads, so binary tools report local paths (for services
    opened here; injected ones come with their own). The LLM refusing the configuration is bad input; the LLM
    failing after its retries is an upstream failure (tools.errors.model_failure, the one mapping)."""
    from agent.threadlock import thread_lock
    from graphs.context import Context

    if services is None and not settings.llm_configured:
        raise BadInput(NO_LLM)
    async with _services_and_saver(settings, services, checkpointer, recordings_dir=recordings_dir) as (svc, saver):
        if svc.model is None:
            raise BadInput(NO_LLM)
        context = Context(team_id=team_id, waiting_queue_id=waiting_queue_id, collection_id=collection_id, services=svc)
        thread = thread_id or f"ask:{uuid.uuid4()}"
        async with thread_lock(settings.state, thread, svc.clock, wait_seconds=settings.thread_lock_wait_seconds):
            return await _ask(
                context,
                saver,
                request,
                thread,
                None if dry_run else decide,
                dry_run=dry_run,
                thread_given=thread_id is not None,
            )


def _nothing_to_approve(thread: str, snapshot: Any) -> str:
    """`ask --thread-id T --yes|--no|--decisions` with no REQUEST, on a thread that waits for nothing."""
    if not getattr(snapshot, "values", None):
        return (
            f"--thread-id {thread}: no such conversation in this state store (COVIU_AGENT_STATE); nothing to "
            "approve. Check the id printed by the run that stopped for approval"
        )
    return (
        f"--thread-id {thread}: this conversation is not waiting for approval (its last request has finished); "
        f"nothing to approve. To continue it, give a new REQUEST: coviu-agent ask --thread-id {thread} '...'"
    )


async def _ask(
    context: Context,
    saver: BaseCheckpointSaver[str],
    request: str,
    thread: str,
    decide: Decide | None,
    *,
    dry_run: bool = False,
    thread_given: bool = False,
) -> AskOutcome:
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.types import Command

    from graphs.assistant import compile_assistant

    graph = compile_assistant(saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": ASK_RECURSION_LIMIT}
    snapshot = await graph.aget_state(config)
    waiting = pending_request(snapshot)
    if dry_run and snapshot.next and not waiting:
        raise BadInput(dry_run_meets_interrupted("ask", thread))
    if waiting and request:
        names = ", ".join(str(a.get("name", "?")) for a in waiting["action_requests"])
        raise BadInput(
            f"thread {thread} is waiting for approval of {names}; "
            f"answer it first: `coviu-agent ask --thread-id {thread} --yes` (or --no)"
        )
    # what an earlier run showed (exit 4) and the user may now answer with --yes / --decisions; nothing else
    listed = waiting
    if not waiting:
        if not request.strip() and thread_given:
            raise BadInput(_nothing_to_approve(thread, await graph.aget_state(config)))
        if not request.strip():
            raise BadInput("REQUEST: say what to do (or give --thread-id of a thread waiting for approval)")
        await graph.ainvoke({"messages": [HumanMessage(content=request)]}, config, context=context)
    for _ in range(MAX_APPROVAL_ROUNDS):
        snapshot = await graph.aget_state(config)
        waiting = pending_request(snapshot)
        if not waiting:
            return AskOutcome(thread, **_summarize(snapshot.values))
        decisions = await decide(waiting, waiting == listed) if decide is not None else None
        listed = {}  # a listed request is answered once; whatever the run asks next was never shown
        if decisions is None:
            return AskOutcome(thread, request=waiting, **_summarize(snapshot.values, waiting))
        if len(decisions) != len(waiting["action_requests"]):
            raise BadInput(
                f"--decisions: {len(decisions)} decision(s) for {len(waiting['action_requests'])} pending action(s)"
            )
        await graph.ainvoke(Command(resume={"decisions": decisions}), config, context=context)
        refused = pending_request(await graph.aget_state(config)).get("error")
        if refused:  # the graph did not understand the answer: nothing decided, the thread still waits for one
            raise BadInput(f"--decisions: {refused}; thread {thread} still waits for an answer")
    raise BadInput(f"thread {thread}: too many approval rounds in one request")


# --- recordings ----------------------------------------------------------------------------------

TRANSCRIPTION_OFF = "transcription is off: set OPENAI_API_KEY to transcribe audio (files were still downloaded)"


@dataclass
class RecordingsRun:
    """A finished worker run and what it covered."""

    report: RecordingsReport
    download_dir: Path | None
    since: datetime | None
    until: datetime | None
    session_id: str | None
    team_id: str
    collection_id: str

    @property
    def exit_code(self) -> int:
        """0 done; 3 when a file or transcript failed (the rest is kept)."""
        return EXIT_UPSTREAM if self.report.errors else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        """The result object of `recordings --json`."""
        from collections import Counter

        files = [r.as_dict(self.download_dir) for r in self.report.results]
        return {
            "team_id": self.team_id,
            "collection_id": self.collection_id,
            "window": (
                {"since": self.since.isoformat(), "until": self.until.isoformat()}
                if self.since and self.until
                else None
            ),
            "session_id": self.session_id,
            "download_dir": str(self.download_dir) if self.download_dir else None,
            "manifest": str(self.report.manifest_path) if self.report.manifest_path else None,
            "transcription": self.report.transcription,
            "totals": dict(Counter(r.status for r in self.report.results)),
            "files": files,
            "errors": list(self.report.errors),
        }


@observed("recordings")
async def run_recordings(
    settings: Settings,
    *,
    services: Services | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    session_id: str | None = None,
    download_dir: Path | None = None,
    transcribe: bool = False,
    transcriber: Transcriber | None = None,
    team_id: str | None = None,
    collection_id: str | None = None,
    on_event: Event | None = None,
) -> RecordingsRun:
    """Find and fetch (or, without `download_dir`, only list) the recordings; tests inject `services`."""
    from workers.recordings import OpenAITranscriber, RecordingsWorker

    def say(message: str) -> None:
        if on_event is not None:
            on_event(message)

    async with _services(settings, services) as svc:
        team = team_id or svc.team_id
        collection = collection_id or svc.collection_id
        if not team or not collection:
            missing = "COVIU_TEAM_ID" if not team else "COVIU_INTAKE_COLLECTION_ID"
            raise BadInput(f"recordings need a team and the intake collection: set {missing} (or pass it)")
        if transcribe and transcriber is None and settings.openai_api_key is not None:
            transcriber = OpenAITranscriber(
                api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url
            )
        worker = RecordingsWorker(
            svc.toolbox,
            team_id=team,
            collection_id=collection,
            download_dir=download_dir,
            transcriber=transcriber if transcribe else None,
            # each file's progress is an INFO log line (cron's record); the caller lists the files once, at the end
            on_event=None,
            stall_seconds=settings.download_stall_seconds,
        )
        report = await worker.run(since=since, until=until, session_id=session_id)
        if transcribe:
            if transcriber is None:
                report.transcription = "off"
                say(TRANSCRIPTION_OFF)
            else:
                report.transcription = "on"
                await worker.transcribe(report)
        return RecordingsRun(report, download_dir, since, until, session_id, team, collection)
