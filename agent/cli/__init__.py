"""The `coviu-agent` command line (typer + rich): one command per clinic job.

Exit codes: one table for every command and for fleets (`agent.errors.EXIT_CODES`; every `--help` shows it as its
epilog, the README as a table). Heavy imports (LangChain, LangGraph) happen inside commands so `--help` stays fast.

This module builds the typer app and registers the commands; each command lives in its own module, and what they
share (consoles, `fail`, `emit_json`, `run_async`, `check_id`, `load_settings`) lives in `agent.cli.common`.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from agent.cli.assistant import ask
from agent.cli.audit import audit
from agent.cli.common import ask_for_sandbox, emit_json, fail
from agent.cli.eval_cmd import eval_command
from agent.cli.mcp import mcp_app
from agent.cli.notify import notify_app
from agent.cli.queue import queue_app
from agent.cli.recordings import recordings
from agent.cli.sandbox import sandbox_app
from agent.cli.schedule import schedule_app
from agent.cli.status import status
from agent.cli.tools_cmd import tools
from agent.cli.triage import triage
from agent.errors import EXIT_BAD_INPUT, exit_codes_epilog
from agent.redact import run_guarded


class ExitCodesGroup(TyperGroup):
    """The root group: every command and group below it shows the one exit-code table as its `--help` epilog."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        epilog = exit_codes_epilog()

        def walk(command: Any) -> None:  # a click command or group
            command.epilog = command.epilog or epilog
            for child in getattr(command, "commands", {}).values():
                walk(child)

        walk(self)


app = typer.Typer(
    cls=ExitCodesGroup,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,  # Rich tracebacks show locals (secrets): a crash is one redacted line instead
    # Help and usage errors in click's plain layout: typer's Rich layout imports Rich's Markdown, Syntax and
    # Traceback (≈ 0.18 s of CPU on every `--help`, twice the rest of the CLI's start-up; issue 18).
    rich_markup_mode=None,
    help="Run a telehealth clinic's Coviu account.",
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("coviu-agent")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        typer.echo(f"coviu-agent {number}")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    log_format: str | None = typer.Option(
        None, "--log-format", help="Log lines on stderr: 'text' or 'json', one object a line (COVIU_AGENT_LOG_FORMAT)."
    ),
    sandbox: bool = typer.Option(
        False,
        "--sandbox",
        help="Run on the embedded sandbox (demo data; Truto account settings ignored), e.g. "
        "`coviu-agent --sandbox audit`. Also COVIU_AGENT_SANDBOX=1 (with no TRUTO_API_KEY).",
    ),
) -> None:
    """Run a telehealth clinic's Coviu account."""
    ask_for_sandbox(sandbox)
    if log_format is not None:
        import os

        if log_format.strip().lower() not in ("text", "json"):
            fail(EXIT_BAD_INPUT, f"--log-format: expected text or json, got {log_format!r}")
        os.environ["COVIU_AGENT_LOG_FORMAT"] = log_format  # read with the settings, as the variable would be


app.command()(tools)
app.command()(triage)
app.command()(audit)
app.add_typer(queue_app, name="queue")
app.add_typer(sandbox_app, name="sandbox")
app.command()(ask)
app.add_typer(mcp_app, name="mcp")
app.command()(recordings)
app.add_typer(schedule_app, name="schedule")
app.command(name="eval")(eval_command)
app.command()(status)
app.add_typer(notify_app, name="notify")

__all__ = ["app", "emit_json", "fail", "main"]


def main() -> None:
    run_guarded(app)
