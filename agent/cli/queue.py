"""`coviu-agent queue watch`: poll a waiting queue and alert once per call over the threshold."""

from __future__ import annotations

import asyncio

import typer

from agent.cli.common import EXIT_BAD_INPUT, check_id, emit_json, fail, load_settings, open_services, out, run_async
from agent.errors import BadInput
from agent.redact import styled

queue_app = typer.Typer(no_args_is_help=True, help="The waiting queue.")


@queue_app.command("watch")
def queue_watch(
    interval: float = typer.Option(30, "--interval", help="Seconds between checks."),
    threshold_minutes: float = typer.Option(15, "--threshold-minutes", help="Alert above this wait."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default COVIU_TEAM_ID)."),
    queue_id: str | None = typer.Option(None, "--queue-id", help="Waiting queue id (default COVIU_WAITING_QUEUE_ID)."),
    once: bool = typer.Option(False, "--once", help="Check once and exit."),
    max_checks: int = typer.Option(0, "--max-checks", help="Stop after this many checks (0: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per check."),
    max_wait: float | None = typer.Option(
        None, "--max-wait", min=1, help="Seconds each check may wait out rate limits (default: the interval)."
    ),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="-v: debug logs; -vv: libraries too."),
) -> None:
    """Poll a waiting queue; alert once for each call that crosses the threshold."""
    try:
        if not 1 <= interval <= 3600:
            raise BadInput(f"--interval: expected 1 to 3600 seconds, got {interval}")
        if not 0 <= threshold_minutes <= 1440:
            raise BadInput(f"--threshold-minutes: expected 0 to 1440, got {threshold_minutes}")
        check_id("--team-id", team_id)
        check_id("--queue-id", queue_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(verbose, as_json)
    settings.use_max_wait(max_wait, interval)

    async def body() -> None:
        from graphs.queue import alert_lines, summarize_queue
        from tools.retry import call_with_retries

        services = await open_services(settings)
        team = team_id or services.team_id
        queue = queue_id or services.waiting_queue_id
        if not team or not queue:
            raise BadInput("set COVIU_TEAM_ID and COVIU_WAITING_QUEUE_ID (or pass --team-id/--queue-id)")
        executor = services.toolbox.executor
        alerted: set[str] = set()
        checks = 0
        try:
            while True:
                services.toolbox.budget.restart()  # each check may wait out rate limits for its own budget
                calls = await call_with_retries(
                    "listing the waiting queue",
                    lambda: executor.all_items(
                        "list_all_coviu_waiting_queue_calls", {"team_id": team, "waiting_queue_id": queue}
                    ),
                    clock=services.clock,
                    governor=services.toolbox.governor,
                )
                summary = summarize_queue(calls, services.clock.now(), threshold_minutes)
                fresh = [c for c in summary["over_threshold"] if c["call_id"] not in alerted]
                unknown = [c for c in summary["unknown_wait"] if f"unknown:{c}" not in alerted]
                alerted.update(c["call_id"] for c in fresh)
                alerted.update(f"unknown:{c}" for c in unknown)
                news = {**summary, "over_threshold": fresh, "unknown_wait": unknown}
                new_alerts = alert_lines(news, threshold_minutes)  # type: ignore[arg-type]
                if as_json:
                    emit_json({"team_id": team, "queue_id": queue, "queue": summary, "alerts": new_alerts})
                else:
                    out.print(
                        f"{services.clock.now():%H:%M:%S} {summary['waiting']} waiting, longest "
                        f"{summary['longest_wait_minutes']:.0f} min",
                        highlight=False,
                    )
                    for line in new_alerts:
                        out.print(styled("ALERT", "bold yellow", line), highlight=False)
                checks += 1
                if once or (max_checks and checks >= max_checks):
                    return
                await asyncio.sleep(interval)
        finally:
            await services.toolbox.aclose()

    try:
        run_async(body, as_json=as_json)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
