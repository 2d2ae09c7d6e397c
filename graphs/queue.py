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
