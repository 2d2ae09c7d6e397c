"""`coviu-agent recordings`: the background worker that streams recordings to disk, never into a model.

Finds the intake collection's submissions (a clinic-local day, or one session), downloads, resumes, transcribes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, emit_json, err, fail, load_settings, out, run_async, say
from agent.errors import EXIT_BAD_INPUT, BadInput
from agent.redact import styled
from agent.runs import RecordingsRun, run_recordings


def print_run(run: RecordingsRun, *, as_json: bool) -> None:
    """The run's result on stdout; exit 3 when a file or transcript failed (the rest is kept)."""
    payload = run.as_dict()
    if as_json:
        emit_json(payload)
    else:
        for row in payload["files"]:
            where = row.get("path") or f"{row.get('content_type') or ''} {row.get('size') or ''}".strip()
            if row["status"] == "missing":
                where = "no recording"
            elif row["status"] == "failed":
                where = f"failed: {row.get('error')}"
            out.print(f"{row['status']:<10} {row['kind']:<5} {row['submission_id']} {where}", highlight=False)
        totals = ", ".join(f"{n} {status}" for status, n in sorted(payload["totals"].items())) or "nothing found"
        out.print(f"{totals}" + (f"; manifest: {payload['manifest']}" if payload["manifest"] else ""), highlight=False)
    if run.report.errors:
        for message in run.report.errors:
            err.print(styled("error:", "bold red", message), highlight=False)
        raise typer.Exit(run.exit_code)


def recordings(
    day: str | None = typer.Option(None, "--date", help="Submissions of this day (YYYY-MM-DD, clinic time zone)."),
    session_id: str | None = typer.Option(None, "--session-id", help="Only the submissions naming this session."),
    download: str | None = typer.Option(
        None, "--download", help="Stream the files into this directory (without it: list them only)."
    ),
    transcribe: bool = typer.Option(False, "--transcribe", help="Transcribe downloaded audio (needs OPENAI_API_KEY)."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id.  [env var: COVIU_TEAM_ID]"),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id.  [env var: COVIU_INTAKE_COLLECTION_ID]"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    max_wait: float | None = typer.Option(
        None,
        "--max-wait",
        min=1,
        metavar="SECONDS",
        help="Seconds this run may wait out rate limits in total (default 1800).  [env var: COVIU_AGENT_MAX_WAIT]",
    ),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Download recordings and submission files to disk (default: yesterday's), resuming partial files."""
    settings = load_settings(-1 if quiet else verbose, as_json)
    from agent.settings import LONG_RUN_MAX_WAIT

    settings.use_max_wait(max_wait, LONG_RUN_MAX_WAIT)
    try:
        from graphs.audit_window import WindowError, resolve_window
        from tools.clock import SystemClock

        if day and session_id:
            raise BadInput("give either --date or --session-id, not both")
        if transcribe and not download:
            raise BadInput("--transcribe needs --download DIR (audio is transcribed from the downloaded file)")
        check_id("--session-id", session_id)
        check_id("--team-id", team_id)
        check_id("--collection-id", collection_id)
        since: datetime | None = None
        until: datetime | None = None
        if not session_id:
            try:
                since, until, _ = resolve_window(settings.zone, SystemClock().now(), day=day)
            except WindowError as exc:
                raise BadInput(str(exc)) from None
        target = Path(download).expanduser() if download else None
        if target is not None and target.exists() and not target.is_dir():
            raise BadInput(f"--download: {target} exists and is not a directory")
        if target is not None:  # a directory that exists or can be made, and can be written
            from agent.local_inputs import writable_dir

            writable_dir("--download", target)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    run = run_async(
        lambda: run_recordings(
            settings,
            since=since,
            until=until,
            session_id=session_id,
            download_dir=target,
            transcribe=transcribe,
            team_id=team_id,
            collection_id=collection_id,
            on_event=say,  # notes for a person; each file is listed once, below (its progress: INFO log lines)
        ),
        as_json=as_json,
    )
    print_run(run, as_json=as_json)
