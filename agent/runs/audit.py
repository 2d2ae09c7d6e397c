"""The audit run: its request, window and thread id (every argument that changes the result), the check that a
resumed thread has the same arguments, the messages to staff (report, failure; also for a fleet's clinic that
never started), and the checkpoints' clean-up once the report is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import EXIT_UPSTREAM, BadInput, exit_code_for
from agent.runs.base import Event, Progress, _resume_or_start, _services_and_saver, observed
from agent.runs.results import AuditResult

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from agent.settings import Settings
    from graphs.context import Services


AUDIT_RECURSION_LIMIT = 10_000
AUDIT_CONCURRENCY = 4


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
