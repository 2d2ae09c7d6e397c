"""Waiting-queue arithmetic shared by triage and `queue watch`: who is waiting and for how long.

A call is waiting when it has no `answeredAt`, `leftQueueAt` or `finishedAt`; wait = now − `joinedAt`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from tools.timeparse import is_plausible, parse_time

DONE_FIELDS = ("answeredAt", "leftQueueAt", "finishedAt")
# A join time later than now by more than clock skew is not a wait (e.g. naive local times read as UTC east of UTC).
FUTURE_SKEW = timedelta(minutes=5)


class LongWait(TypedDict):
    call_id: str
    waited_minutes: float


class QueueSummary(TypedDict):
    waiting: int
    longest_wait_minutes: float
    over_threshold: list[LongWait]
    unknown_wait: list[str]  # waiting calls whose join time could not be read: unknown is never "short"


def is_waiting(call: Mapping[str, Any]) -> bool:
    return not any(call.get(f) for f in DONE_FIELDS)


def summarize_queue(calls: Iterable[Any], now: datetime, threshold_minutes: float) -> QueueSummary:
    """Count waiting calls, the longest wait, and every call waiting longer than the threshold.

    `joinedAt` is read in any form (ISO, RFC-1123, epoch seconds or ms; no zone = UTC). A waiting call whose join
    time cannot be read, or lies in the future, is listed in `unknown_wait` and alerted on, never taken as a short
    wait.
    """
    waiting = 0
    longest = 0.0
    over: list[LongWait] = []
    unknown: list[str] = []
    for call in calls:
        if not isinstance(call, Mapping) or not is_waiting(call):
            continue
        waiting += 1
        call_id = str(call.get("callId") or call.get("call_id") or call.get("id") or "?")
        joined = parse_time(call.get("joinedAt"))
        if joined is None or not is_plausible(joined) or joined > now + FUTURE_SKEW:
            unknown.append(call_id)
            continue
        minutes = round(max(0.0, (now - joined).total_seconds() / 60), 1)
        longest = max(longest, minutes)
        if minutes > threshold_minutes:
            over.append({"call_id": call_id, "waited_minutes": minutes})
    over.sort(key=lambda c: -c["waited_minutes"])
    return {"waiting": waiting, "longest_wait_minutes": longest, "over_threshold": over, "unknown_wait": unknown}


def alert_lines(summary: QueueSummary, threshold_minutes: float) -> list[str]:
    lines = [
        f"Call {c['call_id']} has waited {c['waited_minutes']:.0f} min (over {threshold_minutes:g} min)"
        for c in summary["over_threshold"]
    ]
    lines.extend(
        f"Call {call_id} is waiting, but its wait could not be read (joinedAt unreadable): check it"
        for call_id in summary.get("unknown_wait", [])
    )
    return lines


# --- the clinic's monitor (`queue watch` with notification channels) ------------------------------

ALERT, ESCALATION, UNKNOWN, SEEN = "alert", "escalation", "unknown", "seen"


class QueueEvent(TypedDict):
    """Something staff are told once per call and level: a long wait, a longer one, an unreadable one, or that a
    call alerted on has left the queue. `name` is the patient's display name (patient data: only for channels
    allowed to carry it; never logged)."""

    call_id: str
    level: str
    waited_minutes: float | None
    name: str | None
    outcome: str | None  # for "seen": answered, left the queue, finished, or no longer listed


def display_name(call: Mapping[str, Any]) -> str | None:
    """The caller's name as Coviu's `details` gives it (a JSON object with firstName/lastName, name or
    displayName), or None."""
    import json

    details: Any = call.get("details")
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            return None
    if not isinstance(details, Mapping):
        return None
    for key in ("displayName", "display_name", "name"):
        if isinstance(details.get(key), str) and details[key].strip():
            return str(details[key]).strip()[:80]
    parts = [details.get(k) for k in ("firstName", "lastName")]
    name = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return name[:80] or None


def _outcome(call: Mapping[str, Any] | None) -> str:
    if call is None:
        return "no longer listed"
    if call.get("answeredAt"):
        return "answered"
    if call.get("leftQueueAt"):
        return "left the queue"
    return "finished"


def queue_events(
    calls: Iterable[Any],
    now: datetime,
    threshold_minutes: float,
    escalate_minutes: float,
    raised: Mapping[str, set[str]],
) -> list[QueueEvent]:
    """The events not raised before (`raised`: levels per call id): a call over the threshold gets `alert`, over
    the escalation threshold `escalation` (only that, when it is first seen already over it), an unreadable wait
    `unknown`, and a call alerted on that is no longer waiting `seen`."""
    listed: dict[str, Mapping[str, Any]] = {}
    for call in calls:
        if isinstance(call, Mapping):
            listed[str(call.get("callId") or call.get("call_id") or call.get("id") or "?")] = call
    summary = summarize_queue(listed.values(), now, threshold_minutes)
    events: list[QueueEvent] = []
    waiting: set[str] = set()
    for over in summary["over_threshold"]:
        call_id, minutes = over["call_id"], over["waited_minutes"]
        waiting.add(call_id)
        before = raised.get(call_id, set())
        level = ESCALATION if minutes > escalate_minutes else ALERT
        if level in before or (level == ALERT and ESCALATION in before):
            continue
        events.append(
            {
                "call_id": call_id,
                "level": level,
                "waited_minutes": minutes,
                "name": display_name(listed[call_id]),
                "outcome": None,
            }
        )
    for call_id in summary["unknown_wait"]:
        waiting.add(call_id)
        if UNKNOWN not in raised.get(call_id, set()):
            events.append(
                {
                    "call_id": call_id,
                    "level": UNKNOWN,
                    "waited_minutes": None,
                    "name": display_name(listed[call_id]),
                    "outcome": None,
                }
            )
    for call_id, levels in sorted(raised.items()):
        if SEEN in levels or call_id in waiting or not levels & {ALERT, ESCALATION, UNKNOWN}:
            continue
        call = listed.get(call_id)
        if call is not None and is_waiting(call):
            continue  # waiting, but under the threshold again (a clock correction): not seen yet
        events.append(
            {
                "call_id": call_id,
                "level": SEEN,
                "waited_minutes": None,
                "name": display_name(call) if call is not None else None,
                "outcome": _outcome(call),
            }
        )
    return events
