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
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs import context as ctx
from graphs.audit_store import AuditStore, CachedSummary, memory_store
from graphs.context import Context, Services, resolve_services
from graphs.nodes import (
    CallOutcome,
    Policy,
    RetryState,
    allow_only,
    execute_call,
    retry_update,
    settled,
    wait_and_retry,
)
from tools.errors import CoviuAgentError, RunInputError, for_person
from tools.paging import PageWalk
from tools.timeparse import is_plausible, parse_time, utc_z

if TYPE_CHECKING:  # the renderers (jinja2, pygal) are imported where the report is written
    from reporting.audit_report import Narrative

log = logging.getLogger(__name__)

SESSIONS_TOOL = "list_all_coviu_sessions"
SUMMARY_TOOL = "get_single_coviu_session_summary_by_id"
SUBMISSIONS_TOOL = "list_all_coviu_submissions"
PAGE_SIZE = 200
BATCH_SIZE = 250  # summaries per step: the unit of resumption after a crash (one checkpoint per batch)
FETCH_CONCURRENCY = 8  # summaries in flight (the governor paces them all to the account's limit)
SESSION_LOOKBACK = timedelta(hours=24)  # longest session we expect: widen the API's start filter by this
# A no-show (nobody entered, no end) fetched this long after its scheduled end is kept in the summary cache: by then
# the session has long been finished (Coviu takes no participants on a finished session) and nobody will enter.
NO_SHOW_SETTLED = timedelta(hours=12)
FORM_SLACK = timedelta(days=7)  # forms filed up to a week before or after the window still count
REPORT_SCHEMA_VERSION = 2
DEFAULT_OVERRUN_THRESHOLD = 10.0
# An actual time more than this far from the session's schedule cannot be right (never billable).
PLAUSIBLE_DISTANCE = timedelta(days=1)
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


class AuditState(TypedDict, total=False):
    """The audit's state: ids, the window, cursors and counters. Per-session rows are side rows of the run
    (`run_key`) in the audit store, never in the checkpointed state."""

    date: str
    since: str
    until: str
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
    report: dict[str, Any]
    report_paths: dict[str, str]
    retry: RetryState


class WindowError(RunInputError):
    """A date or window the audit cannot use (exit 2, nothing sent)."""


def resolve_window(
    zone: ZoneInfo, now: datetime, *, day: str | None = None, since: str | None = None, until: str | None = None
) -> tuple[datetime, datetime, str]:
    """(since, until, label) per the contract: a clinic-local day, or an explicit [since, until)."""
    if day is not None and not day.strip():
        raise WindowError("--date: expected YYYY-MM-DD, 'today' or 'yesterday', got an empty value")
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
    today = now.astimezone(zone).date()
    if day is None or day.strip().lower() == "yesterday":
        the_day = today - timedelta(days=1)
    elif day.strip().lower() == "today":
        the_day = today
    else:
        the_day = parse_day("--date", day)
    if not PLAUSIBLE_YEARS_FOR_DAYS[0] <= the_day.year <= PLAUSIBLE_YEARS_FOR_DAYS[1]:
        raise WindowError(f"--date: expected a day between the years 2000 and 2100, got {day!r}")
    start = datetime.combine(the_day, time(0), tzinfo=zone)
    end = datetime.combine(the_day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end, the_day.isoformat()


PLAUSIBLE_YEARS_FOR_DAYS = (2000, 2100)
_DAY_SHAPE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_day(flag: str, value: str) -> date:
    """A calendar day given as YYYY-MM-DD, checked as a date: `2026-02-30` has the shape but is no day."""
    text = value.strip()
    shape = _DAY_SHAPE.match(text)
    if shape is None:
        raise WindowError(f"{flag}: expected YYYY-MM-DD, 'today' or 'yesterday', got {value!r}")
    try:
        return date(*(int(part) for part in shape.groups()))
    except ValueError as exc:  # e.g. "day is out of range for month"
        raise WindowError(f"{flag}: {text} is not a day of the calendar ({exc}); expected YYYY-MM-DD") from None


def _parse_bound(name: str, value: str, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(f"--{name}: expected an ISO-8601 date-time, got {value!r}") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    if not is_plausible(parsed):
        raise WindowError(f"--{name}: expected a time between the years 2000 and 2100, got {value!r}")
    return parsed


def one_decimal(minutes: float) -> float:
    return float(Decimal(str(minutes)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def threshold_of(state: Mapping[str, Any]) -> float:
    """The overrun threshold as given: 0 means 0 (only a missing value takes the default)."""
    value = state.get("overrun_threshold_minutes")
    return DEFAULT_OVERRUN_THRESHOLD if value is None else float(value)


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
    }


def _ids(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"team_id": state.get("team_id"), "collection_id": state.get("collection_id")}


class AuditFailure(CoviuAgentError):
    """An audit list was refused or failed for good (not transient): the run ends, nothing written. `cause` is the
    call's error: an invalid or unknown id is bad input (exit 2), anything else upstream (exit 3)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)


async def _walk_pages(
    services: Services,
    state: Mapping[str, Any],
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
    store = audit_store(services)
    run = state["run_key"]
    since, until = _window(state)
    rows: dict[str, dict[str, Any]] = {}
    walk = PageWalk(
        SESSIONS_TOOL,
        services.toolbox.executor.spec(SESSIONS_TOOL).resource,
        cursor=state.get("list_cursor"),
        seen_cursors=state.get("list_seen_cursors") or [],
        seen_ids=await store.keys(run, SESSION_ROWS),
    )
    # canceled participants too: a list that carries entry times then carries every one the summary would
    args = {"start_time": utc_z(since - SESSION_LOOKBACK), "end_time": utc_z(until), "deleted_participants": True}
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
                "retry": retry_update(services, state.get("retry"), failed, "sessions", "list_sessions"),
            },
        )
    listed = await store.rows(run, SESSION_ROWS)
    cached: dict[str, CachedSummary] = {}
    from_list: dict[str, Any] = {}
    if not state.get("refresh"):  # `refresh` fetches every summary
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
            "retry": settled(state.get("retry")),
        },
    )


async def listed_rows(store: AuditStore, state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's session rows, checked against the count the state recorded: rows that went missing (a store
    that was not kept, e.g. an in-memory one across processes) end the run instead of a report that lacks them."""
    rows: dict[str, dict[str, Any]] = await store.rows(state["run_key"], SESSION_ROWS)
    if len(rows) != state.get("sessions_listed", 0):
        raise AuditFailure(
            f"the audit's session rows are gone from the state store ({len(rows)} of "
            f"{state.get('sessions_listed', 0)}): start the audit afresh (another --thread-id)"
        )
    return rows


def _row_order(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row.get("scheduled_start") or "", row.get("session_id") or "")


def session_row(session: Any, since: datetime, until: datetime) -> dict[str, Any] | None:
    """The derived row for one listed session; None when it is outside the window or canceled.

    A listed session the audit cannot read (not an object, no id, unreadable schedule) is kept with a `problem`:
    it cannot be checked, and the report says so instead of dropping it.
    """
    if not isinstance(session, Mapping):
        return _unchecked_row(None, "", None, None, f"the session list held a {type(session).__name__}, not a session")
    if session.get("canceled_time"):
        return None
    raw_id = session.get("session_id")
    session_id = str(raw_id) if raw_id not in (None, "") else None
    name = str(session.get("session_name") or "")
    end = parse_time(session.get("end_time"))
    start = parse_time(session.get("start_time"))
    if end is None or start is None or not (is_plausible(start) and is_plausible(end)):
        raw = {"start_time": _raw(session.get("start_time")), "end_time": _raw(session.get("end_time"))}
        return _unchecked_row(session_id, name, None, None, f"scheduled times could not be read: {raw}")
    if not (since <= end < until):
        return None
    if session_id is None:
        return _unchecked_row(None, name, start, end, "the session list gave this session no id")
    row: dict[str, Any] = {
        "session_id": session_id,
        "session_name": name,
        "scheduled_start": utc_z(start),
        "scheduled_end": utc_z(end),
    }
    if session.get("actual_end_time") not in (None, ""):  # some accounts list it (Coviu's OAS): a no-show it is not
        row["listed_actual_end"] = True
        facts = summary_facts_from_list(session)
        if facts is not None:
            row["listed_facts"] = facts
    row["listed"] = listed_digest(session)
    return row


def summary_facts_from_list(session: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the summary would tell, when the listed session carries all of it: an actual end, and every participant
    (canceled ones too: the list is asked for them) with its `entry_time` field, null or a time. Anything missing or
    unreadable is not guessed: None, and the summary is fetched."""
    participants = session.get("participants")
    if not isinstance(participants, list):
        return None
    if not all(isinstance(p, Mapping) and "entry_time" in p for p in participants):
        return None
    facts = summary_facts({"actual_end_time": session.get("actual_end_time"), "participants": participants})
    return None if facts.get("unavailable") or not facts.get("actual_end") else facts


# What the list shows about a person rather than the session's timing: left out of the digest (a renamed patient
# does not refetch a summary, and no name goes into a digest).
LISTED_PERSONAL = re.compile(r"(name|picture|phone|email)", re.IGNORECASE)


def _listed_facts(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every scalar the list shows, at any depth (objects and lists flattened by path), less personal fields."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not LISTED_PERSONAL.search(str(key)):
                yield from _listed_facts(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from _listed_facts(inner, f"{path}.{i}")
    else:
        yield path, value


def listed_digest(session: Mapping[str, Any]) -> str:
    """A digest of everything the list shows about this session but names (times under any name, state, status,
    update time, its participants, at any depth): a cached summary is reused only while it is unchanged (a
    correction upstream, a new state, a later update time: fetched again)."""
    facts = dict(_listed_facts(session, ""))
    text = json.dumps(facts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _unchecked_row(
    session_id: str | None, name: str, start: datetime | None, end: datetime | None, problem: str
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "session_name": name,
        "scheduled_start": utc_z(start) or None,
        "scheduled_end": utc_z(end) or None,
        "problem": problem,
    }


def _raw(value: Any) -> str | None:
    return None if value is None else str(value)[:64]


def summary_facts(summary: Any) -> dict[str, Any]:
    """actual_start (earliest participant entry) and actual_end from a summary, or why they cannot be known.

    `unavailable` is set when the summary is not a summary object or a time in it cannot be read: the session is
    then "could not be checked", never "no recorded end".
    """
    if not isinstance(summary, Mapping):
        return _unavailable(f"the summary is a {type(summary).__name__}, not an object")
    participants = summary.get("participants") or []
    if not isinstance(participants, list):
        return _unavailable(f"the summary's participants are a {type(participants).__name__}, not a list")
    entries = []
    for participant in participants:
        if not isinstance(participant, Mapping):
            return _unavailable("a participant in the summary is not an object")
        raw_entry = participant.get("entry_time")
        if raw_entry in (None, ""):
            continue
        entered = parse_time(raw_entry)
        if entered is None:
            return _unavailable(f"a participant's entry_time could not be read: {_raw(raw_entry)!r}")
        entries.append(entered)
    raw_end = summary.get("actual_end_time")
    actual_end = parse_time(raw_end)
    if raw_end not in (None, "") and actual_end is None:
        return _unavailable(f"actual_end_time could not be read: {_raw(raw_end)!r}")
    earliest = min(entries, key=_sort_key) if entries else None
    return {
        "actual_start": _iso_or_raw(earliest),
        "actual_end": _iso_or_raw(actual_end),
    }


def _sort_key(moment: datetime) -> float:
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        return float("-inf") if moment.year < 2000 else float("inf")


def _iso_or_raw(moment: datetime | None) -> str | None:
    """ISO text for state; a time so far out that it cannot be normalised keeps its own offset."""
    if moment is None:
        return None
    try:
        return utc_z(moment)
    except (OverflowError, ValueError):
        return moment.isoformat()


def _unavailable(problem: str) -> dict[str, Any]:
    return {"actual_start": None, "actual_end": None, "unavailable": problem}


def _outcome_problem(outcome: CallOutcome) -> str:
    """A short, id-free reason for the report: the error's class and what it said."""
    error = outcome.error
    label = type(error).__name__ if error is not None else outcome.kind
    status = getattr(error, "status_code", None)
    prefix = f"{label} {status}" if status else label
    return f"{prefix}: {outcome.text.removeprefix('Error: ')}"[:300]


def cacheable(row: Mapping[str, Any], facts: Mapping[str, Any], fetched_at: datetime) -> CachedSummary | None:
    """The facts to keep for good, or None. What can no longer change: a readable summary with an actual end and
    plausible times, or a no-show (nobody entered, no end) fetched `NO_SHOW_SETTLED` after its scheduled end, when
    the session has long been finished. An unavailable summary, one with implausible times, a call someone entered
    that has no end yet, and a no-show too fresh to be sure of are fetched again."""
    if facts.get("unavailable"):
        return None
    scheduled_start, scheduled_end = parse_time(row.get("scheduled_start")), parse_time(row.get("scheduled_end"))
    if scheduled_start is None or scheduled_end is None:
        return None
    if not facts.get("actual_end"):
        nobody_entered = not facts.get("actual_start")
        if nobody_entered and fetched_at - scheduled_end >= NO_SHOW_SETTLED and not row.get("listed_actual_end"):
            return {"actual_start": None, "actual_end": None}
        return None
    actual_end = parse_time(facts["actual_end"])
    if actual_end is None:
        return None
    actual_start = parse_time(facts.get("actual_start")) or scheduled_start
    if implausible_reason(scheduled_start, scheduled_end, actual_start, actual_end):
        return None
    return {"actual_start": facts.get("actual_start"), "actual_end": str(facts["actual_end"])}


async def fetch_summaries(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """Fetch the next batch of summaries the run does not have yet (cached ones are in already), several in
    flight under the governor; the batch is the unit of resumption. What was read goes to the run's side rows,
    and what can no longer change to the cache. Transient failures go to wait_and_retry; what succeeded is kept.
    """
    services = await resolve_services(runtime.context)
    store = audit_store(services)
    run = state["run_key"]
    listed = await listed_rows(store, state)
    done = await store.keys(run, SUMMARY_ROWS)
    todo = [
        r
        for r in sorted(listed.values(), key=_row_order)
        if r.get("session_id") and not r.get("problem") and r["session_id"] not in done
    ]
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
                ids={**ids, "session_id": session_id},
                policy=AUDIT_POLICY,
            )
        if outcome.kind == "ok":
            facts[session_id] = summary_facts(outcome.result)
        elif outcome.kind == "transient":
            failed.append(outcome)
        else:
            facts[session_id] = _unavailable(_outcome_problem(outcome))
        if services.on_progress and outcome.kind != "transient":
            services.on_progress("summaries", 1, 0)

    await asyncio.gather(*(one(r["session_id"]) for r in batch))
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
    retry = state.get("retry")
    if failed:
        base = settled(retry) if facts else retry  # progress resets the attempt count
        return Command(
            goto="wait_and_retry",
            update={"retry": retry_update(services, base, failed[0], "summaries", "fetch_summaries")},
        )
    more = len(todo) > len(batch)
    return Command(goto="fetch_summaries" if more else "list_submissions", update={"retry": settled(retry)})


def submission_session_id(submission: Mapping[str, Any]) -> str | None:
    """The session a submission names: `session_id`, `sessionId`, or a nested `session` object."""
    for key in ("session_id", "sessionId"):
        value = submission.get(key)
        if value not in (None, ""):
            return str(value)
    nested = submission.get("session")
    if isinstance(nested, Mapping):
        for key in ("session_id", "id"):
            if nested.get(key) not in (None, ""):
                return str(nested[key])
    elif isinstance(nested, str) and nested:
        return nested
    return None


async def list_submissions(state: AuditState, runtime: Runtime[Context]) -> Command[Any]:
    """All submissions in the intake collection around the window, indexed by session id (ours only), kept in the
    run's side rows."""
    services = await resolve_services(runtime.context)
    store = audit_store(services)
    run = state["run_key"]
    since, until = _window(state)
    wanted = {str(r["session_id"]) for r in (await listed_rows(store, state)).values() if r.get("session_id")}
    index: dict[str, list[list[Any]]] = {
        k: [list(x) for x in v] for k, v in (await store.rows(run, SUBMISSION_ROWS)).items()
    }
    changed: set[str] = set()
    latest = min(until + FORM_SLACK, max(services.clock.now(), until))
    args = {"from": utc_z(since - FORM_SLACK), "until": utc_z(latest)}
    walk = PageWalk(
        SUBMISSIONS_TOOL,
        services.toolbox.executor.spec(SUBMISSIONS_TOOL).resource,
        cursor=state.get("submission_cursor"),
        seen_cursors=state.get("submission_seen_cursors") or [],
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
                    "retry": retry_update(services, state.get("retry"), failed, "submissions", "list_submissions"),
                },
            )
    log.info("audit: %d sessions have submissions", len(index))
    return Command(
        goto="write_report",
        update={
            "submission_cursor": None,
            "submission_seen_cursors": [],
            "retry": settled(state.get("retry")),
        },
    )


def implausible_reason(
    scheduled_start: datetime, scheduled_end: datetime, actual_start: datetime, actual_end: datetime | None
) -> str | None:
    """Why actual times cannot be right (outside 2000–2100, a day away from the schedule, end before start)."""
    for label, moment in (("actual start", actual_start), ("actual end", actual_end)):
        if moment is None:
            continue
        if not is_plausible(moment):
            return f"{label} is outside the years 2000–2100"
        if moment < scheduled_start - PLAUSIBLE_DISTANCE or moment > scheduled_end + PLAUSIBLE_DISTANCE:
            return f"{label} is more than a day away from the schedule"
    if actual_end is not None and actual_end < actual_start:
        return "actual end is before actual start"
    return None


def reconcile_row(
    row: Mapping[str, Any], facts: Mapping[str, Any], submissions: list[list[Any]], threshold: float
) -> dict[str, Any]:
    """One session's report row per the contract's definitions. Unknown is never "no": a row that could not be
    checked gets `summary_unavailable`, times that cannot be right get `implausible_times`; neither is billable.
    """
    flags: list[str] = []
    if not submissions:
        flags.append("missing_form")
    elif not any(locked for _, locked in submissions):
        flags.append("pending_form")
    out: dict[str, Any] = {
        "session_id": row["session_id"],
        "session_name": row["session_name"],
        "scheduled_start": row["scheduled_start"],
        "scheduled_end": row["scheduled_end"],
        "actual_start": None,
        "actual_end": None,
        "scheduled_minutes": None,
        "actual_minutes": None,
        "billable_minutes": None,
        "overrun_minutes": None,
        "submission_ids": sorted(str(s) for s, _ in submissions),
        "flags": flags,
        "problem": None,
    }
    scheduled_start = parse_time(row["scheduled_start"])
    scheduled_end = parse_time(row["scheduled_end"])
    if scheduled_start is not None and scheduled_end is not None:
        out["scheduled_minutes"] = one_decimal((scheduled_end - scheduled_start).total_seconds() / 60)
    problem = row.get("problem") or facts.get("unavailable")
    if problem or scheduled_start is None or scheduled_end is None:
        flags.append("summary_unavailable")
        out["problem"] = problem or "the session's schedule could not be read"
        return out
    if not facts:
        flags.append("summary_unavailable")
        out["problem"] = "the summary was not fetched"
        return out
    actual_start = parse_time(facts.get("actual_start")) or scheduled_start
    actual_end = parse_time(facts.get("actual_end"))
    reason = implausible_reason(scheduled_start, scheduled_end, actual_start, actual_end)
    if reason:
        flags.append("implausible_times")
        out["problem"] = reason
        out["raw_times"] = {"actual_start": facts.get("actual_start"), "actual_end": facts.get("actual_end")}
        return out
    out["actual_start"] = utc_z(actual_start)
    if actual_end is None:
        flags.append("no_actual_end")
        return out
    actual_minutes = one_decimal(max(0.0, (actual_end - actual_start).total_seconds() / 60))
    overrun = one_decimal(max(0.0, (actual_end - scheduled_end).total_seconds() / 60))
    out.update(
        actual_end=utc_z(actual_end),
        actual_minutes=actual_minutes,
        billable_minutes=math.ceil(actual_minutes),
        overrun_minutes=overrun,
    )
    if overrun > threshold:
        flags.insert(len(flags), "overrun")
    return out


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sessions": len(rows),
        "missing_forms": sum("missing_form" in r["flags"] for r in rows),
        "pending_forms": sum("pending_form" in r["flags"] for r in rows),
        "overruns": sum("overrun" in r["flags"] for r in rows),
        "no_actual_end": sum("no_actual_end" in r["flags"] for r in rows),
        "billable_minutes": sum(r["billable_minutes"] or 0 for r in rows),
        "summary_unavailable": sum("summary_unavailable" in r["flags"] for r in rows),
        "implausible_times": sum("implausible_times" in r["flags"] for r in rows),
    }


async def reconcile(state: AuditState, services: Services) -> dict[str, Any]:
    """Join rows, summaries and submissions (dict lookups: O(N)) into the contract's report."""
    threshold = threshold_of(state)
    store = audit_store(services)
    run = state["run_key"]
    summaries = await store.rows(run, SUMMARY_ROWS)
    index = await store.rows(run, SUBMISSION_ROWS)
    rows = [
        reconcile_row(r, summaries.get(r["session_id"] or "", {}), index.get(r["session_id"] or "", []), threshold)
        for r in sorted((await listed_rows(store, state)).values(), key=_row_order)
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
        "summaries_from_cache": int(state.get("summaries_cached") or 0),
        # summaries not fetched: the session list carried what they would tell (actual end, entry times)
        "summaries_from_list": int(state.get("summaries_from_list") or 0),
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
        overrun_threshold_minutes=threshold_of(state),
    )
    report_paths = {k: str(v) for k, v in paths.items()}
    if services.on_report is not None:  # to staff, through the outbox (a rerun of this step writes no second one)
        await services.on_report(report, report_paths, threshold_of(state))
    # The report is written (and in state): the run's side rows are not needed any more (they hold patient data).
    await audit_store(services).delete_run(state["run_key"])
    return {"report": report, "report_paths": report_paths}


async def _reconciled_in_write_report(state: AuditState) -> dict[str, Any]:
    """The old `reconcile` node's place: a thread checkpointed before it was folded into `write_report` resumes
    here and passes on (the side rows are still there, and `write_report` reconciles from them)."""
    return {}


def aggregates(report: Mapping[str, Any]) -> dict[str, Any]:
    """The only facts the model sees: counts and sums, whatever the number of sessions."""
    rows = report["sessions"]
    overruns = [r["overrun_minutes"] for r in rows if "overrun" in r["flags"]]
    return {
        "window": report["window"],
        "complete": report.get("complete", True),
        "totals": report["totals"],
        "longest_overrun_minutes": max(overruns) if overruns else 0,
        "flagged_sessions": sum(1 for r in rows if r["flags"]),
    }


_FIGURE = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def _facts(value: Any, *, in_text: bool = False) -> list[float]:
    """Every number in the aggregates; with `in_text`, only those written inside strings (the window's dates and
    times: a paragraph may name the day), else only the numbers themselves (counts and sums)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)] if math.isfinite(value) and not in_text else []
    if isinstance(value, str):
        return [float(x) for x in re.findall(r"\d+", value)] if in_text else []
    if isinstance(value, Mapping):
        return [n for item in value.values() for n in _facts(item, in_text=in_text)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in _facts(item, in_text=in_text)]
    return []


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# Where a paragraph names a date or a time: its figures are checked against the window's, never a count's.
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?"
    rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    r"|\b\d{1,2}:\d{2}(?::\d{2})?\b",
    re.IGNORECASE,
)


def unchecked_figures(text: str, facts: Mapping[str, Any]) -> list[str]:
    """The figures (in digits) of a model's paragraph that match none of the aggregates it was given, allowing the
    rounding the paragraph shows (17 or 17.5 for 17.46). A figure inside a date or time the paragraph names is
    checked against the window's; any other against the counts and sums only (a count that happens to be a digit
    of the day is still checked). Empty: every figure is one of the report's."""
    known = _facts(facts)
    day = set(_facts(facts, in_text=True))
    unmatched: list[str] = []
    for match in _DATE.finditer(text):
        unmatched.extend(t for t in re.findall(r"\d+", match.group(0)) if float(t) not in day)
    for token in _FIGURE.findall(_DATE.sub(" ", text)):
        number = float(token.replace(",", ""))
        places = len(token.split(".")[1]) if "." in token else 0
        if not any(round(fact, places) == number or fact == number for fact in known):
            unmatched.append(token)
    return unmatched


def model_name(model: Any) -> str:
    """The configured model's name, for the report's attribution."""
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return str(getattr(model, "_llm_type", type(model).__name__))


async def narrate(services: Services, context: Context | None, report: Mapping[str, Any]) -> Narrative | None:
    """One optional paragraph from the model, built from the aggregates only, naming the model, every figure checked
    against the report's totals (a mismatch leaves it out, said in the report and logged). A failing model never
    costs the report: it is written without the paragraph."""
    if ctx.planner(context, services) != "llm" or services.model is None:
        return None
    import json

    from graphs.planning import invoke_model
    from prompts import load_prompt
    from reporting.audit_report import Narrative

    name = model_name(services.model)
    facts = aggregates(report)
    prompt = load_prompt("audit", aggregates=json.dumps(facts, sort_keys=True))
    try:
        reply = await invoke_model(services, services.model, prompt, what="writing the audit's summary paragraph")
    except Exception as exc:  # the narrative is optional: any model failure leaves it out
        log.warning("audit: the report's narrative was left out: the model call failed (%s)", type(exc).__name__)
        return Narrative(name, left_out=f"the model call failed ({type(exc).__name__})")
    text = str(reply.content).strip()[:1500]
    if not text:
        return None
    unmatched = unchecked_figures(text, facts)
    if unmatched:
        shown = ", ".join(unmatched[:5])
        log.warning(
            "audit: the model's narrative was left out: its figure(s) %s match none of the report's totals", shown
        )
        return Narrative(name, left_out=f"its figure(s) {shown} match none of the report's totals")
    return Narrative(name, text=text)


def _window(state: Mapping[str, Any]) -> tuple[datetime, datetime]:
    since = parse_time(state["window"]["since"])
    until = parse_time(state["window"]["until"])
    if since is None or until is None:
        raise WindowError("the audit window is missing from state")
    return since, until


def build_audit_graph() -> StateGraph[AuditState, Context, AuditInput, AuditOutput]:
    """The audit builder; compile it with or without a checkpointer."""
    builder = StateGraph(AuditState, context_schema=Context, input_schema=AuditInput, output_schema=AuditOutput)
    builder.add_node("prepare", prepare)
    builder.add_node("list_sessions", list_sessions, destinations=("fetch_summaries", "wait_and_retry"))
    builder.add_node(
        "fetch_summaries", fetch_summaries, destinations=("fetch_summaries", "list_submissions", "wait_and_retry")
    )
    # the whole state in (as `act` in triage): a failure here is told to staff with the run's window (agent/server.py)
    builder.add_node(  # type: ignore[call-overload]
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
