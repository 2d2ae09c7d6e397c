"""`coviu-agent schedule …`: nightly audits as LangGraph Server crons (agent/schedules.py does the I/O).

The server (`langgraph dev`, `langgraph up`, or a deployment) runs the `audit` graph on the schedule, in the
clinic's time zone; each run audits yesterday. Exit codes: 0 done; 2 bad input (the server refused it, or
nothing was sent); 3 the server could not be reached or failed.
"""

from __future__ import annotations

import re

import typer

from agent.cli.common import (
    QUIET,
    VERBOSE,
    check_id,
    configure_cli_logging,
    emit_json,
    fail,
    load_settings,
    out,
    run_async,
)
from agent.errors import EXIT_BAD_INPUT, BadInput
from agent.schedules import DEFAULT_SERVER, CronRequest, ScheduledCron

schedule_app = typer.Typer(no_args_is_help=True, help="Nightly audits as LangGraph Server crons.")

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


def check_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week); the server checks the rest."""
    fields = expression.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise BadInput(f"--cron: expected five fields (minute hour day-of-month month day-of-week), got {expression!r}")
    return " ".join(fields)


def check_timezone(name: str) -> str:
    from tools.timeparse import known_zone

    if known_zone(name) is None:
        raise BadInput(f"--timezone: {name!r} is not an IANA time zone (e.g. Australia/Sydney)") from None
    return name


def check_server(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"--server: expected an http(s) URL, got {url!r}")
    return url.rstrip("/")


@schedule_app.command("audit")
def schedule_audit(
    cron: str = typer.Option(..., "--cron", help='Cron schedule, e.g. "0 6 * * *" (06:00 every day).'),
    server: str = typer.Option(DEFAULT_SERVER, "--server", help="The LangGraph server's URL."),
    timezone: str | None = typer.Option(
        None,
        "--timezone",
        help="The clinic's time zone: of the schedule and of the audited day (unset: the schedule's is the "
        "setting's; the audited day follows the server's or the assistant's setting).  [env var: COVIU_AGENT_TIMEZONE]",
    ),
    assistant: str = typer.Option("audit", "--assistant", help="Assistant id or graph id to run."),
    integrated_account_id: str | None = typer.Option(
        None, "--integrated-account-id", help="The clinic's Truto integrated account (default: the server's)."
    ),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default: the server's settings)."),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id (default: the server's settings)."
    ),
    keep_threads: bool = typer.Option(
        False, "--keep-threads", help="Keep each run's thread (its report stays readable through the API)."
    ),
    fleet: str | None = typer.Option(
        None,
        "--fleet",
        help="A TOML/JSON file of clinics (as for `audit --fleet`): one cron per clinic, in each clinic's zone.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Also replace this clinic's crons made another way (by hand, or an older version)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Create or update a clinic's nightly audit on a LangGraph server (the audit of yesterday, on a schedule).

    One cron per clinic (assistant, account, team, collection): running it again replaces that clinic's cron."""
    try:
        schedule = check_cron(cron)
        url = check_server(server)
        check_id("--integrated-account-id", integrated_account_id)
        check_id("--team-id", team_id)
        check_id("--collection-id", collection_id)
        check_id("--assistant", assistant)
        if fleet is not None and (integrated_account_id or team_id or collection_id):
            raise BadInput(
                "--fleet: the file names each clinic's ids; drop --integrated-account-id/--team-id/--collection-id"
            )
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    if fleet is not None:
        schedule_fleet(
            fleet,
            schedule=schedule,
            url=url,
            timezone=timezone,
            assistant=assistant,
            keep_threads=keep_threads,
            force=force,
            as_json=as_json,
            verbose=-1 if quiet else verbose,
        )
        return
    explicit_zone = timezone is not None
    try:
        zone = check_timezone(timezone if timezone is not None else _settings_zone(-1 if quiet else verbose, as_json))
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    given = (
        ("integrated_account_id", integrated_account_id),
        ("team_id", team_id),
        ("collection_id", collection_id),
        ("timezone", zone if explicit_zone else None),
    )
    request = CronRequest(assistant, {k: v for k, v in given if v}, schedule, zone, keep_threads)
    (made,) = _schedule(url, [request], force=force, as_json=as_json)
    result = made.as_dict()
    if as_json:
        emit_json(result)
        return
    replaced = made.replaced or []
    said = f" (replaced {', '.join(replaced)})" if replaced else ""
    out.print(
        f"cron {made.cron_id}: {assistant} for {made.clinic} at '{made.schedule}' "
        f"({made.timezone}) on {url}; next run {made.next_run_local}{said}",
        highlight=False,
    )


def _schedule(url: str, requests: list[CronRequest], *, force: bool, as_json: bool) -> list[ScheduledCron]:
    from agent.schedules import run_schedule_audit

    return run_async(lambda: run_schedule_audit(url, requests, force=force), as_json=as_json)


def schedule_fleet(
    path: str,
    *,
    schedule: str,
    url: str,
    timezone: str | None,
    assistant: str,
    keep_threads: bool,
    force: bool,
    as_json: bool,
    verbose: int,
) -> None:
    """One cron per clinic of a fleet file, each in its clinic's time zone (else --timezone, else the setting)."""
    from pathlib import Path

    from agent.fleet import load_fleet

    try:
        clinics = load_fleet(Path(path))
        default_zone = check_timezone(timezone if timezone is not None else _settings_zone(verbose, as_json))
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    requests = []
    for clinic in clinics:
        zone = clinic.timezone or default_zone
        given = (
            ("integrated_account_id", clinic.account),
            ("team_id", clinic.team_id),
            ("collection_id", clinic.collection_id),
            ("timezone", zone),
        )
        requests.append(CronRequest(assistant, {k: v for k, v in given if v}, schedule, zone, keep_threads))
    made = _schedule(url, requests, force=force, as_json=as_json)
    if as_json:
        emit_json({"crons": [m.as_dict() for m in made]})
        return
    for clinic, cron in zip(clinics, made, strict=True):
        said = f" (replaced {', '.join(cron.replaced)})" if cron.replaced else ""
        out.print(
            f"cron {cron.cron_id}: {clinic.name or clinic.account} at '{cron.schedule}' "
            f"({cron.timezone}); next run {cron.next_run_local}{said}",
            highlight=False,
        )


@schedule_app.command("list")
def schedule_list(
    server: str = typer.Option(DEFAULT_SERVER, "--server", help="The LangGraph server's URL."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """List the crons registered on a LangGraph server."""
    configure_cli_logging(-1 if quiet else verbose)
    try:
        url = check_server(server)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    from agent.schedules import run_schedule_list

    crons = [c.as_dict() for c in run_async(lambda: run_schedule_list(url), as_json=as_json)]
    if as_json:
        emit_json({"server": url, "count": len(crons), "crons": crons})
        return
    if not crons:
        out.print(f"no crons on {url}", highlight=False)
    for c in crons:
        out.print(
            f"{c['cron_id']}  {c['clinic']}  '{c['schedule']}' ({c['timezone']})  next {c['next_run_local']}  "
            f"assistant {c['assistant_id']}",
            highlight=False,
        )


@schedule_app.command("delete")
def schedule_delete(
    cron_id: str = typer.Argument(..., help="The cron's id (from `schedule list`)."),
    server: str = typer.Option(DEFAULT_SERVER, "--server", help="The LangGraph server's URL."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Delete a cron from a LangGraph server."""
    configure_cli_logging(-1 if quiet else verbose)
    try:
        url = check_server(server)
        check_id("CRON_ID", cron_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    from agent.schedules import run_schedule_delete

    run_async(lambda: run_schedule_delete(url, cron_id), as_json=as_json)
    if as_json:
        emit_json({"deleted": cron_id, "server": url})
    else:
        out.print(f"deleted cron {cron_id} on {url}", highlight=False)


def _settings_zone(verbose: int, as_json: bool) -> str:
    """COVIU_AGENT_TIMEZONE (printing a schedule needs no Truto account)."""
    return load_settings(verbose, as_json, needs_truto=False).timezone
