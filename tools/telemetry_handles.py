"""The handles the recording API (`tools/telemetry.py`) yields and keeps: a span's (`_SpanHandle`, `_NoSpan` when
tracing is off or the run was sampled out), a tool call's (`ToolCall`), a fan-out's tallies (`_FanOut`) and a run's
(`Run`). `tools.telemetry` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tools.telemetry_attributes import AttrValue, checked_attributes
from tools.telemetry_providers import RunRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class _NoSpan:
    """What a span handle is when tracing is off."""

    def set(self, **attributes: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class _SpanHandle(_NoSpan):
    def __init__(self, span: Span) -> None:
        self.span = span

    def set(self, **attributes: object) -> None:
        if self.span.is_recording():  # a run the sampler left out: nothing to check or keep
            self.span.set_attributes(checked_attributes(attributes))


class ToolCall:
    """The handle `tool_call` yields: say how the call ended."""

    def __init__(self, handle: _NoSpan) -> None:
        self.handle = handle
        self.outcome = "error"

    def done(self, outcome: str) -> None:
        self.outcome = outcome
        self.handle.set(**{"coviu.tool.outcome": outcome})


class _FanOut:
    """What the span of a fan-out (`tool_calls`) keeps of its calls: outcomes, statuses, latency and pacing, added
    up in the node's event loop, set on the span at its end; and how many events it listed (`FAN_OUT_EVENTS` at
    most) or only counted (`unlisted`)."""

    __slots__ = (
        "events",
        "outcomes",
        "paced",
        "paced_seconds",
        "seconds",
        "slowest",
        "span",
        "statuses",
        "tool",
        "unlisted",
    )

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.span: object = None  # the fan-out's span, once started (None: not recording)
        self.events = 0
        self.unlisted = 0
        self.outcomes: dict[str, int] = {}
        self.statuses: dict[AttrValue, int] = {}
        self.seconds = 0.0
        self.slowest = 0.0
        self.paced = 0
        self.paced_seconds = 0.0

    def attributes(self) -> dict[str, object]:
        outcomes = self.outcomes
        attributes: dict[str, object] = {
            "coviu.tool.calls": sum(outcomes.values()),
            # one outcome when all calls had it (as a single call's span says), else `mixed`: counts per outcome
            "coviu.tool.outcome": next(iter(outcomes)) if len(outcomes) == 1 else "mixed" if outcomes else None,
            "coviu.http.requests": sum(self.statuses.values()),
            "coviu.http.seconds.sum": round(self.seconds, 3),
            "coviu.http.seconds.max": round(self.slowest, 3),
            "coviu.wait.pacing.count": self.paced or None,
            "coviu.wait.pacing.seconds": round(self.paced_seconds, 3) if self.paced else None,
            "coviu.events.unlisted": self.unlisted or None,
        }
        attributes.update({f"coviu.tool.outcome.{outcome}": n for outcome, n in sorted(outcomes.items())})
        attributes.update({f"coviu.http.status.{status or 'none'}": n for status, n in self.statuses.items()})
        return attributes


# Events a fan-out's span lists (its failed requests, 429s, budgeted waits); the rest are counted. The SDK keeps 128
# a span (`OTEL_SPAN_EVENT_COUNT_LIMIT`) and drops the oldest beyond: a storm's first failures would go unseen.
FAN_OUT_EVENTS = 100


class Run:
    """The handle `run` yields: what the run was for, and how it ended."""

    def __init__(self, record: RunRecord, handle: _NoSpan) -> None:
        self.record = record
        self.handle = handle
        self.counts: dict[str, float] = {}
        self.flags: dict[str, int] = {}
        self.finished = False
        self.detached: _Detached | None = None  # a run `begin_run` started

    def finish(
        self,
        outcome: str,
        exit_code: int,
        *,
        clinic: str | None = None,
        team: str | None = None,
        sessions: int | None = None,
        flags: Mapping[str, int] | None = None,
        alerts: int | None = None,
    ) -> None:
        self.record.outcome, self.record.exit_code = outcome, exit_code
        self.finished = True
        if team:  # a clinic known only by its team (no account configured) takes the run's team
            if self.record.clinic in ("", self.record.team):
                self.record.clinic = team
            self.record.team = team
        if clinic:
            self.record.clinic = clinic
        if sessions is not None:
            self.counts["sessions"] = sessions
        if alerts is not None:
            self.counts["alerts"] = alerts
        self.flags = dict(flags or {})
        self.handle.set(
            **{
                "coviu.clinic": self.record.clinic,
                "coviu.team": self.record.team,
                "coviu.outcome": outcome,
                "coviu.exit_code": exit_code,
                "coviu.sessions": sessions,
                "coviu.alerts": alerts,
            }
        )


class _Detached:
    """What `begin_run` keeps of a run for `end_run`."""

    def __init__(self, started: float) -> None:
        self.started = started
