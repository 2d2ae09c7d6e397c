"""Temporal rules checked before writes, so a refusal comes with a clear next step.

Coviu refuses participants on finished sessions, cancelling started sessions and starts in the past;
we check first and tell the planner what to do instead, rather than letting it loop on 400s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any

from tools.catalog import ToolSpec
from tools.executor import ToolExecutor
from tools.timeparse import clinic_time, parse_time


def session_is_finished(session: Mapping[str, Any], now: datetime) -> tuple[bool, datetime | None]:
    """Finished when the call completed (`actual_end_time`) or its scheduled end has passed."""
    actual = parse_time(session.get("actual_end_time"))
    if actual is not None and actual <= now:
        return True, actual
    end = parse_time(session.get("end_time"))
    if end is not None and end <= now:
        return True, end
    return False, None


class TemporalGuard:
    """Checks a write against the session's phase before it is sent. Returns a refusal or None."""

    def __init__(self, executor: ToolExecutor, zone: tzinfo) -> None:
        self.executor = executor
        self.zone = zone

    async def _session(self, session_id: str, known: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
        if session_id in known:
            return known[session_id]
        getter = self.executor.catalog.find("sessions", "get")
        if getter is None:
            return None
        found = await self.executor.run(getter.name, {"id": session_id})
        return found if isinstance(found, Mapping) else None

    async def check(
        self,
        spec: ToolSpec,
        arguments: Mapping[str, Any],
        now: datetime,
        known_sessions: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> str | None:
        known = known_sessions or {}
        if spec.resource == "sessions" and spec.method in ("create", "update"):
            refusal = self._check_times(arguments, now)
            if refusal:
                return refusal
        if spec.resource == "sessions" and spec.method in ("update", "delete") and arguments.get("id"):
            session = await self._session(str(arguments["id"]), known)
            if session is None:
                return None
            if session.get("canceled_time"):
                return f"Session {arguments['id']} is already canceled; nothing to do."
            start = parse_time(session.get("start_time"))
            if spec.method == "delete" and start is not None and start <= now:
                return (
                    f"Refused: session {arguments['id']} started at {clinic_time(start, self.zone)}; Coviu does not "
                    "allow cancelling a session that has started. Let it end, or tell the clinician; "
                    "do not retry the cancel."
                )
            finished, ended = session_is_finished(session, now)
            if spec.method == "update" and finished and ended is not None:
                return (
                    f"Refused: session {arguments['id']} finished at {clinic_time(ended, self.zone)}; a finished "
                    "session cannot be changed. Create a new session instead."
                )
        if spec.resource == "participants" and spec.method == "create" and arguments.get("session_id"):
            session = await self._session(str(arguments["session_id"]), known)
            if session is None:
                return None
            if session.get("canceled_time"):
                return (
                    f"Refused: session {arguments['session_id']} is canceled; participants cannot be added. "
                    "Create a new session (create_a_coviu_session) and add them there."
                )
            finished, ended = session_is_finished(session, now)
            if finished and ended is not None:
                return (
                    f"Refused: session {arguments['session_id']} ended at {clinic_time(ended, self.zone)}; "
                    "participants cannot be added to a finished session. Create a new session "
                    "(create_a_coviu_session) starting in the future and add the participants to it."
                )
        return None

    def _check_times(self, arguments: Mapping[str, Any], now: datetime) -> str | None:
        start = parse_time(arguments.get("start_time"))
        end = parse_time(arguments.get("end_time"))
        if start is not None and start <= now:
            return (
                f"Refused: start_time {clinic_time(start, self.zone)} is not in the future (now is "
                f"{clinic_time(now, self.zone)}). Sessions must start in the future: use a start at least "
                "one minute from now."
            )
        if start is not None and end is not None and end <= start:
            return "Refused: end_time must be after start_time. Give the session a positive duration."
        return None
