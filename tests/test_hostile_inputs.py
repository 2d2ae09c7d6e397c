"""Hostile and odd answers from upstream: error bodies on a success status, summaries of the wrong shape, 429 storms
on the catalog fetch, pages that bring nothing new or cycle, joins in the future, writes whose answer fails the
check, DST days, unusual separators. Each test names the input and the wrong output it must never give."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from helpers_mock import (
    COVIU_TOOLS,
    MockTruto,
    coviu_catalog,
    json_response,
    list_page,
    make_client,
    make_executor,
    truto_error,
)

from graphs.audit import resolve_window, summary_facts
from graphs.queue import summarize_queue
from sandbox import Sandbox
from tests.test_never_silently_wrong import (
    audit,
    ended_session,
    healthy_report,
    names_session,
    resource_of,
    rows_by_id,
    sandbox_config,  # noqa: F401  (lists without entry times: summaries read)
    services_for,
    triage,
)
from tests.test_never_silently_wrong import json_response as rewrite_json
from tools.clock import FakeClock
from tools.errors import CoviuAgentError, MalformedResponseError
from tools.executor import check_body
from tools.paging import PageWalk, PaginationError
from tools.ratelimit import RateLimitGovernor, parse_retry_after
from tools.textsafety import (
    has_unsafe_chars,
    safe_json,
    safe_line,
    safe_text,
)
from tools.toolbox import fetch_catalog

# --- a 2xx that carries an error, with more keys than the bare error object -----------------------------------------

TRUTO_ERROR_BODY = {
    "statusCode": 403,
    "error": "Forbidden",
    "message": "The integrated account is not allowed to read this session",
    "truto_is_remote_error": True,
    "raw_response": {"error": {"message": "forbidden"}},
}


@pytest.mark.parametrize(
    "body",
    [TRUTO_ERROR_BODY, {"error": "session not found", "session_id": "s-1"}, {"errors": ["denied"], "id": "s-1"}],
    ids=["truto-error-body", "error-beside-an-id", "errors-beside-an-id"],
)
def test_a_success_status_with_an_error_is_malformed_for_a_get(body: dict[str, Any]) -> None:
    """Truto's own error body (statusCode, error, message, truto_is_remote_error, raw_response) on a 200, or an
    `error` beside a record's id, is malformed, never the record (the audit would read a summary with no end)."""
    spec = coviu_catalog().get("get_single_coviu_session_by_id")
    with pytest.raises(MalformedResponseError):
        check_body(spec, body)


def test_a_success_status_with_an_error_is_malformed_for_a_list() -> None:
    """`{"result": [], "error": "Unauthorized"}` on a 200 is malformed, never an empty list (0 sessions, exit 0)."""
    spec = coviu_catalog().get("list_all_coviu_sessions")
    with pytest.raises(MalformedResponseError):
        check_body(spec, {"result": [], "next_cursor": None, "error": "Unauthorized"})


def test_a_record_with_an_empty_error_field_is_still_a_record() -> None:
    """The other side: a record whose `error` field is empty (null, "", []) is not an error."""
    spec = coviu_catalog().get("get_single_coviu_session_by_id")
    empties: tuple[Any, ...] = (None, "", [], {})
    for empty in empties:
        check_body(spec, {"session_id": "s-1", "error": empty})
    check_body(coviu_catalog().get("list_all_coviu_sessions"), {"result": [], "error": None})


async def test_a_one_off_truto_error_body_on_a_200_summary_changes_nothing(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    """End to end: one summary answered 200 with Truto's error body is retried, not reported as "no recorded end"."""
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)
    left = {"bad": 1}

    def once(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        victim_summary = resource_of(request) == "session_summaries" and names_session(request, victim["session_id"])
        if victim_summary and left["bad"] > 0:
            left["bad"] -= 1
            return rewrite_json(response, {**TRUTO_ERROR_BODY, "session_id": victim["session_id"]}, 200)
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, once))
    assert rows_by_id(report)[victim["session_id"]]["flags"] == rows_by_id(healthy)[victim["session_id"]]["flags"]
    assert report == healthy


# --- summaries whose shape is not a summary: could not be checked, never a crash ------------------------------------


@pytest.mark.parametrize("participants", [3, True, 2.5], ids=["int", "bool", "float"])
def test_a_summary_whose_participants_are_not_a_list_is_unavailable_not_a_crash(participants: Any) -> None:
    """`participants: 3` makes the summary unavailable: no TypeError in the audit, no traceback, a report."""
    facts = summary_facts({"participants": participants, "actual_end_time": "2026-11-24T10:00:00Z"})
    assert facts["unavailable"]
    assert facts["actual_end"] is None


async def test_an_audit_with_a_non_list_participants_field_is_incomplete_not_a_crash(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path
) -> None:
    healthy = await healthy_report(sandbox, clock, tmp_path)
    victim = ended_session(healthy)

    def garble(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if resource_of(request) == "session_summaries" and names_session(request, victim["session_id"]):
            return rewrite_json(response, {**response.json(), "participants": 1})
        return response

    report = await audit(await services_for(sandbox, clock, tmp_path, garble))
    row = rows_by_id(report)[victim["session_id"]]
    assert "summary_unavailable" in row["flags"] and row["billable_minutes"] is None
    assert report["complete"] is False


# --- a 429 storm on the catalog fetch at start-up ------------------------------------------------------------------


def catalog_storm(n: int | None, retry_after: str | None) -> MockTruto:
    """`/tools` answers 429 `n` times (None: forever), then the catalog; proxy calls are not expected."""
    count = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        count["n"] += 1
        if count["n"] > 500:  # a hot loop would never end: fail loudly instead
            raise AssertionError(f"{count['n']} requests to {request.url.path}: a hot retry loop")
        if n is None or count["n"] <= n:
            return truto_error(429, headers={"Retry-After": retry_after} if retry_after else None)
        return json_response({"result": COVIU_TOOLS})

    return MockTruto(handler)


@pytest.mark.parametrize("retry_after", ["2", None], ids=["retry-after-2", "no-header"])
async def test_a_429_storm_on_the_catalog_fetch_waits_by_the_header(retry_after: str | None) -> None:
    """A 429 on `GET /integrated-account/{id}/tools` (the catalog, not paced by the governor) holds its retries for
    what Retry-After says: five 429s are never five back-to-back requests."""
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = catalog_storm(5, retry_after)
    async with make_client(mock, clock=clock, governor=governor) as client:
        await fetch_catalog(client, clock=clock)
    assert mock.count == 6
    expected = 2.0 if retry_after else 10.0  # the header's wait, or the default back-off
    assert sum(clock.sleeps) >= 5 * expected - 1e-6
    assert governor.budget.as_dict()["count"] == 5


async def test_an_endless_429_storm_on_the_catalog_fetch_ends_by_the_budget() -> None:
    """Each retry of an endless 429 storm on `/tools` claims its wait from the budget: it ends, never a hot loop."""
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    mock = catalog_storm(None, "1")
    with pytest.raises(CoviuAgentError) as caught:
        async with make_client(mock, clock=clock, governor=governor) as client:
            await fetch_catalog(client, clock=clock)
    assert not isinstance(caught.value, AssertionError)
    assert mock.count <= 200  # budget 120 s of 1 s waits


# --- an upstream that ignores the cursor: bounded by progress, not by 10,000 requests -----------------------------


@pytest.mark.parametrize("rows", [[], [{"session_id": "s-1"}]], ids=["empty-pages", "same-page-again"])
async def test_pages_that_bring_nothing_new_stop_the_walk_early(rows: list[Any]) -> None:
    """Pages with no new row but a fresh cursor each time stop the walk early, long before the 10,000-page cap
    (10,000 requests: over half an hour at Truto's 50 per 10 s before triage's queue check or the audit could fail)."""
    count = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        count["n"] += 1
        if count["n"] > 1000:
            raise AssertionError("followed more than 1,000 pages that brought nothing new")
        return list_page(rows, next_cursor=f"c{count['n']}")

    executor = make_executor(handler)
    with pytest.raises(PaginationError):
        await executor.all_items("list_all_coviu_sessions", {})
    assert count["n"] <= 100


def test_a_few_barren_pages_between_full_ones_are_fine() -> None:
    """The other side: a short run of empty pages (a filter that matched nothing on those pages) still ends well."""
    walk = PageWalk("list_all_coviu_sessions", "sessions")
    taken: list[Any] = []
    for i in range(5):
        taken += walk.take({"result": [], "next_cursor": f"e{i}"})
    taken += walk.take({"result": [{"session_id": "s-1"}], "next_cursor": None})
    assert walk.done and len(taken) == 1


# --- a waiting call that joined "in the future" ---------------------------------------------------------------------


def test_a_join_time_hours_in_the_future_is_an_unknown_wait_not_zero() -> None:
    """An account in Australia/Sydney sending naive local join times (read as UTC) puts a patient who has waited
    40 minutes 10 h 20 min in the future: that is an unknown wait, never 0 min with no alert."""
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # 20:00 in Sydney
    local_join = (now + timedelta(hours=11) - timedelta(minutes=40)).replace(tzinfo=None).isoformat()
    calls = [
        {"callId": "c-1", "joinedAt": local_join},
        {"callId": "c-2", "joinedAt": (now - timedelta(minutes=3)).isoformat()},
        {"callId": "c-3", "joinedAt": (now + timedelta(seconds=20)).isoformat()},  # small clock skew: fine
    ]
    summary = summarize_queue(calls, now, 10)
    assert summary["waiting"] == 3
    assert summary["unknown_wait"] == ["c-1"]
    assert summary["longest_wait_minutes"] == 3.0


# --- a write whose 2xx body fails the body check may have been written ----------------------------------------------

NEW_SESSION = {"session_name": "Consult", "start_time": "2026-11-26T10:00:00Z", "end_time": "2026-11-26T10:30:00Z"}


@pytest.mark.parametrize(
    "body",
    [[], "created", {"session_id": "s-9", "error": "webhook delivery failed"}],
    ids=["list", "text", "record-with-error"],
)
async def test_a_create_whose_2xx_body_fails_the_check_may_have_been_written(body: Any) -> None:
    """A create answered 2xx with a body the executor's check refuses (not an object, or an error beside the new
    record) is a MalformedResponseError naming its HTTP verb, so `may_have_written` is True: the graphs look for the
    session the first answer may have created before any retry (never a second session)."""
    executor = make_executor(lambda request: json_response(body))
    with pytest.raises(MalformedResponseError) as caught:
        await executor.run("create_a_coviu_session", NEW_SESSION)
    assert caught.value.may_have_written


@pytest.mark.profiles("default")
@pytest.mark.parametrize("body", [[], {"error": "webhook delivery failed"}], ids=["list", "error-beside-record"])
async def test_triage_whose_session_create_answer_fails_the_check_creates_one_session(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, body: Any
) -> None:
    """End to end: the sandbox creates the session, but its 2xx answer fails the body check once; the retry finds the
    session the first request created instead of creating a second."""
    left = {"bad": 1}

    def garble_create(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path.endswith("/proxy/sessions") and left["bad"] > 0:
            left["bad"] -= 1
            return rewrite_json(response, body if isinstance(body, list) else {**response.json(), **body})
        return response

    sandbox.config.honour_idempotency_keys = False  # the lookup, not Truto's dedupe, must prevent a duplicate
    before = len(sandbox.store.sessions)
    state = await triage(await services_for(sandbox, clock, tmp_path, garble_create))
    assert left["bad"] == 0
    assert len(sandbox.store.sessions) == before + 1
    assert state["session"]["session_id"] in sandbox.store.sessions


# --- retry-after forms, reset-zero pacing, cycling cursors, mixed ids, DST days, odd end types ------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("  5 ", 5.0), ("5.0e0", 5.0), ("-0", 0.0), ("0", 0.0), ("\u0665", 5.0)],
    ids=["spaces", "exponent", "minus-zero", "zero", "arabic-indic-digit"],
)
def test_retry_after_forms(value: str, seconds: float) -> None:
    now = FakeClock().now()
    assert parse_retry_after(value, now) == seconds
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0  # a past date


async def test_remaining_zero_with_reset_zero_on_every_answer_is_paced_not_a_hot_loop() -> None:
    clock = FakeClock()
    governor = RateLimitGovernor(clock=clock)
    headers = {"ratelimit-limit": "50", "ratelimit-remaining": "0", "ratelimit-reset": "0"}
    async with make_client(
        lambda request: json_response({"result": []}, headers=headers), clock=clock, governor=governor
    ) as client:
        for _ in range(60):
            await client.proxy("sessions", "list")
    assert sum(clock.sleeps) >= 59 * governor.spacing * 0.99  # evenly spaced, never back to back


@pytest.mark.parametrize("cycle", [["a", "b"], ["a", "b", "c"]], ids=["period-2", "period-3"])
def test_a_cycling_cursor_stops_the_walk(cycle: list[str]) -> None:
    walk = PageWalk("list_all_coviu_sessions", "sessions")
    with pytest.raises(PaginationError):
        for i in range(10):
            walk.take({"result": [{"session_id": f"s{i}"}], "next_cursor": cycle[i % len(cycle)]})


def test_ids_of_mixed_types_and_duplicates_in_one_page_are_counted_once() -> None:
    walk = PageWalk("list_all_coviu_sessions", "sessions")
    rows = walk.take({"result": [{"session_id": 1}, {"session_id": "1"}, {"session_id": "2"}, {"session_id": "2"}]})
    assert [r["session_id"] for r in rows] == [1, "2"] and walk.duplicates == 2


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Australia/Sydney", date(2026, 10, 4), 23),
        ("Australia/Sydney", date(2026, 4, 5), 25),
        ("America/Santiago", date(2026, 9, 6), 23),  # midnight does not exist that day
    ],
)
def test_date_windows_on_dst_days_are_the_real_clinic_day(zone: str, day: date, hours: int) -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    since, until, _ = resolve_window(ZoneInfo(zone), now, day=day.isoformat())
    assert (until.astimezone(UTC) - since.astimezone(UTC)) == timedelta(hours=hours)
    next_since, _, _ = resolve_window(ZoneInfo(zone), now, day=(day + timedelta(days=1)).isoformat())
    previous_until = resolve_window(ZoneInfo(zone), now, day=(day - timedelta(days=1)).isoformat())[1]
    assert until == next_since and previous_until == since  # days tile: no gap, no overlap


@pytest.mark.parametrize(
    "end", [True, {"at": "2026-11-24T10:00:00Z"}, ["2026-11-24T10:00:00Z"]], ids=["bool", "object", "list"]
)
def test_an_actual_end_of_the_wrong_type_is_unavailable(end: Any) -> None:
    assert summary_facts({"participants": [], "actual_end_time": end})["unavailable"]


# --- text: all of Unicode's bidi controls, and the line separators --------------------------------------------


@pytest.mark.parametrize("char", ["\u061c", "\u2028", "\u2029"], ids=["arabic-letter-mark", "line-sep", "para-sep"])
def test_the_arabic_letter_mark_and_line_separators_are_shown_escaped(char: str) -> None:
    """U+061C ARABIC LETTER MARK (with LRM/RLM, embeddings, overrides and isolates: Unicode's Bidi_Control set) and
    U+2028/U+2029, which `str.splitlines`, editors and JavaScript take as line breaks (a forged line in a log viewer),
    are shown escaped."""
    text = f"Ava{char}ALERT: forged"
    assert char not in safe_line(text) and char not in safe_text(text)
    assert has_unsafe_chars(text)
    assert char not in safe_json(json.dumps({"name": text}, ensure_ascii=False))


# --- a write answered with a binary body -------------------------------------------------------------------------


async def test_a_create_answered_with_a_binary_body_is_malformed_and_may_have_written() -> None:
    """A create answered 2xx with `application/octet-stream` (a proxy's error page, a misrouted download) is
    malformed and may have written, never the binary guard's metadata as a success (a 'session' without an id)."""
    executor = make_executor(
        lambda request: httpx.Response(200, content=b"\x00\x01", headers={"content-type": "application/octet-stream"})
    )
    with pytest.raises(MalformedResponseError) as caught:
        await executor.run("create_a_coviu_session", NEW_SESSION)
    assert caught.value.may_have_written


def test_a_false_cursor_ends_the_list_and_a_true_one_is_malformed() -> None:
    from tools.errors import MalformedResponseError as Malformed
    from tools.paging import list_envelope as envelope

    assert envelope({"result": [1], "next_cursor": False}) == ([1], None)
    with pytest.raises(Malformed):
        envelope({"result": [1], "next_cursor": True})
