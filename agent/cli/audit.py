"""`coviu-agent audit`: scenario 2, the end-of-day audit (cron-safe; resumes after a crash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from agent.cli.common import check_id, emit_json, err, fail, load_settings, out, run_async, say
from agent.errors import EXIT_BAD_INPUT, EXIT_UPSTREAM, BadInput
from agent.runs import AuditArgs, audit_window, run_audit


def audit(
    day: str | None = typer.Option(None, "--date", help="Audit this day (YYYY-MM-DD, clinic time zone)."),
    since: str | None = typer.Option(None, "--since", help="Window start (ISO-8601)."),
    until: str | None = typer.Option(None, "--until", help="Window end, exclusive (ISO-8601)."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default COVIU_TEAM_ID)."),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id (default COVIU_INTAKE_COLLECTION_ID)."
    ),
    overrun_threshold_minutes: float = typer.Option(
        10, "--overrun-threshold-minutes", help="Flag sessions that end more than this many minutes late."
    ),
    out_dir: str = typer.Option("reports", "--out", help="Directory for the report files."),
    thread_id: str | None = typer.Option(None, "--thread-id", help="Checkpoint thread (default from the window)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report."),
    refresh: bool = typer.Option(
        False, "--refresh", help="Fetch every summary again, ignoring (and rewriting) the summary cache."
    ),
    max_wait: float | None = typer.Option(
        None, "--max-wait", min=1, help="Seconds this run may wait out rate limits in total (default 1800)."
    ),
    accounts: str | None = typer.Option(
        None, "--accounts", help="Audit these integrated accounts (a,b,c) at once: one report each + a fleet summary."
    ),
    fleet: str | None = typer.Option(
        None, "--fleet", help="Audit the clinics a TOML/JSON file names (account, team_id, collection_id, timezone)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="With --accounts/--fleet: audit only worker I of N's clinics (I/N; a stable hash)."
    ),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="-v: debug logs; -vv: libraries too."),
) -> None:
    """Scenario 2: the end-of-day audit (default: yesterday). Cron-safe; resumes after a crash."""
    settings = load_settings(verbose, as_json)
    from agent.settings import LONG_RUN_MAX_WAIT

    settings.use_max_wait(max_wait, LONG_RUN_MAX_WAIT)
    if accounts is not None or fleet is not None:
        fleet_args = AuditArgs(
            day=day, since=since, until=until, overrun_threshold_minutes=overrun_threshold_minutes, refresh=refresh
        )
        audit_fleet(
            settings,
            fleet_args,
            accounts,
            fleet,
            out_dir,
            as_json=as_json,
            other=(team_id, collection_id, thread_id),
            shard=shard,
        )
        return
    if shard is not None:
        fail(EXIT_BAD_INPUT, "--shard splits a fleet: give it with --accounts or --fleet", as_json=as_json)
    args = AuditArgs(
        day=day,
        since=since,
        until=until,
        team_id=team_id,
        collection_id=collection_id,
        overrun_threshold_minutes=overrun_threshold_minutes,
        out_dir=Path(out_dir),
        thread_id=thread_id,
        refresh=refresh,
    )
    try:
        if not 0 <= overrun_threshold_minutes <= 1440:
            raise BadInput(f"--overrun-threshold-minutes: expected 0 to 1440, got {overrun_threshold_minutes}")
        check_id("--team-id", team_id)
        check_id("--collection-id", collection_id)
        check_id("--thread-id", thread_id)
        check_report_dir(out_dir)
        from tools.clock import SystemClock

        audit_window(settings, args, SystemClock().now())  # a bad window is named before any request
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    from agent.cli.progress import AuditProgress

    # a bar with ETA at a terminal (log lines above it); under cron, INFO lines every 10% or 30 s
    progress = AuditProgress(err)
    with progress:
        result = run_async(lambda: run_audit(settings, args, on_progress=progress, on_event=say), as_json=as_json)
    report, paths = result.report, result.paths
    if report is None or not paths:
        fail(EXIT_UPSTREAM, "the audit did not produce a report", as_json=as_json)
    if as_json:
        # the report as written, plus this run's figures (not in the file: they describe the run, not the day)
        emit_json({**report, "figures": result.figures})
        if result.exit_code:
            raise typer.Exit(result.exit_code)
        return
    from reporting.audit_report import summary_line

    out.print(summary_line(report), highlight=False)
    for kind in ("md", "json", "html"):
        if kind in paths:
            out.print(f"report ({kind}): {paths[kind]}", highlight=False)
    if not result.complete:
        err.print(
            f"audit incomplete: {report['totals'].get('summary_unavailable', 0)} sessions could not be checked "
            "(see 'Could not be checked' in the report); exit 5",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(result.exit_code)


def audit_fleet(
    settings: Any,
    args: Any,
    accounts: str | None,
    fleet: str | None,
    out_dir: str,
    *,
    as_json: bool,
    other: tuple[str | None, ...],
    shard: str | None = None,
) -> None:
    """`--accounts`/`--fleet`: every clinic's audit at once, one report each plus the fleet summary; the exit code
    is the worst clinic's. `--shard I/N`: only the clinics worker I of N audits (`agent.fleet.shard_of`), its
    summary named for its shard."""
    import dataclasses

    from agent.fleet import load_fleet, parse_accounts, parse_shard, run_fleet, select_shard, write_fleet_summary

    try:
        if accounts is not None and fleet is not None:
            raise BadInput("give either --accounts or --fleet, not both")
        if any(other):
            raise BadInput("--team-id, --collection-id and --thread-id are per clinic: name them in a --fleet file")
        if not 0 <= args.overrun_threshold_minutes <= 1440:
            raise BadInput(f"--overrun-threshold-minutes: expected 0 to 1440, got {args.overrun_threshold_minutes}")
        check_report_dir(out_dir)
        clinics = parse_accounts(accounts) if accounts is not None else load_fleet(Path(fleet or ""))
        index, count = parse_shard(shard) if shard is not None else (0, 1)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    suffix = ""
    if shard is not None:
        clinics = select_shard(clinics, index, count)
        suffix = f"-shard-{index + 1}-of-{count}"
        if not clinics:  # a small fleet over many workers: this one has nothing to do
            if as_json:
                emit_json({"schema_version": 1, "clinics": [], "totals": {"clinics": 0, "failed": 0}, "exit_code": 0})
            else:
                out.print(f"shard {index + 1} of {count}: none of the fleet's clinics", highlight=False, markup=False)
            return
    runs = run_async(
        lambda: run_fleet(settings, clinics, dataclasses.replace(args, out_dir=Path(out_dir))), as_json=as_json
    )
    from agent.fleet import fleet_summary

    summary = fleet_summary(runs)
    paths = write_fleet_summary(runs, Path(out_dir), suffix=suffix)
    if as_json:
        emit_json({**summary, "summary_files": {k: str(v) for k, v in paths.items()}})
    else:
        for clinic in summary["clinics"]:
            state = (
                "done" if clinic["exit_code"] == 0 else f"exit {clinic['exit_code']}: {clinic['error'] or 'incomplete'}"
            )
            totals = clinic["totals"] or {}
            out.print(
                f"{clinic['account']}: {totals.get('sessions', 0)} sessions, {state}", highlight=False, markup=False
            )
        out.print(f"fleet summary: {paths['md']}", highlight=False, markup=False)
    if summary["exit_code"]:
        raise typer.Exit(summary["exit_code"])


def check_report_dir(out_dir: str) -> None:
    """`--out` must name a directory (existing or to be made), checked before any request is sent."""
    if not out_dir.strip():
        raise BadInput("--out: expected a directory for the report files, got an empty value")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out: expected a directory, but {out_dir!r} is a file")
