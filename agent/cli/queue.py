"""`coviu-agent queue watch`: poll a waiting queue and alert once per call over the threshold."""

from __future__ import annotations

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, emit_json, fail, load_settings, out, run_async
from agent.errors import EXIT_BAD_INPUT, EXIT_UPSTREAM, BadInput
from agent.redact import styled
from agent.runs import QueueCheck, QueueWatchArgs, run_queue_watch

queue_app = typer.Typer(no_args_is_help=True, help="The waiting queue.")


@queue_app.command("watch")
def queue_watch(
    interval: float = typer.Option(30, "--interval", help="Seconds between checks."),
    threshold_minutes: float = typer.Option(15, "--threshold-minutes", help="Alert above this wait."),
    escalate_minutes: float | None = typer.Option(
        None, "--escalate-minutes", help="Escalate above this wait (default twice --threshold-minutes; channels only)."
    ),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id.  [env var: COVIU_TEAM_ID]"),
    queue_id: str | None = typer.Option(
        None, "--queue-id", help="Waiting queue id.  [env var: COVIU_WAITING_QUEUE_ID]"
    ),
    once: bool = typer.Option(False, "--once", help="Check once and exit."),
    max_checks: int = typer.Option(0, "--max-checks", help="Stop after this many checks (0: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per check."),
    max_wait: float | None = typer.Option(
        None,
        "--max-wait",
        min=1,
        metavar="SECONDS",
        help="Seconds each check may wait out rate limits (default: the interval).  [env var: COVIU_AGENT_MAX_WAIT]",
    ),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Poll a waiting queue; alert once for each call that crosses the threshold."""
    try:
        if not 1 <= interval <= 3600:
            raise BadInput(f"--interval: expected 1 to 3600 seconds, got {interval}")
        if not 0 <= threshold_minutes <= 1440:
            raise BadInput(f"--threshold-minutes: expected 0 to 1440, got {threshold_minutes}")
        if escalate_minutes is not None and not threshold_minutes <= escalate_minutes <= 2880:
            raise BadInput(
                f"--escalate-minutes: expected --threshold-minutes ({threshold_minutes:g}) to 2880, "
                f"got {escalate_minutes:g}"
            )
        check_id("--team-id", team_id)
        check_id("--queue-id", queue_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(-1 if quiet else verbose, as_json)
    settings.use_max_wait(max_wait, interval)
    try:
        settings.channels()  # a notification URL Apprise cannot use is named before any request
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    args = QueueWatchArgs(
        interval,
        threshold_minutes,
        team_id,
        queue_id,
        max_checks=1 if once else max_checks,
        escalate_minutes=escalate_minutes,
    )

    def show(check: QueueCheck) -> None:
        if as_json:
            emit_json(check.as_dict())
            return
        out.print(
            f"{check.at:%H:%M:%S} {check.summary['waiting']} waiting, longest "
            f"{check.summary['longest_wait_minutes']:.0f} min",
            highlight=False,
        )
        for line in check.alerts:
            out.print(styled("ALERT", "bold yellow", line), highlight=False)

    try:
        run_async(lambda: run_queue_watch(settings, args, show), as_json=as_json)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@queue_app.command("status")
def queue_status_cmd(
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id.  [env var: COVIU_TEAM_ID]"),
    queue_id: str | None = typer.Option(
        None, "--queue-id", help="Waiting queue id.  [env var: COVIU_WAITING_QUEUE_ID]"
    ),
    stale_after: float = typer.Option(
        0,
        "--stale-after",
        min=0,
        metavar="SECONDS",
        help="Exit 3 when the last successful check is older than this many seconds.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """When a watcher last checked the queue (any watcher on this state store), and the outbox's counts."""
    from datetime import UTC, datetime

    from agent.runs import queue_status
    from agent.services import clinic_ids
    from tools.timeparse import parse_time

    try:
        check_id("--team-id", team_id)
        check_id("--queue-id", queue_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(-1 if quiet else verbose, as_json, needs_truto=False)  # reads the state store only
    team, queue, _ = clinic_ids(settings)
    team, queue = team_id or team, queue_id or queue
    if not team or not queue:
        fail(EXIT_BAD_INPUT, "set COVIU_TEAM_ID and COVIU_WAITING_QUEUE_ID (or pass --team-id/--queue-id)")
    status = run_async(lambda: queue_status(settings, team, queue), as_json=as_json)
    last = status["last_ok"]
    at = parse_time(last["at"]) if last else None
    age = (datetime.now(UTC) - at).total_seconds() if at is not None else None
    status["age_seconds"] = round(age, 1) if age is not None else None
    stale = bool(stale_after) and (age is None or age > stale_after)
    if as_json:
        emit_json(status)
    elif last is None:
        out.print(f"queue {queue}: no successful check recorded", highlight=False, markup=False)
    else:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(status["outbox"].items())) or "empty"
        out.print(
            f"queue {queue}: last successful check {last['at']} ({age:.0f} s ago), {last['waiting']} waiting; "
            f"outbox: {counts}",
            highlight=False,
            markup=False,
        )
    if stale:
        raise typer.Exit(EXIT_UPSTREAM)
