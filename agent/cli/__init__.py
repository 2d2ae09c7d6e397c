"""The `coviu-agent` command line (typer + rich): one command per clinic job.

Exit codes: 0 done; 2 bad input (nothing sent); 3 upstream failure after retries; 4 needs approval;
5 report written but incomplete. Heavy imports (LangChain, LangGraph) happen inside commands so `--help` stays fast.

This module builds the typer app and registers the commands; each command lives in its own module, and what they
share (consoles, `fail`, `emit_json`, `run_async`, `check_id`, `load_settings`) lives in `agent.cli.common`.
"""

from __future__ import annotations

import typer

from agent.cli.assistant import ask
from agent.cli.audit import audit
from agent.cli.common import emit_json, fail
from agent.cli.mcp import mcp_app
from agent.cli.notify import notify_app
from agent.cli.queue import queue_app
from agent.cli.recordings import recordings
from agent.cli.sandbox import sandbox_app
from agent.cli.schedule import schedule_app
from agent.cli.tools_cmd import tools
from agent.cli.triage import triage
from agent.redact import run_guarded

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
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
) -> None:
    """Run a telehealth clinic's Coviu account."""


app.command()(tools)
app.command()(triage)
app.command()(audit)
app.add_typer(queue_app, name="queue")
app.add_typer(sandbox_app, name="sandbox")
app.command()(ask)
app.add_typer(mcp_app, name="mcp")
app.command()(recordings)
app.add_typer(schedule_app, name="schedule")
app.add_typer(notify_app, name="notify")

__all__ = ["app", "emit_json", "fail", "main"]


def main() -> None:
    run_guarded(app)
