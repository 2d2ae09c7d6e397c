"""Scenario 2, the end-of-day audit: sessions that ended in the window, their summaries and intake
forms, reconciled into a Markdown + JSON + HTML report. Read-only, resumable, sized for 10,000 sessions.

Per-session data (the listed rows, the summaries' facts, the submission index) lives in side rows of the state store
(graphs/audit_store.py), keyed by the run (its thread id): the checkpointed state holds only cursors and counters,
so checkpoints stay small whatever the number of sessions. Summaries that can no longer change are cached per
integrated account and never fetched again (`refresh` ignores and rewrites the cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import (
    Annotated,
    Any,
    NotRequired,  # pydantic needs it on Python < 3.12 (graph JSON schemas)
)

from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs import context as ctx

# The audit's other concerns, each a module; their names stay importable from here (graphs.audit) too.
from graphs.audit_narrative import narrate
from graphs.audit_reconcile import (
    REPORT_SCHEMA_VERSION,
    cacheable,
    reconcile_row,
    row_order,
    session_row,
    submission_session_id,
    summary_facts,
    threshold_of,
    totals,
    unavailable,
)
from graphs.audit_store import AuditStore, CachedSummary, memory_store
from graphs.audit_window import (
    WindowError,
    resolve_window,
    sessions_span,
    submissions_span,
    window_of,
)
from graphs.context import Context, Services, resolve_services
from graphs.nodes import (
    CallOutcome,
    Policy,
    RetryState,
    allow_only,
    execute_call,
    filled,
    retry_update,
    settled,
    wait_and_retry,
)
from tools import telemetry
from tools.errors import CoviuAgentError, RateLimitedError, for_person
from tools.paging import PageWalk
from tools.timeparse import utc_z

log = logging.getLogger(__name__)

SESSIONS_TOOL = "list_all_coviu_sessions"
SUMMARY_TOOL = "get_single_coviu_session_summary_by_id"
SUBMISSIONS_TOOL = "list_all_coviu_submissions"
PAGE_SIZE = 200
BATCH_SIZE = 250  # summaries per step: the unit of resumption after a crash (one checkpoint per batch)
FETCH_CONCURRENCY = 8  # summaries in flight (the governor paces them all to the account's limit)
# Permission by name: the audit's three reads, whatever their verb or custom method; nothing else.
AUDIT_POLICY: Policy = allow_only(SESSIONS_TOOL, SUMMARY_TOOL, SUBMISSIONS_TOOL)


# Kinds of side rows (graphs/audit_store.py) of one audit run.
SESSION_ROWS, SUMMARY_ROWS, SUBMISSION_ROWS = "session", "summary", "submission"


class AuditInput(TypedDict, total=False):
    """What starts an audit: a date, or a window (empty: yesterday in the clinic's time zone)."""

    date: Annotated[
        str,
        Field(
            description="The day to audit: YYYY-MM-DD, 'today' or 'yesterday', midnight to midnight in the clinic's "
            "time zone (default: yesterday). Not with since/until."
        ),
    ]
    since: Annotated[
        str,
        Field(
            description="Window start, ISO-8601 (a time without a zone is in the clinic's time zone); with until, "
            "instead of date. Sessions whose scheduled end is in [since, until) are audited; at most 31 days."
        ),
    ]
    until: Annotated[str, Field(description="Window end, exclusive, ISO-8601; with since.")]
    overrun_threshold_minutes: Annotated[
        float, Field(description="A session ending more than this many minutes late is an overrun (default 10).")
    ]
    refresh: Annotated[
        bool, Field(description="Fetch every summary again, ignoring (and rewriting) the summary cache.")
    ]


class AuditOutput(TypedDict, total=False):
    """What a finished audit returns: the JSON report and the files written."""

    report: dict[str, Any]
    report_paths: dict[str, str]


class AuditState(TypedDict):
    """The audit's state: ids, the window, cursors and counters. Per-session rows are side rows of the run
    (`run_key`) in the audit store, never in the checkpointed state.

    `prepare` (the first node) sets every key but the input's (`date`, `since`, `until`) and the output's (`report`,
    `report_paths`, set by `write_report`), so the nodes after it read them directly; `prepare` itself reads the
    input with `.get` (a key may not be given).
    """

    date: NotRequired[str]
    since: NotRequired[str]
    until: NotRequired[str]
    overrun_threshold_minutes: float
    refresh: bool
    team_id: str
    collection_id: str
    window: dict[str, str]
    day_label: str
    run_key: str
    sessions_listed: int
    summaries_cached: int
    summaries_from_list: int
    list_cursor: str | None
    list_seen_cursors: list[str]
    submission_cursor: str | None
    submission_seen_cursors: list[str]
    report: NotRequired[dict[str, Any]]
    report_paths: NotRequired[dict[str, str]]
    retry: RetryState


# Keys `prepare` sets that an earlier version's did not (`retry` until 2026-12-07: the first list wrote it;
# `summaries_from_list` since 2026-12-07): a thread that version checkpointed resumes with these at the values it
# behaved by (`graphs.nodes.filled`, in each node after `prepare` that reads them).
# Remove after 2027-03-01 (the entries, with their test in tests/test_state_store_upgrades.py).
ADDED_KEYS: dict[str, Callable[[], Any]] = {"retry": dict, "summaries_from_list": lambda: 0}


def audit_store(services: Services) -> AuditStore:
    """The store for side rows and the summary cache: the injected one, or a private in-memory one."""
    if services.audit_store is None:
        services.audit_store = memory_store()
    return services.audit_store


def account_of(services: Services) -> str:
    """The integrated account whose summaries the cache keeps."""
    return services.toolbox.client.integrated_account_id


async def prepare(state: AuditState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Resolve the ids and the window; a bad date fails here, before any request. A fresh run starts with no
    side rows under its key (the thread id; a new id when there is no checkpointer)."""
    services = await resolve_services(runtime.context)
    # the run's context (settings as defaults), never an earlier run's ids left in a reused thread's state
    ids = ctx.run_ids(runtime.context, services)
    team, collection = ids.team_id, ids.collection_id
    missing = [n for n, v in (("COVIU_TEAM_ID", team), ("COVIU_INTAKE_COLLECTION_ID", collection)) if not v]
    if missing:
        raise WindowError(f"the audit needs a team and an intake collection: set {' and '.join(missing)}")
    since, until, label = resolve_window(
        services.zone, services.clock.now(), day=state.get("date"), since=state.get("since"), until=state.get("until")
    )
    thread = (get_config().get("configurable") or {}).get("thread_id")
    # The side rows' key: short (it is in every one of them), and the same for a resumed thread.
    run_key = f"run:{hashlib.sha256(str(thread).encode()).hexdigest()[:24]}" if thread else f"run:{uuid.uuid4().hex}"
    await audit_store(services).delete_run(run_key)
    # Side rows of a run before the key was hashed are keyed by the thread id. Remove after 2027-03-01.
    if thread and not str(thread).startswith("run:"):
        await audit_store(services).delete_run(str(thread))
    return {
        "team_id": team,
        "collection_id": collection,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "day_label": label,
        "overrun_threshold_minutes": threshold_of(state),
        "refresh": bool(state.get("refresh")),
        "run_key": run_key,
        "sessions_listed": 0,
        "summaries_cached": 0,
        "summaries_from_list": 0,
        "list_cursor": None,
        "list_seen_cursors": [],
        "submission_cursor": None,
        "submission_seen_cursors": [],
        "retry": settled(state.get("retry")),
    }


def _ids(state: AuditState) -> dict[str, Any]:
    return {"team_id": state["team_id"], "collection_id": state["collection_id"]}


class AuditFailure(CoviuAgentError):
    """An audit list was refused or failed for good (not transient): the run ends, nothing written. `cause` is the
    call's error: an invalid or unknown id is bad input (exit 2), anything else upstream (exit 3)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)


async def _walk_pages(
    services: Services,
    state: AuditState,
    tool: str,
    args: dict[str, Any],
    walk: PageWalk,
    take: Callable[[Any, str], None],
) -> CallOutcome | None:
    """Page from the walk's cursor to the last page (the one pager), handing each new row to `take` with a label
    of its page (the cursor it was fetched with: stable across a resumed walk).

    Returns None when done, or the failed page's outcome on a transient failure: the walk then holds the cursor to
    resume from, so the node can save its progress and go to wait_and_retry.
    """
    executor = services.toolbox.executor
    while not walk.done:
        call_args, extra = executor.page_arguments(tool, args, walk.cursor, PAGE_SIZE)
        outcome = await execute_call(
            services,
            tool,
            call_args,
            call_id=f"audit:{tool}:{walk.cursor or 'first'}",
            ids=_ids(state),
            policy=AUDIT_POLICY,
            extra_query=extra,
        )
        if outcome.kind == "transient":
            return outcome
        if outcome.kind in ("error", "refused"):
            said = for_person(outcome.error) if outcome.error is not None else outcome.text
            raise AuditFailure(f"the audit could not list {tool}: {said}", outcome.error)
        page = walk.cursor or "first"
        for item in walk.take(outcome.result):
            take(item, page)
    return None


async def list_sessions(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """All pages of sessions around the window; keep only rows whose scheduled end is in [since, until).

    The rows go to the run's side rows (keyed by session id; a row without an id by its page and place, so a
    resumed walk rewrites rather than repeats it). Then the summaries the cache holds join the run's summaries.
    """
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    store = audit_store(services)
    run = state["run_key"]
    since, until = window_of(state["window"])
    rows: dict[str, dict[str, Any]] = {}
    walk = PageWalk(
        SESSIONS_TOOL,
        services.toolbox.executor.spec(SESSIONS_TOOL).resource,
        cursor=state["list_cursor"],
        seen_cursors=state["list_seen_cursors"],
        seen_ids=await store.keys(run, SESSION_ROWS),
    )
    # canceled participants too: a list that carries entry times then carries every one the summary would
    start, end = sessions_span(since, until)
    args = {"start_time": utc_z(start), "end_time": utc_z(end), "deleted_participants": True}
    unnamed: dict[str, int] = {}

    def take(session: Any, page: str) -> None:
        row = session_row(session, since, until)
        if row is None:
            return
        key = row["session_id"]
        if key is None:
            unnamed[page] = unnamed.get(page, 0) + 1
            key = f"~{page}:{unnamed[page]}"
        rows[key] = row

    failed = await _walk_pages(services, state, SESSIONS_TOOL, args, walk, take)
    await store.put_rows(run, SESSION_ROWS, rows)
    if failed is not None:
        return Command(
            goto="wait_and_retry",
            update={
                "list_cursor": walk.cursor,
                "list_seen_cursors": walk.seen_cursors,
                "retry": retry_update(services, state["retry"], failed, "sessions", "list_sessions"),
            },
        )
    listed = await store.rows(run, SESSION_ROWS)
    cached: dict[str, CachedSummary] = {}
    from_list: dict[str, Any] = {}
    if not state["refresh"]:  # `refresh` fetches every summary
        # what the list already tells (an account that lists actual ends and entry times): no summary needed
        from_list = {
            r["session_id"]: r["listed_facts"]
            for r in listed.values()
            if r.get("session_id") and not r.get("problem") and r.get("listed_facts")
        }
        checkable = [
            r["session_id"]
            for r in listed.values()
            if r.get("session_id") and not r.get("problem") and r["session_id"] not in from_list
        ]
        cached = {
            sid: {"actual_start": facts["actual_start"], "actual_end": facts["actual_end"]}
            for sid, facts in (await store.cached_summaries(account_of(services), checkable)).items()
            # reused only while the list shows what it showed when the summary was read (a corrected actual end,
            # a new state or update time: fetched again), and a cached no-show the list now shows an end for
            if facts.get("listed") is not None
            and facts.get("listed") == listed.get(sid, {}).get("listed")
            and (facts["actual_end"] or not listed.get(sid, {}).get("listed_actual_end"))
        }
        await store.put_rows(run, SUMMARY_ROWS, {**cached, **from_list})
    unchecked = sum(1 for r in listed.values() if r.get("problem"))
    log.info(
        "audit: %d sessions in the window (%d listed twice and counted once, %d unreadable, %d summaries cached, "
        "%d told by the list)",
        len(listed),
        walk.duplicates,
        unchecked,
        len(cached),
        len(from_list),
    )
    if services.on_progress:
        services.on_progress("sessions", len(listed), len(listed))
        if cached or from_list:  # done, but not fetched: not part of the pace
            services.on_progress("cached", len(cached) + len(from_list), 0)
    return Command(
        goto="fetch_summaries",
        update={
            "sessions_listed": len(listed),
            "summaries_cached": len(cached),
            "summaries_from_list": len(from_list),
            "list_cursor": None,
            "list_seen_cursors": [],
            "retry": settled(state["retry"]),
        },
    )


async def listed_rows(store: AuditStore, state: AuditState) -> dict[str, dict[str, Any]]:
    """The run's session rows, checked against the count the state recorded: rows that went missing (a store
    that was not kept, e.g. an in-memory one across processes) end the run instead of a report that lacks them."""
    rows: dict[str, dict[str, Any]] = await store.rows(state["run_key"], SESSION_ROWS)
    if len(rows) != state["sessions_listed"]:
        raise AuditFailure(
            f"the audit's session rows are gone from the state store ({len(rows)} of "
            f"{state['sessions_listed']}): start the audit afresh (another --thread-id)"
        )
    return rows


def _outcome_problem(outcome: CallOutcome) -> str:
    """A short, id-free reason for the report: the error's class and what it said."""
    error = outcome.error
    label = type(error).__name__ if error is not None else outcome.kind
    status = getattr(error, "status_code", None)
    prefix = f"{label} {status}" if status else label
    return f"{prefix}: {outcome.text.removeprefix('Error: ')}"[:300]


async def fetch_summaries(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """Fetch the next batch of summaries the run does not have yet (cached ones are in already), several in
    flight under the governor; the batch is the unit of resumption. What was read goes to the run's side rows,
    and what can no longer change to the cache. Transient failures go to wait_and_retry; what succeeded is kept.
    """
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    store = audit_store(services)
    run = state["run_key"]
    listed = await listed_rows(store, state)
    done = await store.keys(run, SUMMARY_ROWS)
    todo = [
        r
        for r in sorted(listed.values(), key=row_order)
        if r.get("session_id") and not r.get("problem") and r["session_id"] not in done
    ]
    batch = todo[:BATCH_SIZE]
    if not batch:  # an empty day, or every summary cached or told by the list: no call, no (empty) fan-out span
        return Command(goto="list_submissions", update={"retry": settled(state["retry"])})
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
                ids={**ids, "session_id": session_id},
                policy=AUDIT_POLICY,
            )
        if outcome.kind == "ok":
            facts[session_id] = summary_facts(outcome.result)
        elif outcome.kind == "transient":
            failed.append(outcome)
        else:
            facts[session_id] = unavailable(_outcome_problem(outcome))
        if services.on_progress and outcome.kind != "transient":
            services.on_progress("summaries", 1, 0)

    with telemetry.tool_calls(SUMMARY_TOOL):  # the batch's calls traced as one span, not 250
        calls = [asyncio.ensure_future(one(r["session_id"])) for r in batch]
        try:
            await asyncio.gather(*calls)
        except BaseException:
            # a call that raised (not an outcome: the rate store failed, the run's wait budget is spent) ends the
            # batch: the others are stopped and waited for, none sending on for a run that ended, outside its span
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            raise
    await store.put_rows(run, SUMMARY_ROWS, facts)
    now = services.clock.now()
    keep: dict[str, CachedSummary] = {}
    for row in batch:
        sid = row["session_id"]
        kept = cacheable(row, facts[sid], now) if sid in facts else None
        if kept is not None:
            keep[sid] = {**kept, "listed": row.get("listed")}
    forget = [sid for sid in facts if sid not in keep]  # refetched and now not cacheable: never served stale
    await store.cache_summaries(account_of(services), keep, utc_z(now), forget=forget)
    retry = state["retry"]
    if failed:
        base = settled(retry) if facts else retry  # progress resets the attempt count
        return Command(
            goto="wait_and_retry",
            update={"retry": retry_update(services, base, _to_wait_on(failed), "summaries", "fetch_summaries")},
        )
    more = len(todo) > len(batch)
    return Command(goto="fetch_summaries" if more else "list_submissions", update={"retry": settled(retry)})


def _to_wait_on(failed: list[CallOutcome]) -> CallOutcome:
    """The failure a batch waits on: the 429 asking for the longest wait (its Retry-After is the account's word; a
    502 beside it must not replace that wait with the policy's short one), else the first failure."""
    limited = [f for f in failed if isinstance(f.error, RateLimitedError)]
    if limited:
        return max(limited, key=lambda f: f.error.retry_after if isinstance(f.error, RateLimitedError) else 0.0)
    return failed[0]


async def list_submissions(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """All submissions in the intake collection around the window, indexed by session id (ours only), kept in the
    run's side rows."""
    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    store = audit_store(services)
    run = state["run_key"]
    since, until = window_of(state["window"])
    wanted = {str(r["session_id"]) for r in (await listed_rows(store, state)).values() if r.get("session_id")}
    index: dict[str, list[list[Any]]] = {
        k: [list(x) for x in v] for k, v in (await store.rows(run, SUBMISSION_ROWS)).items()
    }
    changed: set[str] = set()
    earliest, latest = submissions_span(since, until, services.clock.now())
    args = {"from": utc_z(earliest), "until": utc_z(latest)}
    walk = PageWalk(
        SUBMISSIONS_TOOL,
        services.toolbox.executor.spec(SUBMISSIONS_TOOL).resource,
        cursor=state["submission_cursor"],
        seen_cursors=state["submission_seen_cursors"],
        seen_ids=[str(s) for subs in index.values() for s, _ in subs if s],
    )

    def take(submission: Any, _page: str) -> None:
        if not isinstance(submission, Mapping):
            return
        session_id = submission_session_id(submission)
        if session_id in wanted:
            sid = str(submission.get("item_submission_id") or submission.get("id") or "")
            index.setdefault(str(session_id), []).append([sid, bool(submission.get("locked_at"))])
            changed.add(str(session_id))

    if wanted:
        failed = await _walk_pages(services, state, SUBMISSIONS_TOOL, args, walk, take)
        await store.put_rows(run, SUBMISSION_ROWS, {k: index[k] for k in changed})
        if failed is not None:
            return Command(
                goto="wait_and_retry",
                update={
                    "submission_cursor": walk.cursor,
                    "submission_seen_cursors": walk.seen_cursors,
                    "retry": retry_update(services, state["retry"], failed, "submissions", "list_submissions"),
                },
            )
    log.info("audit: %d sessions have submissions", len(index))
    return Command(
        goto="write_report",
        update={
            "submission_cursor": None,
            "submission_seen_cursors": [],
            "retry": settled(state["retry"]),
        },
    )


async def reconcile(state: AuditState, services: Services) -> dict[str, Any]:
    """Join rows, summaries and submissions (dict lookups: O(N)) into the contract's report."""
    threshold = state["overrun_threshold_minutes"]
    store = audit_store(services)
    run = state["run_key"]
    summaries = await store.rows(run, SUMMARY_ROWS)
    index = await store.rows(run, SUBMISSION_ROWS)
    rows = [
        reconcile_row(r, summaries.get(r["session_id"] or "", {}), index.get(r["session_id"] or "", []), threshold)
        for r in sorted((await listed_rows(store, state)).values(), key=row_order)
    ]
    sums = totals(rows)
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "complete": sums["summary_unavailable"] == 0,
        "source": services.source,
        "team_id": state["team_id"],
        "collection_id": state["collection_id"],
        "clinic_name": services.clinic_name,
        "window": dict(state["window"]),
        "overrun_threshold_minutes": threshold,
        "generated_at": utc_z(services.clock.now()),
        "totals": sums,
        # how many summaries this run took from the cache (unchanged in the list since read), not fetched again
        "summaries_from_cache": state["summaries_cached"],
        # summaries not fetched: the session list carried what they would tell (actual end, entry times)
        "summaries_from_list": state["summaries_from_list"],
        "sessions": rows,
    }
    log.info(
        "audit: %d sessions reconciled, %d flagged, %d could not be checked",
        len(rows),
        sum(1 for r in rows if r["flags"]),
        sums["summary_unavailable"],
    )
    return report


async def write_report(state: AuditState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Reconcile into the report, render Markdown, JSON and HTML (with an LLM, one narrative paragraph from the totals
    only), and put the report in state. One node, so the report (O(N)) is in one checkpoint, not two: a crash before
    its end reruns it from the side rows, which are deleted only once the files are written."""
    from reporting.audit_report import write_reports

    services = await resolve_services(runtime.context)
    state = filled(state, ADDED_KEYS)
    report = await reconcile(state, services)
    narrative = await narrate(services, runtime.context, report)
    # Rendering and file writes are blocking work: keep them off the event loop (a LangGraph server shares it).
    paths = await asyncio.to_thread(
        write_reports,
        report,
        services.report_dir,
        state["day_label"],
        narrative=narrative,
        zone=services.zone,
        overrun_threshold_minutes=state["overrun_threshold_minutes"],
    )
    report_paths = {k: str(v) for k, v in paths.items()}
    if services.on_report is not None:  # to staff, through the outbox (a rerun of this step writes no second one)
        await services.on_report(report, report_paths, state["overrun_threshold_minutes"])
    # The report is written (and in state): the run's side rows are not needed any more (they hold patient data).
    await audit_store(services).delete_run(state["run_key"])
    return {"report": report, "report_paths": report_paths}


async def _reconciled_in_write_report(state: AuditState) -> dict[str, Any]:
    """The old `reconcile` node's place: a thread checkpointed before it was folded into `write_report` resumes
    here and passes on (the side rows are still there, and `write_report` reconciles from them)."""
    return {}


def build_audit_graph() -> StateGraph[AuditState, Context, AuditInput, AuditOutput]:
    """The audit builder; compile it with or without a checkpointer."""
    builder = StateGraph(AuditState, context_schema=Context, input_schema=AuditInput, output_schema=AuditOutput)
    builder.add_node("prepare", prepare)
    builder.add_node("list_sessions", list_sessions, destinations=("fetch_summaries", "wait_and_retry"))
    builder.add_node(
        "fetch_summaries", fetch_summaries, destinations=("fetch_summaries", "list_submissions", "wait_and_retry")
    )
    # the whole state in (as `act` in triage): a failure here is told to staff with the run's window (agent/server.py)
    builder.add_node(
        "wait_and_retry",
        wait_and_retry,
        input_schema=AuditState,
        destinations=("list_sessions", "fetch_summaries", "list_submissions"),
    )
    builder.add_node("list_submissions", list_submissions, destinations=("write_report", "wait_and_retry"))
    builder.add_node("write_report", write_report)
    # A thread checkpointed before `write_report` reconciled may be waiting at the old `reconcile` node: it passes on.
    # Remove after 2027-03-01 (with `_reconciled_in_write_report` and its test in tests/test_state_store_upgrades.py).
    builder.add_node("reconcile", _reconciled_in_write_report)
    builder.add_edge("reconcile", "write_report")
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "list_sessions")
    builder.add_edge("write_report", END)
    return builder


def compile_audit(checkpointer: Any = None) -> CompiledStateGraph[AuditState, Context, AuditInput, AuditOutput]:
    return build_audit_graph().compile(checkpointer=checkpointer, name="audit")
