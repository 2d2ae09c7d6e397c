"""Audits of many clinics at once (`coviu-agent audit --accounts a,b,c` or `--fleet FILE`).

Each clinic is one integrated account with its own team, intake collection and time zone. Its audit runs
concurrently with the others' (`agent.runs.run_audit`), on its own services: its own toolbox, so its own rate
budget, its own thread, its own summary cache rows and its own report directory (`OUT/<account>/`). A fleet summary
(`fleet-<day>.md` and `.json`) lists every clinic's totals, exit code and report files.

The fleet file (TOML or JSON): `{"clinics": [{"account": "...", "team_id": "...", "collection_id": "...",
"timezone": "Australia/Sydney", "name": "...", "notify": "URL ...", "notify_patient_data": "URL ...",
"quiet_hours": "22:00-07:00"}]}` (TOML: `[[clinics]]` tables); only `account` is required. A clinic's `notify` and
`notify_patient_data` (Apprise URLs, secrets) replace COVIU_AGENT_NOTIFY and COVIU_AGENT_NOTIFY_PATIENT_DATA for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator

from agent.errors import BadInput
from agent.runs import AuditArgs, AuditResult, audit_not_started, run_audit, tell_audit_failed
from agent.settings import Settings
from tools.timeparse import known_zone

if TYPE_CHECKING:
    from agent.notify import Channel

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_CLINICS = 200


class Clinic(BaseModel):
    """One clinic of the fleet: its integrated account and (optionally) its ids, time zone and name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str
    team_id: str | None = None
    collection_id: str | None = None
    timezone: str | None = None
    name: str | None = None
    notify: SecretStr | None = None  # Apprise URLs (secrets): this clinic's channels
    notify_patient_data: SecretStr | None = None  # ... and those allowed to carry patient data
    quiet_hours: str | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _a_span(cls, value: str | None) -> str | None:
        if value is not None:
            from agent.quiet import parse_quiet_hours

            parse_quiet_hours(value, "quiet_hours")
        return value

    @field_validator("account", "team_id", "collection_id")
    @classmethod
    def _an_id(cls, value: str | None) -> str | None:
        if value is not None and not _ID.fullmatch(value):
            raise ValueError(f"expected an id (letters, digits, '-', '_', '.', ':'; up to 128), got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _a_zone(cls, value: str | None) -> str | None:
        if value is not None and known_zone(value) is None:
            raise ValueError(f"unknown time zone {value!r}")
        return value


def _checked(clinics: list[Clinic], source: str) -> list[Clinic]:
    if not clinics:
        raise BadInput(f"{source}: name at least one clinic")
    if len(clinics) > MAX_CLINICS:
        raise BadInput(f"{source}: at most {MAX_CLINICS} clinics per run, got {len(clinics)}")
    seen: set[str] = set()
    for clinic in clinics:
        if clinic.account in seen:
            raise BadInput(f"{source}: the account {clinic.account!r} is listed twice")
        seen.add(clinic.account)
    return clinics


def parse_accounts(text: str) -> list[Clinic]:
    """`--accounts a,b,c`: clinics with the settings' team, collection and time zone."""
    try:
        clinics = [Clinic(account=part.strip()) for part in text.split(",") if part.strip()]
    except ValidationError as exc:
        raise BadInput(f"--accounts: {_first_problem(exc)}") from None
    return _checked(clinics, "--accounts")


def load_fleet(path: Path) -> list[Clinic]:
    """`--fleet FILE`: the clinics a TOML or JSON file names (bad input names the file and the field)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--fleet: cannot read {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"--fleet: {str(path)!r} is not UTF-8 text (byte {exc.start}): save it as UTF-8 TOML or JSON"
        ) from None
    try:
        data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(
            f"--fleet: {str(path)!r} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {exc}"
        ) from None
    entries = data.get("clinics") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise BadInput(f"--fleet: {str(path)!r} needs a `clinics` list")
    clinics: list[Clinic] = []
    for index, entry in enumerate(entries):
        try:
            clinics.append(Clinic.model_validate(entry))
        except ValidationError as exc:
            raise BadInput(f"--fleet: clinics[{index}]: {_first_problem(exc)}") from None
    for index, clinic in enumerate(clinics):  # a bad channel URL is named (by place, never by value) before any send
        own_channels(clinic, f"--fleet: clinics[{index}]")
    return _checked(clinics, "--fleet")


def own_channels(clinic: Clinic, where: str = "--fleet") -> list[Channel] | None:
    """The clinic's own channels (None: it names none, and the settings' apply)."""
    from agent.notify import channels_from

    if clinic.notify is None and clinic.notify_patient_data is None:
        return None
    return channels_from(
        clinic.notify.get_secret_value() if clinic.notify else None,
        clinic.notify_patient_data.get_secret_value() if clinic.notify_patient_data else None,
        where=f"{where}.notify",
        patient_where=f"{where}.notify_patient_data",
    )


def clinic_channels(settings: Settings, clinic: Clinic, where: str = "--fleet") -> list[Channel]:
    """The channels of one clinic: its own, else the settings'."""
    own = own_channels(clinic, where)
    return own if own is not None else settings.channels()


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def shard_of(account: str, shards: int) -> int:
    """The worker (0 to shards - 1) that audits `account` when a fleet is split over `shards` workers: a stable hash
    of the account id, the same in every process and run, so each account's pacing lives in one process (its rate
    state in that process's memory would do; the shared store is then only for accounts that must be shared)."""
    if shards < 1:
        raise ValueError(f"shards: expected at least 1, got {shards}")
    return int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big") % shards


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard I/N` (1 ≤ I ≤ N ≤ 1000): this worker's index, zero-based, and the number of workers."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise BadInput(
            f"--shard: expected I/N (this worker's number and the number of workers), got {text!r}"
        ) from None
    if not 1 <= i <= n <= 1000:
        raise BadInput(f"--shard: expected 1 ≤ I ≤ N ≤ 1000, got {text!r}")
    return i - 1, n


def select_shard(clinics: list[Clinic], index: int, shards: int) -> list[Clinic]:
    """The clinics worker `index` (zero-based) of `shards` audits; every clinic is in exactly one shard."""
    return [c for c in clinics if shard_of(c.account, shards) == index]


@dataclass
class ClinicRun:
    """One clinic's audit in the fleet: its result, or the error that stopped it, and its exit code."""

    clinic: Clinic
    result: AuditResult | None = None
    error: str | None = None
    exit_code: int = 0


def clinic_settings(settings: Settings, clinic: Clinic) -> Settings:
    """The settings of one clinic: its account, and its ids and time zone where the fleet names them."""
    update: dict[str, Any] = {"truto_integrated_account_id": clinic.account}
    if clinic.team_id:
        update["coviu_team_id"] = clinic.team_id
    if clinic.collection_id:
        update["coviu_intake_collection_id"] = clinic.collection_id
    if clinic.timezone:
        update["timezone"] = clinic.timezone
    if clinic.name:
        update["coviu_clinic_name"] = clinic.name
    if clinic.notify is not None or clinic.notify_patient_data is not None:
        update["notify"], update["notify_patient_data"] = clinic.notify, clinic.notify_patient_data
    if clinic.quiet_hours:
        update["quiet_hours"] = clinic.quiet_hours
    return settings.model_copy(update=update)


def clinic_thread(clinic: Clinic, args: AuditArgs, settings: Settings, now: Any) -> str:
    """The clinic's audit thread: its account and every argument that changes its result (clinics may share team
    ids, never a thread); the same fleet run resumes each clinic's interrupted audit."""
    from agent.runs import audit_thread, audit_window

    since, until = audit_window(settings, args, now)
    arguments = {
        "team_id": clinic.account,
        # the notification settings do not change the audit's result (and are secrets)
        "clinic": clinic.model_dump(exclude={"notify", "notify_patient_data", "quiet_hours"}),
        "since": since.isoformat(),
        "until": until.isoformat(),
        "overrun_threshold_minutes": args.overrun_threshold_minutes,
    }
    return audit_thread(arguments)


def shared_sandbox_transport(clinics: list[Clinic]) -> Any:
    """One embedded sandbox serving every clinic's account (each its own data and rate window)."""
    from sandbox import SandboxTransport, config_from_env, create_sandbox

    config = config_from_env()
    config.accounts = [
        *config.accounts,
        *(c.account for c in clinics if c.account != config.integrated_account_id and c.account not in config.accounts),
    ]
    return SandboxTransport(create_sandbox(config))


async def run_fleet(
    settings: Settings,
    clinics: list[Clinic],
    args: AuditArgs,
    *,
    transport: Any = None,
    clock: Any = None,
    rerun: str | None = None,
) -> list[ClinicRun]:
    """Every clinic's audit at once, each on its own services (own rate budget); one failing clinic does not stop
    the others. `write_fleet_summary` then writes the fleet summary next to the clinics' report directories."""
    from agent.errors import exit_code_for
    from agent.services import open_services
    from tools.errors import for_person

    if settings.uses_sandbox and transport is None:
        transport = shared_sandbox_transport(clinics)

    async def one(clinic: Clinic) -> ClinicRun:
        own = clinic_settings(settings, clinic)
        out_dir = args.out_dir / clinic.account
        again = rerun or f"coviu-agent audit --accounts {clinic.account}"  # what staff are told to run
        started = False
        try:
            async with open_services(
                own, transport=transport, clock=clock, report_dir=out_dir, announce_sandbox=False
            ) as services:
                thread = clinic_thread(clinic, args, own, services.clock.now())
                started = True  # from here on, run_audit tells staff of its own failure
                result = await run_audit(
                    own,
                    dataclasses.replace(args, out_dir=out_dir, thread_id=thread, rerun=again),
                    services=services,
                )
        except Exception as exc:  # one clinic's failure is reported in the fleet summary, the others go on
            if not started and not isinstance(exc, BadInput):  # the clinic's Truto was down at the tool catalog
                clinic_args = dataclasses.replace(args, out_dir=out_dir, rerun=again)
                await tell_audit_failed(own, clinic_args, clock, exc)
                with contextlib.suppress(Exception):  # recorded (status, textfile) as the clinic's failed run
                    await audit_not_started(own, clinic_args, exc)
            # the same exit code and message as the clinic's run alone (agent.errors.exit_code_for)
            return ClinicRun(clinic, error=for_person(exc), exit_code=exit_code_for(exc))
        return ClinicRun(clinic, result=result, exit_code=result.exit_code)

    return list(await asyncio.gather(*(one(c) for c in clinics)))


def fleet_summary(runs: list[ClinicRun], source: str | None = None) -> dict[str, Any]:
    """The fleet's JSON summary: per clinic its source, window, totals, completeness, exit code and report files.
    `source`: "sandbox" (the embedded sandbox) or "truto" (each clinic's entry names its account); by default what
    the clinics' reports say."""
    clinics: list[dict[str, Any]] = []
    for run in runs:
        report = run.result.report if run.result else None
        clinics.append(
            {
                "account": run.clinic.account,
                "source": (report or {}).get("source"),
                "name": run.clinic.name or (report or {}).get("clinic_name"),
                "team_id": (report or {}).get("team_id"),
                "window": (report or {}).get("window"),
                "complete": bool(report and report.get("complete", True)),
                "totals": (report or {}).get("totals"),
                "exit_code": run.exit_code,
                "error": run.error,
                "reports": run.result.paths if run.result else {},
            }
        )
    keys = ("sessions", "billable_minutes", "overruns", "missing_forms", "summary_unavailable")
    fleet_totals = {k: sum(int((c["totals"] or {}).get(k) or 0) for c in clinics) for k in keys}
    if source is None:
        source = "sandbox" if any(c["source"] == "sandbox" for c in clinics) else "truto"
    return {
        "schema_version": 1,
        "source": source,
        "clinics": clinics,
        "totals": {**fleet_totals, "clinics": len(clinics), "failed": sum(1 for c in clinics if c["exit_code"])},
        "exit_code": max((c["exit_code"] for c in clinics), default=0),
    }


def fleet_markdown(summary: dict[str, Any]) -> str:
    from reporting.audit_report.markdown import _md as md_cell  # the report's one Markdown-cell neutraliser

    demo = "DEMO (embedded sandbox, not real clinics): " if summary.get("source") == "sandbox" else ""
    lines = [
        f"# {demo}Fleet audit",
        "",
        f"{summary['totals']['clinics']} clinics, {summary['totals']['failed']} not done; "
        f"{summary['totals']['sessions']} sessions, {summary['totals']['billable_minutes']} billable minutes.",
        "",
        "| Account | Clinic | Sessions | Billable min | Overruns | Missing forms | Could not check | Exit | Report |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in summary["clinics"]:
        t = c["totals"] or {}
        report = c["reports"].get("md") or c["error"] or ""  # escaped once, in the row below
        lines.append(
            f"| {md_cell(c['account'])} | {md_cell(c['name'] or '')} | {t.get('sessions', '')} | "
            f"{t.get('billable_minutes', '')} | {t.get('overruns', '')} | {t.get('missing_forms', '')} | "
            f"{t.get('summary_unavailable', '')} | {c['exit_code']} | {md_cell(report)} |"
        )
    return "\n".join(lines) + "\n"


def write_fleet_summary(
    runs: list[ClinicRun], out_dir: Path, source: str | None = None, *, suffix: str = ""
) -> dict[str, Path]:
    """`fleet-<day><suffix>.json` and `.md` in the output directory (owner-only, like the reports); a shard's
    suffix (`-shard-2-of-4`) keeps the workers' summaries apart."""
    from tools.private_files import private_dir, write_private

    summary = fleet_summary(runs, source)
    windows = [c["window"]["since"][:10] for c in summary["clinics"] if c["window"]]
    label = min(windows) if windows else "unknown"
    private_dir(out_dir)
    paths = {"json": out_dir / f"fleet-{label}{suffix}.json", "md": out_dir / f"fleet-{label}{suffix}.md"}
    for kind, text in (("json", json.dumps(summary, indent=2, sort_keys=True)), ("md", fleet_markdown(summary))):
        write_private(paths[kind], text)
    return paths
