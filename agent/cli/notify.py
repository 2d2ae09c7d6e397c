"""`coviu-agent notify test`: send a test message to every configured channel (COVIU_AGENT_NOTIFY, fleet file)."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli.common import QUIET, VERBOSE, emit_json, fail, load_settings, out, run_async
from agent.errors import EXIT_BAD_INPUT, EXIT_UPSTREAM, BadInput

notify_app = typer.Typer(no_args_is_help=True, help="Alerts and reports to staff.")


@notify_app.command("test")
def notify_test(
    fleet: str | None = typer.Option(None, "--fleet", help="Test every clinic's channels in this fleet file."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: each channel and whether it got it."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Send a test message to each channel; exit 3 when one did not take it, 2 when none is configured."""
    from datetime import UTC, datetime

    from agent.notify import ChannelTest, send_test
    from tools.timeparse import clinic_time

    settings = load_settings(-1 if quiet else verbose, as_json, needs_truto=False)  # sends to channels only
    try:
        if fleet is not None:
            from agent.fleet import clinic_channels, clinic_settings, load_fleet

            clinics = load_fleet(Path(fleet))
            targets = [(c.name or c.account, clinic_channels(clinic_settings(settings, c), c, fleet)) for c in clinics]
        else:
            targets = [(settings.coviu_clinic_name or "your clinic", settings.channels())]
        if not any(channels for _, channels in targets):
            raise BadInput(
                "no notification channel: set COVIU_AGENT_NOTIFY (or COVIU_AGENT_NOTIFY_PATIENT_DATA) to one or more "
                "Apprise URLs" + (", or `notify` in the fleet file" if fleet else "")
            )
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    at = clinic_time(datetime.now(UTC), settings.zone)

    async def run() -> list[tuple[str, list[ChannelTest]]]:
        return [(clinic, await send_test(channels, clinic, at)) for clinic, channels in targets]

    results = run_async(run, as_json=as_json)
    failed = sum(1 for _, tests in results for t in tests if t.error is not None)
    if as_json:
        emit_json(
            {
                "clinics": [{"clinic": clinic, "channels": [t.as_dict() for t in tests]} for clinic, tests in results],
                "failed": failed,
            }
        )
    else:
        for clinic, tests in results:
            for t in tests:
                state = "delivered" if t.error is None else f"FAILED: {t.error}"
                out.print(f"{clinic}: {t.channel.describe()}: {state}", highlight=False, markup=False)
    if failed:
        raise typer.Exit(EXIT_UPSTREAM)
