"""`coviu-agent audit`: the end-of-day audit (cron-safe; resumes after a crash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, emit_json, err, fail, load_settings, out, run_async, say
from agent.errors import EXIT_BAD_INPUT, EXIT_UPSTREAM, BadInput
from agent.runs import AuditArgs, audit_window, run_audit


def audit(
    day: str | None = typer.Option(None, "--date", help="Audit this day (YYYY-MM-DD, clinic time zone)."),
    since: str | None = typer.Option(None, "--since", help="Window start (ISO-8601)."),
    until: str | None = typer.Option(None, "--until", help="Window end, exclusive (ISO-8601)."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id.  [env var: COVIU_TEAM_ID]"),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id.  [env var: COVIU_INTAKE_COLLECTION_ID]"
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
        None,
        "--max-wait",
        min=1,
        metavar="SECONDS",
        help="Seconds this run may wait out rate limits in total (default 1800).  [env var: COVIU_AGENT_MAX_WAIT]",
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
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """The end-of-day audit of a day (default: yesterday): missing and pending forms, overruns, billable minutes.

    Cron-safe (no prompts); a rerun resumes after a crash."""
    settings = load_settings(-1 if quiet else verbose, as_json)
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
        settings.channels()  # a notification URL Apprise cannot use is named before any request
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
        settings.channels()
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
    import shlex

    rerun = f"coviu-agent audit --fleet {shlex.quote(fleet)}" if fleet is not None else None
    if rerun and shard is not None:
        rerun += f" --shard {shlex.quote(shard)}"
    runs = run_async(
        lambda: run_fleet(settings, clinics, dataclasses.replace(args, out_dir=Path(out_dir)), rerun=rerun),
        as_json=as_json,
    )
    from agent.fleet import fleet_summary

    source = "sandbox" if settings.uses_sandbox else "truto"
    summary = fleet_summary(runs, source)
    paths = write_fleet_summary(runs, Path(out_dir), source, suffix=suffix)
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
    """`--out` must name a directory that exists or can be made, and can be written: checked before any request."""
    from agent.local_inputs import check_output_dir

    check_output_dir("--out", out_dir)
