"""The CLI tells an incomplete audit from a complete one (exit 5, the report says what it could not check), and never
resumes a thread with other flags than it was started with.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.runs import audit_thread
from sandbox import create_sandbox
from tests.e2e import cli_env, run_cli, serve

pytestmark = pytest.mark.e2e

ASGI = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class SummaryRefusal:
    """The sandbox, with every summary of the sessions named in `refused` answered 404 (or HTML when `html`)."""

    def __init__(self, app: ASGI, refused: set[str] | None = None, html: bool = False) -> None:
        self.app = app
        self.refused = refused
        self.html = html

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        query = scope.get("query_string", b"").decode()
        if path.startswith("/proxy/session_summaries") and (
            self.refused is None or any(s in path or s in query for s in self.refused)
        ):
            if self.html:
                body, kind = b"<html>sign in</html>", b"text/html"
            else:
                body, kind = (
                    json.dumps({"error": "Not Found", "message": "no such summary"}).encode(),
                    b"application/json",
                )
            status = 200 if self.html else 404
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def test_an_audit_that_could_not_check_a_session_writes_the_report_and_exits_5(tmp_path: Path) -> None:
    sandbox = create_sandbox()
    healthy_dir = tmp_path / "healthy"
    with serve(sandbox) as served:
        healthy = run_cli(["audit", "--out", str(healthy_dir), "--json"], cli_env(tmp_path, served.url), tmp_path)
    assert healthy.returncode == 0, healthy.stderr
    report = json.loads(healthy.stdout)
    victim = next(r["session_id"] for r in report["sessions"] if r["billable_minutes"])
    with serve(SummaryRefusal(sandbox, {victim})) as served:  # type: ignore[arg-type]
        result = run_cli(
            ["audit", "--out", str(tmp_path / "r"), "--json"], cli_env(tmp_path / "x", served.url), tmp_path
        )
    assert result.returncode == 5, result.stderr
    incomplete = json.loads(result.stdout)
    assert incomplete["complete"] is False and incomplete["totals"]["summary_unavailable"] == 1
    row = next(r for r in incomplete["sessions"] if r["session_id"] == victim)
    assert row["flags"][-1] == "summary_unavailable" and "404" in row["problem"]
    assert sorted(p.suffix for p in (tmp_path / "r").iterdir()) == [".html", ".json", ".md"]
    assert "could not be checked" in (next((tmp_path / "r").glob("*.md")).read_text()).lower()


def test_a_resume_with_other_flags_is_refused(tmp_path: Path) -> None:
    sandbox = create_sandbox()
    env = cli_env(tmp_path, "")
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()  # the served sandbox's demo day
    with serve(SummaryRefusal(sandbox, None, html=True)) as served:  # type: ignore[arg-type]
        env["TRUTO_BASE_URL"] = served.url
        first = run_cli(["audit", "--date", day, "--out", str(tmp_path / "r")], env, tmp_path)
    assert first.returncode == 3, first.stderr
    assert not (tmp_path / "r").exists()
    thread = audit_thread(
        {
            "team_id": env["COVIU_TEAM_ID"],
            "collection_id": env["COVIU_INTAKE_COLLECTION_ID"],
            "since": f"{day}T00:00:00+00:00",
            "until": f"{(date.fromisoformat(day) + timedelta(days=1)).isoformat()}T00:00:00+00:00",
            "overrun_threshold_minutes": 10.0,
        }
    )
    with serve(sandbox) as served:
        env["TRUTO_BASE_URL"] = served.url
        other = run_cli(
            ["audit", "--date", day, "--thread-id", thread, "--overrun-threshold-minutes", "0"], env, tmp_path
        )
        assert other.returncode == 2, other.stderr
        assert "overrun_threshold_minutes" in other.stderr
        same = run_cli(["audit", "--date", day, "--out", str(tmp_path / "r")], env, tmp_path)
    assert same.returncode == 0, same.stderr
    assert "resuming audit thread" in same.stderr


def test_out_naming_a_file_is_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    result = run_cli(["audit", "--out", str(target)], cli_env(tmp_path, "http://127.0.0.1:9"), tmp_path)
    assert result.returncode == 2 and "--out" in result.stderr
