"""`queue watch`: the waiting queue checked every interval, alerts once per call (through the outbox when
channels are configured), and each successful check kept in the state store (`queue status`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.errors import BadInput
from agent.runs.base import _services

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from agent.settings import Settings
    from graphs.context import Services


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
