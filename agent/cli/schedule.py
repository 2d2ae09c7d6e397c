"""`coviu-agent schedule …`: nightly audits as LangGraph Server crons, registered through `langgraph_sdk`.

The server (`langgraph dev`, `langgraph up`, or a deployment) runs the `audit` graph on the schedule, in the
clinic's time zone; each run audits yesterday. Exit codes: 0 done; 2 bad input (the server refused it, or
nothing was sent); 3 the server could not be reached or failed.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, configure_cli_logging, emit_json, fail, load_settings, out
from agent.errors import EXIT_BAD_INPUT, EXIT_UPSTREAM, BadInput

schedule_app = typer.Typer(no_args_is_help=True, help="Nightly audits as LangGraph Server crons.")

DEFAULT_SERVER = "http://127.0.0.1:2024"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")
_REFUSED = {400, 404, 409, 422}  # the server understood and said no: bad input, not an outage


class ServerError(Exception):
    """The LangGraph server could not be reached, or answered with an error."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def check_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week); the server checks the rest."""
    fields = expression.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise BadInput(f"--cron: expected five fields (minute hour day-of-month month day-of-week), got {expression!r}")
    return " ".join(fields)


def check_timezone(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(f"--timezone: {name!r} is not an IANA time zone (e.g. Australia/Sydney)") from None
    return name


def check_server(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"--server: expected an http(s) URL, got {url!r}")
    return url.rstrip("/")


async def _call(server: str, action: str, body: Any) -> Any:
    """Run `body(client)` against the server; connection and HTTP errors become `ServerError`."""
    import httpx
    from langgraph_sdk import get_client
    from langgraph_sdk.errors import APIStatusError

    # One quick health check first: the SDK retries refused connections for several seconds.
    try:
        async with httpx.AsyncClient(timeout=5.0) as probe:
            await probe.get(f"{server}/ok")
    except httpx.TransportError as exc:
        raise ServerError(f"cannot reach the LangGraph server at {server} ({type(exc).__name__}: {exc})", 3) from None
    client = get_client(url=server, timeout=30.0)
    try:
        return await body(client)
    except APIStatusError as exc:
        detail = str(exc).strip() or exc.__class__.__name__
        code = EXIT_BAD_INPUT if exc.status_code in _REFUSED else EXIT_UPSTREAM
        hint = " (set LANGSMITH_API_KEY for a deployed server)" if exc.status_code in (401, 403) else ""
        message = f"the LangGraph server refused to {action}: HTTP {exc.status_code}: {detail}{hint}"
        raise ServerError(message, code) from None
    except httpx.TransportError as exc:
        raise ServerError(f"lost the LangGraph server at {server} ({type(exc).__name__}: {exc})", 3) from None
    finally:
        await client.aclose()


def _run(server: str, action: str, body: Any, as_json: bool) -> Any:
    try:
        return asyncio.run(_call(server, action, body))
    except ServerError as exc:
        fail(exc.code, str(exc), as_json=as_json)


MARK = "coviu_agent_clinic"  # the cron's metadata key: which clinic `schedule audit` made it for


def clinic_key(assistant: str, context: dict[str, Any]) -> str:
    """One clinic's nightly audit: the assistant and the clinic's ids (unset: the server's own settings)."""
    ids = [str(context.get(k) or "") for k in ("integrated_account_id", "team_id", "collection_id")]
    return "|".join([assistant, *ids])


def clinic_label(context: dict[str, Any]) -> str:
    """The clinic a cron audits, for a person: its account and team, or the server's own settings."""
    parts = [f"{k} {context[k]}" for k in ("integrated_account_id", "team_id", "collection_id") if context.get(k)]
    return ", ".join(parts) if parts else "the server's clinic (its settings)"


def next_run_local(next_run: Any, zone: str) -> str | None:
    """The next run in the clinic's time zone (the server gives UTC), e.g. `2026-12-08 06:00 AEDT`."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    if not next_run:
        return None
    try:
        moment = next_run if isinstance(next_run, datetime) else datetime.fromisoformat(str(next_run))
        local = moment.astimezone(ZoneInfo(zone))
    except (ValueError, KeyError):
        return str(next_run)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or zone}"


def _summary(cron: dict[str, Any], server: str) -> dict[str, Any]:
    payload = cron.get("payload") or {}
    context = payload.get("context") or {}
    zone = cron.get("timezone") or payload.get("timezone") or "UTC"
    return {
        "cron_id": cron.get("cron_id"),
        "assistant_id": cron.get("assistant_id"),
        "clinic": clinic_label(context),
        "schedule": cron.get("schedule"),
        "timezone": zone,
        "next_run_date": cron.get("next_run_date"),
        "next_run_local": next_run_local(cron.get("next_run_date"), zone),
        "context": context,
        "on_run_completed": cron.get("on_run_completed"),
        "server": server,
    }


async def create_or_replace(
    client: Any, assistant: str, context: dict[str, Any], *, force: bool, **cron: Any
) -> tuple[Any, list[str]]:
    """Create this clinic's cron, then delete the crons it replaces: those `schedule audit` made for the same clinic
    (its metadata says which), and with `force` also unmarked crons of the same clinic (made by hand or by an older
    version). Created first, so a failure never leaves the clinic without its nightly audit."""
    key = clinic_key(assistant, context)
    existing = [dict(c) for c in await client.crons.search(limit=1000)]

    def same_clinic(c: dict[str, Any]) -> bool:
        mark = (c.get("metadata") or {}).get(MARK)
        if mark is not None:
            return bool(mark == key)
        return force and clinic_key(assistant, (c.get("payload") or {}).get("context") or {}) == key

    replaced = [str(c["cron_id"]) for c in existing if same_clinic(c)]
    created = await client.crons.create(assistant, metadata={MARK: key}, context=context or None, **cron)
    for cron_id in replaced:
        await client.crons.delete(cron_id)
    return created, replaced


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
    context = {k: v for k, v in given if v}

    async def create(client: Any) -> Any:
        return await create_or_replace(
            client,
            assistant,
            context,
            force=force,
            schedule=schedule,
            input={},
            timezone=zone,
            on_run_completed="keep" if keep_threads else "delete",
        )

    created, replaced = _run(url, "create the cron", create, as_json)
    result = {**_summary(dict(created), url), "replaced": replaced}
    if as_json:
        emit_json(result)
        return
    said = f" (replaced {', '.join(replaced)})" if replaced else ""
    out.print(
        f"cron {result['cron_id']}: {assistant} for {result['clinic']} at '{result['schedule']}' "
        f"({result['timezone']}) on {url}; next run {result['next_run_local']}{said}",
        highlight=False,
    )


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

    async def create_all(client: Any) -> Any:
        created = []
        for clinic in clinics:
            zone = clinic.timezone or default_zone
            given = (
                ("integrated_account_id", clinic.account),
                ("team_id", clinic.team_id),
                ("collection_id", clinic.collection_id),
                ("timezone", zone),
            )
            created.append(
                await create_or_replace(
                    client,
                    assistant,
                    {k: v for k, v in given if v},
                    force=force,
                    schedule=schedule,
                    input={},
                    timezone=zone,
                    on_run_completed="keep" if keep_threads else "delete",
                )
            )
        return created

    made = _run(url, "create the crons", create_all, as_json)
    results = [{**_summary(dict(c), url), "replaced": replaced} for c, replaced in made]
    if as_json:
        emit_json({"crons": results})
        return
    for clinic, result in zip(clinics, results, strict=True):
        said = f" (replaced {', '.join(result['replaced'])})" if result["replaced"] else ""
        out.print(
            f"cron {result['cron_id']}: {clinic.name or clinic.account} at '{result['schedule']}' "
            f"({result['timezone']}); next run {result['next_run_local']}{said}",
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

    async def search(client: Any) -> Any:
        return await client.crons.search(limit=1000)

    crons = [_summary(dict(c), url) for c in _run(url, "list crons", search, as_json)]
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

    async def delete(client: Any) -> None:
        await client.crons.delete(cron_id)

    _run(url, "delete the cron", delete, as_json)
    if as_json:
        emit_json({"deleted": cron_id, "server": url})
    else:
        out.print(f"deleted cron {cron_id} on {url}", highlight=False)


def _settings_zone(verbose: int, as_json: bool) -> str:
    """COVIU_AGENT_TIMEZONE (printing a schedule needs no Truto account)."""
    return load_settings(verbose, as_json, needs_truto=False).timezone
