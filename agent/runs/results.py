"""The typed results of the runs whose facts the run log and the metrics record (`run_facts`): a triage's,
an audit's and the recordings worker's, each with its exit code and its `--json` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_OK, EXIT_UPSTREAM

if TYPE_CHECKING:  # the recordings worker is imported where it runs, not to list the commands
    from workers.recordings import RecordingsReport


@dataclass
class TriageResult:
    """A finished (or stopped) triage: the graph's output and the thread it ran on."""

    thread_id: str
    resumed: bool
    state: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)  # e.g. rate_limit_waits

    @property
    def failure(self) -> str | None:
        failure = self.state.get("failure")
        return str(failure) if failure else None

    @property
    def exit_code(self) -> int:
        """0 done; 2 when the failure was our input (an invalid id, nothing sent; or an id the account does not
        know, a 404); else 3."""
        if not self.failure:
            return EXIT_OK
        if self.state.get("last_error_input") or self.state.get("last_error_status") == 404:
            return EXIT_BAD_INPUT
        return EXIT_UPSTREAM

    def as_dict(self) -> dict[str, Any]:
        """The result object of `triage --json` (README)."""
        result: dict[str, Any] = {
            "team_id": self.state.get("team_id"),
            "queue_id": self.state.get("waiting_queue_id"),
            "queue": self.state.get("queue"),
            "alerts": self.state.get("alerts", []),
            "session": self.state.get("session"),
            "participants": self.state.get("participants", []),
            "reply": self.state.get("reply", ""),
            # llm, rules, or "llm then rules" (the rules finished what the model skipped); the note says why
            "planner": self.state.get("planner"),
        }
        if self.state.get("planner_note"):
            result["planner_note"] = self.state.get("planner_note")
        if self.state.get("planned_calls") is not None:  # a dry run (its input flags are reset when it ends)
            result["dry_run"] = True
            result["planned_calls"] = self.state.get("planned_calls") or []
        result["figures"] = self.figures
        return result


@dataclass
class AuditResult:
    """A finished audit: the report, the files written, and the thread it ran on (deleted once written)."""

    thread_id: str
    resumed: bool
    state: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)  # this run's, not the day's: e.g. rate_limit_waits

    @property
    def report(self) -> dict[str, Any] | None:
        report = self.state.get("report")
        return report if isinstance(report, dict) and report else None

    @property
    def paths(self) -> dict[str, str]:
        return dict(self.state.get("report_paths") or {})

    @property
    def produced(self) -> bool:
        return self.report is not None and bool(self.paths)

    @property
    def complete(self) -> bool:
        return self.report is not None and bool(self.report.get("complete", True))

    @property
    def exit_code(self) -> int:
        """0 done; 3 no report; 5 the report is written but incomplete."""
        if not self.produced:
            return EXIT_UPSTREAM
        return EXIT_OK if self.complete else EXIT_INCOMPLETE


@dataclass
class RecordingsRun:
    """A finished worker run and what it covered."""

    report: RecordingsReport
    download_dir: Path | None
    since: datetime | None
    until: datetime | None
    session_id: str | None
    team_id: str
    collection_id: str

    @property
    def exit_code(self) -> int:
        """0 done; 3 when a file or transcript failed (the rest is kept)."""
        return EXIT_UPSTREAM if self.report.errors else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        """The result object of `recordings --json`."""
        from collections import Counter

        files = [r.as_dict(self.download_dir) for r in self.report.results]
        return {
            "team_id": self.team_id,
            "collection_id": self.collection_id,
            "window": (
                {"since": self.since.isoformat(), "until": self.until.isoformat()}
                if self.since and self.until
                else None
            ),
            "session_id": self.session_id,
            "download_dir": str(self.download_dir) if self.download_dir else None,
            "manifest": str(self.report.manifest_path) if self.report.manifest_path else None,
            "transcription": self.report.transcription,
            "totals": dict(Counter(r.status for r in self.report.results)),
            "files": files,
            "errors": list(self.report.errors),
        }
