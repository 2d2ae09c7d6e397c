"""Scenario 2, the end-of-day audit: sessions that ended in the window, their summaries and intake
forms, reconciled into a Markdown + JSON + HTML report. Read-only, resumable, sized for 10,000 sessions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs import context as ctx
from graphs.context import Context, Services, resolve_services
from graphs.nodes import CallOutcome, RetryState, execute_call, read_only, retry_update, settled, wait_and_retry
from tools.errors import CoviuAgentError
from tools.executor import list_envelope
from tools.timeparse import parse_time

log = logging.getLogger(__name__)

SESSIONS_TOOL = "list_all_coviu_sessions"
SUMMARY_TOOL = "get_single_coviu_session_summary_by_id"
SUBMISSIONS_TOOL = "list_all_coviu_submissions"
PAGE_SIZE = 200
BATCH_SIZE = 250  # summaries per step: the unit of resumption after a crash (one checkpoint per batch)
FETCH_CONCURRENCY = 8  # summaries in flight (the governor paces them all to the account's limit)
SESSION_LOOKBACK = timedelta(hours=24)  # longest session we expect: widen the API's start filter by this
FORM_SLACK = timedelta(days=7)  # forms filed up to a week before or after the window still count
MAX_PAGES = 10_000
FLAG_ORDER = ("missing_form", "pending_form", "overrun", "no_actual_end")


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class AuditInput(TypedDict, total=False):
    """What starts an audit: a date, or a window (empty: yesterday in the clinic's time zone)."""

    date: str
    since: str
    until: str
    overrun_threshold_minutes: float


class AuditState(TypedDict, total=False):
    """The audit's state: ids, the window, derived per-session rows (never raw payloads)."""

    date: str
    since: str
    until: str
    overrun_threshold_minutes: float
    team_id: str
    collection_id: str
    window: dict[str, str]
    day_label: str
    sessions: list[dict[str, Any]]
    list_cursor: str | None
    summaries: Annotated[dict[str, Any], merge_dicts]
    submissions: dict[str, list[list[Any]]]
    submission_cursor: str | None
    report: dict[str, Any]
    report_paths: dict[str, str]
    retry: RetryState


class WindowError(ValueError):
    """A date or window the audit cannot use (exit 2, nothing sent)."""


def resolve_window(
    zone: ZoneInfo, now: datetime, *, day: str | None = None, since: str | None = None, until: str | None = None
) -> tuple[datetime, datetime, str]:
    """(since, until, label) per the contract: a clinic-local day, or an explicit [since, until)."""
    if day and (since or until):
        raise WindowError("give either a date or since/until, not both")
    if since or until:
        if not (since and until):
            raise WindowError("since and until go together: give both")
        start = _parse_bound("since", since, zone)
        end = _parse_bound("until", until, zone)
        if end <= start:
            raise WindowError(f"until ({until}) must be after since ({since})")
        if end - start > timedelta(days=31):
            raise WindowError("the window is longer than 31 days; audit a month at a time")
        return start, end, start.astimezone(zone).date().isoformat()
    if day:
        try:
            the_day = date.fromisoformat(day)
        except ValueError:
            raise WindowError(f"date: expected YYYY-MM-DD, got {day!r}") from None
    else:
        the_day = now.astimezone(zone).date() - timedelta(days=1)
    start = datetime.combine(the_day, time(0), tzinfo=zone)
    end = datetime.combine(the_day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end, the_day.isoformat()


def _parse_bound(name: str, value: str, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(f"{name}: expected an ISO-8601 date-time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def one_decimal(minutes: float) -> float:
    return float(Decimal(str(minutes)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


async def prepare(state: AuditState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Resolve the ids and the window; a bad date fails here, before any request."""
    services = await resolve_services(runtime.context)
    team = state.get("team_id") or ctx.team_id(runtime.context, services)
    collection = state.get("collection_id") or ctx.collection_id(runtime.context, services)
    if not team or not collection:
        missing = "COVIU_TEAM_ID" if not team else "COVIU_INTAKE_COLLECTION_ID"
        raise WindowError(f"the audit needs a team and an intake collection: set {missing}")
    since, until, label = resolve_window(
        services.zone, services.clock.now(), day=state.get("date"), since=state.get("since"), until=state.get("until")
    )
    return {
        "team_id": team,
        "collection_id": collection,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "day_label": label,
        "overrun_threshold_minutes": float(state.get("overrun_threshold_minutes") or 10.0),
        "sessions": [],
        "list_cursor": None,
        "submissions": {},
        "submission_cursor": None,
    }


def _ids(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"team_id": state.get("team_id"), "collection_id": state.get("collection_id")}


async def _page(
    services: Services, state: Mapping[str, Any], tool: str, args: dict[str, Any], cursor: str | None, tag: str
) -> CallOutcome:
    """One list page through the shared execution path (read-only policy)."""
    spec = services.toolbox.executor.spec(tool)
    call_args = dict(args)
    extra: dict[str, Any] = {}
    for key, value in (("limit", PAGE_SIZE), ("next_cursor", cursor)):
        if value is None:
            continue
        if spec.wants(key):
            call_args[key] = value
        else:
            extra[key] = value
    return await execute_call(
        services,
        tool,
        call_args,
        call_id=f"audit:{tag}:{cursor or 'first'}",
        ids=_ids(state),
        policy=read_only,
        extra_query=extra,
    )


def _fail_on_error(outcome: CallOutcome) -> None:
    if outcome.kind in ("error", "refused"):
        if outcome.error is not None and not isinstance(outcome.error, CoviuAgentError | ValueError):
            raise outcome.error
        raise _AuditFailure(outcome.text)


class _AuditFailure(CoviuAgentError):
    """An audit step was refused or failed for good (not transient)."""


async def _walk_pages(
    services: Services,
    state: Mapping[str, Any],
    tool: str,
    args: dict[str, Any],
    cursor: str | None,
    tag: str,
    take: Callable[[Any], None],
) -> tuple[str | None, CallOutcome | None]:
    """Page from `cursor` to the last page, handing each item to `take`.

    Returns (None, None) when done, or (the failed page's cursor, its outcome) on a transient failure, so the
    node can save its progress and go to wait_and_retry.
    """
    for _ in range(MAX_PAGES):
        outcome = await _page(services, state, tool, args, cursor, tag)
        if outcome.kind == "transient":
            return cursor, outcome
        _fail_on_error(outcome)
        items, cursor = list_envelope(outcome.result)
        for item in items:
            take(item)
        if not cursor:
            return None, None
    raise _AuditFailure(f"{tool}: more than {MAX_PAGES} pages")


async def list_sessions(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """All pages of sessions around the window; keep only rows whose scheduled end is in [since, until)."""
    services = await resolve_services(runtime.context)
    since, until = _window(state)
    rows = list(state.get("sessions") or [])
    cursor = state.get("list_cursor")
    args = {"start_time": _z(since - SESSION_LOOKBACK), "end_time": _z(until)}

    def take(session: Any) -> None:
        row = session_row(session, since, until)
        if row is not None:
            rows.append(row)

    cursor, failed = await _walk_pages(services, state, SESSIONS_TOOL, args, cursor, "sessions", take)
    if failed is not None:
        return Command(
            goto="wait_and_retry",
            update={
                "sessions": rows,
                "list_cursor": cursor,
                "retry": retry_update(services, state.get("retry"), failed, "sessions", "list_sessions"),
            },
        )
    rows.sort(key=lambda r: (r["scheduled_start"], r["session_id"]))
    log.info("audit: %d sessions in the window", len(rows))
    if services.on_progress:
        services.on_progress("sessions", len(rows), len(rows))
    return Command(
        goto="fetch_summaries", update={"sessions": rows, "list_cursor": None, "retry": settled(state.get("retry"))}
    )


def session_row(session: Any, since: datetime, until: datetime) -> dict[str, Any] | None:
    """The derived row for one listed session, or None when it is outside the window or canceled."""
    if not isinstance(session, Mapping) or session.get("canceled_time"):
        return None
    end = _dt(session.get("end_time"))
    start = _dt(session.get("start_time"))
    if end is None or start is None or not (since <= end < until):
        return None
    return {
        "session_id": str(session.get("session_id")),
        "session_name": str(session.get("session_name") or ""),
        "scheduled_start": _z(start),
        "scheduled_end": _z(end),
    }


def summary_facts(summary: Any) -> dict[str, Any]:
    """actual_start (earliest participant entry) and actual_end from a summary; nothing else is kept."""
    if not isinstance(summary, Mapping):
        return {"actual_start": None, "actual_end": None}
    entries = []
    for participant in summary.get("participants") or []:
        if isinstance(participant, Mapping):
            entered = _dt(participant.get("entry_time"))
            if entered is not None:
                entries.append(entered)
    actual_end = _dt(summary.get("actual_end_time"))
    return {
        "actual_start": _z(min(entries)) if entries else None,
        "actual_end": _z(actual_end) if actual_end else None,
    }


async def fetch_summaries(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """Fetch the next batch of summaries, several in flight under the governor; the batch is the unit
    of resumption. Transient failures go to wait_and_retry; what succeeded is kept.
    """
    import asyncio

    services = await resolve_services(runtime.context)
    done = state.get("summaries") or {}
    todo = [r["session_id"] for r in state.get("sessions", []) if r["session_id"] not in done]
    batch = todo[:BATCH_SIZE]
    facts: dict[str, Any] = {}
    failed: list[CallOutcome] = []
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)
    ids = _ids(state)

    async def one(session_id: str) -> None:
        async with gate:
            outcome = await execute_call(
                services,
                SUMMARY_TOOL,
                {"id": session_id},
                call_id=f"audit:summary:{session_id}",
                ids=ids,
                policy=read_only,
            )
        if outcome.kind == "ok":
            facts[session_id] = summary_facts(outcome.result)
        elif outcome.kind == "transient":
            failed.append(outcome)
        else:
            facts[session_id] = {"actual_start": None, "actual_end": None, "error": outcome.text[:300]}
        if services.on_progress and outcome.kind != "transient":
            services.on_progress("summaries", 1, 0)

    await asyncio.gather(*(one(s) for s in batch))
    retry = state.get("retry")
    if failed:
        base = settled(retry) if facts else retry  # progress resets the attempt count
        return Command(
            goto="wait_and_retry",
            update={
                "summaries": facts,
                "retry": retry_update(services, base, failed[0], "summaries", "fetch_summaries"),
            },
        )
    more = len(todo) > len(batch)
    return Command(
        goto="fetch_summaries" if more else "list_submissions", update={"summaries": facts, "retry": settled(retry)}
    )


async def list_submissions(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """All submissions in the intake collection around the window, indexed by session id (ours only)."""
    services = await resolve_services(runtime.context)
    since, until = _window(state)
    wanted = {r["session_id"] for r in state.get("sessions", [])}
    index: dict[str, list[list[Any]]] = {k: [list(x) for x in v] for k, v in (state.get("submissions") or {}).items()}
    cursor = state.get("submission_cursor")
    latest = min(until + FORM_SLACK, max(services.clock.now(), until))
    args = {"from": _z(since - FORM_SLACK), "until": _z(latest)}

    def take(submission: Any) -> None:
        if isinstance(submission, Mapping) and str(submission.get("session_id")) in wanted:
            sid = str(submission.get("item_submission_id") or submission.get("id") or "")
            index.setdefault(str(submission["session_id"]), []).append([sid, bool(submission.get("locked_at"))])

    if wanted:
        cursor, failed = await _walk_pages(services, state, SUBMISSIONS_TOOL, args, cursor, "submissions", take)
        if failed is not None:
            return Command(
                goto="wait_and_retry",
                update={
                    "submissions": index,
                    "submission_cursor": cursor,
                    "retry": retry_update(services, state.get("retry"), failed, "submissions", "list_submissions"),
                },
            )
    log.info("audit: %d sessions have submissions", len(index))
    return Command(
        goto="reconcile", update={"submissions": index, "submission_cursor": None, "retry": settled(state.get("retry"))}
    )


def reconcile_row(
    row: Mapping[str, Any], facts: Mapping[str, Any], submissions: list[list[Any]], threshold: float
) -> dict[str, Any]:
    """One session's report row per the contract's definitions."""
    scheduled_start = _dt(row["scheduled_start"])
    scheduled_end = _dt(row["scheduled_end"])
    actual_start = _dt(facts.get("actual_start")) or scheduled_start
    actual_end = _dt(facts.get("actual_end"))
    assert scheduled_start is not None and scheduled_end is not None and actual_start is not None
    scheduled_minutes = one_decimal((scheduled_end - scheduled_start).total_seconds() / 60)
    flags: list[str] = []
    if actual_end is not None:
        actual_minutes: float | None = one_decimal(max(0.0, (actual_end - actual_start).total_seconds() / 60))
        billable: int | None = math.ceil(actual_minutes) if actual_minutes is not None else None
        overrun: float | None = one_decimal(max(0.0, (actual_end - scheduled_end).total_seconds() / 60))
    else:
        actual_minutes = billable = overrun = None
    if not submissions:
        flags.append("missing_form")
    elif not any(locked for _, locked in submissions):
        flags.append("pending_form")
    if overrun is not None and overrun > threshold:
        flags.append("overrun")
    if actual_end is None:
        flags.append("no_actual_end")
    return {
        "session_id": row["session_id"],
        "session_name": row["session_name"],
        "scheduled_start": row["scheduled_start"],
        "scheduled_end": row["scheduled_end"],
        "actual_start": _z(actual_start),
        "actual_end": _z(actual_end) if actual_end else None,
        "scheduled_minutes": scheduled_minutes,
        "actual_minutes": actual_minutes,
        "billable_minutes": billable,
        "overrun_minutes": overrun,
        "submission_ids": sorted(str(s) for s, _ in submissions),
        "flags": flags,
    }


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sessions": len(rows),
        "missing_forms": sum("missing_form" in r["flags"] for r in rows),
        "pending_forms": sum("pending_form" in r["flags"] for r in rows),
        "overruns": sum("overrun" in r["flags"] for r in rows),
        "no_actual_end": sum("no_actual_end" in r["flags"] for r in rows),
        "billable_minutes": sum(r["billable_minutes"] or 0 for r in rows),
    }


async def reconcile(state: AuditState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Join rows, summaries and submissions (dict lookups: O(N)) into the contract's report."""
    services = await resolve_services(runtime.context)
    threshold = float(state.get("overrun_threshold_minutes", 10.0))
    summaries = state.get("summaries") or {}
    index = state.get("submissions") or {}
    rows = [
        reconcile_row(r, summaries.get(r["session_id"], {}), index.get(r["session_id"], []), threshold)
        for r in state.get("sessions", [])
    ]
    report = {
        "team_id": state["team_id"],
        "collection_id": state["collection_id"],
        "window": dict(state["window"]),
        "generated_at": _z(services.clock.now()),
        "totals": totals(rows),
        "sessions": rows,
    }
    log.info("audit: %d sessions reconciled, %d flagged", len(rows), sum(1 for r in rows if r["flags"]))
    return {"report": report}


async def write_report(state: AuditState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Render Markdown, JSON and HTML; with an LLM, add one narrative paragraph from the totals only."""
    import asyncio

    from graphs.report import write_reports

    services = await resolve_services(runtime.context)
    report = state["report"]
    narrative = await narrate(services, runtime.context, report)
    # Rendering and file writes are blocking work: keep them off the event loop (a LangGraph server shares it).
    paths = await asyncio.to_thread(
        write_reports,
        report,
        services.report_dir,
        state["day_label"],
        narrative=narrative,
        zone=services.zone,
        overrun_threshold_minutes=float(state.get("overrun_threshold_minutes", 10.0)),
    )
    return {"report_paths": {k: str(v) for k, v in paths.items()}}


def aggregates(report: Mapping[str, Any]) -> dict[str, Any]:
    """The only facts the model sees: counts and sums, whatever the number of sessions."""
    rows = report["sessions"]
    overruns = [r["overrun_minutes"] for r in rows if "overrun" in r["flags"]]
    return {
        "window": report["window"],
        "totals": report["totals"],
        "longest_overrun_minutes": max(overruns) if overruns else 0,
        "flagged_sessions": sum(1 for r in rows if r["flags"]),
    }


async def narrate(services: Services, context: Context | None, report: Mapping[str, Any]) -> str | None:
    if ctx.planner(context, services) != "llm" or services.model is None:
        return None
    import json

    from prompts import load_prompt

    prompt = load_prompt("audit", aggregates=json.dumps(aggregates(report), sort_keys=True))
    reply = await services.model.ainvoke(prompt)
    text = str(reply.content).strip()
    return text[:1500] if text else None


def _window(state: Mapping[str, Any]) -> tuple[datetime, datetime]:
    since = _dt(state["window"]["since"])
    until = _dt(state["window"]["until"])
    if since is None or until is None:
        raise WindowError("the audit window is missing from state")
    return since, until


def _dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return parse_time(value) if isinstance(value, str) and value else None


def _z(moment: datetime | None) -> str:
    if moment is None:
        return ""
    from datetime import UTC

    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_audit_graph() -> StateGraph[AuditState, Context, AuditInput, AuditState]:
    """The audit builder; compile it with or without a checkpointer."""
    builder = StateGraph(AuditState, context_schema=Context, input_schema=AuditInput)
    builder.add_node("prepare", prepare)
    builder.add_node("list_sessions", list_sessions, destinations=("fetch_summaries", "wait_and_retry"))
    builder.add_node(
        "fetch_summaries", fetch_summaries, destinations=("fetch_summaries", "list_submissions", "wait_and_retry")
    )
    builder.add_node(
        "wait_and_retry", wait_and_retry, destinations=("list_sessions", "fetch_summaries", "list_submissions")
    )
    builder.add_node("list_submissions", list_submissions, destinations=("reconcile", "wait_and_retry"))
    builder.add_node("reconcile", reconcile)
    builder.add_node("write_report", write_report)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "list_sessions")
    builder.add_edge("reconcile", "write_report")
    builder.add_edge("write_report", END)
    return builder


def compile_audit(checkpointer: Any = None) -> CompiledStateGraph[AuditState, Context, AuditInput, AuditState]:
    return build_audit_graph().compile(checkpointer=checkpointer, name="audit")
