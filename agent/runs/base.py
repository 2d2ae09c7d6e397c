"""What every run shares: its services and checkpointer (opened here unless given), resume-or-start on its
thread (only declared inputs), the dry-run refusal of an interrupted thread, and `observed` (the run traced,
counted and written to the run log, `agent.runlog`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from agent.errors import EXIT_OK
from agent.runs.results import AuditResult, RecordingsRun, TriageResult

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

    from agent.settings import Settings
    from graphs.context import Services


P = ParamSpec("P")
R = TypeVar("R")
Event = Callable[[str], None]
Progress = Callable[[str, int, int], None]


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

            with telemetry.run(graph, *_clinic_hint(args, kwargs)) as traced:
                # The run log's write is blocking SQLite (waiting up to 30 s for the file's lock): off the event loop,
                # where another run of this process (a fleet's clinic) may hold that lock until the loop lets it
                # commit. On the loop, the two waited on each other: "database is locked" (issue 28).
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        await asyncio.to_thread(log_run, args, kwargs, traced.record, None, exc)
                    else:  # cancelled or interrupted: the loop is stopping, nothing else of ours runs on it
                        log_run(args, kwargs, traced.record, None, exc)
                    raise
                traced.finish(**run_facts(result))
                await asyncio.to_thread(log_run, args, kwargs, traced.record, result, None)
                return result

        return run

    return wrap


def log_run(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    record: Any,
    result: Any,
    error: BaseException | None,
    runner: str = "cli",
) -> None:
    """One row in the run log of the settings' state store (`agent.runlog`), for `coviu-agent status`; a run given
    its own checkpointer (a test, an embedding) keeps its own books. `runner`: who holds the thread, "cli" (this
    store's checkpoints) or "server" (a LangGraph server's), so `status` says how to answer it."""
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
            clinic=str(record.clinic or ""),
            team_id=str(facts.get("team") or record.team or ""),
            thread_id=getattr(result, "thread_id", None),
            started_at=datetime.fromtimestamp(record.started, UTC).isoformat(timespec="seconds"),
            finished_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            duration_seconds=round(now - record.started, 3),
            outcome=OUTCOMES.get(code, "error"),
            exit_code=code,
            report_path=paths.get("md") or paths.get("json") or next(iter(paths.values()), None),
            runner=runner,
        ),
    )


def _clinic_hint(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """The clinic a run is for, before it starts, and its team id: the clinic is its integrated account (clinics of
    a fleet may share a team), else (no account configured) its team; the team is the request's, else the
    settings' (the result's wins, `Run.finish`)."""
    request = args[1] if len(args) > 1 else None
    team = (
        getattr(request, "team_id", None) or kwargs.get("team_id") or getattr(kwargs.get("services"), "team_id", None)
    )
    settings = args[0] if args else None
    team = str(team or getattr(settings, "coviu_team_id", None) or "")
    account = getattr(settings, "truto_integrated_account_id", None)
    return str(account or team), team


def run_facts(result: Any) -> dict[str, Any]:
    """What a run's result says for its metrics: outcome, exit code, clinic, counts (ids and counts only)."""
    from tools.telemetry import OUTCOMES

    code = int(getattr(result, "exit_code", EXIT_OK))
    facts: dict[str, Any] = {"outcome": OUTCOMES.get(code, "error"), "exit_code": code}
    state = getattr(result, "state", None)
    if isinstance(state, Mapping):
        facts["team"] = state.get("team_id")
    if isinstance(result, AuditResult) and result.report is not None:
        from collections import Counter

        sessions = list(result.report.get("sessions") or [])
        facts["team"] = result.report.get("team_id") or facts.get("team")
        facts["sessions"] = len(sessions)
        facts["flags"] = dict(Counter(str(f) for row in sessions for f in row.get("flags") or []))
    elif isinstance(result, TriageResult):
        facts["alerts"] = len(result.state.get("alerts") or [])
    elif isinstance(result, RecordingsRun):
        facts["team"] = result.team_id
    return facts
