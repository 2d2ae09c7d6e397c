"""`coviu-agent sandbox serve`: the embedded Truto + Coviu simulator over HTTP."""

from __future__ import annotations

import typer

from agent.cli.common import QUIET, VERBOSE, configure_cli_logging, err, fail
from agent.errors import EXIT_BAD_INPUT

sandbox_app = typer.Typer(no_args_is_help=True, help="The embedded Truto + Coviu simulator.")


@sandbox_app.command("serve")
def sandbox_serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    synthetic_sessions: int = typer.Option(0, "--synthetic-sessions", help="Add N synthetic sessions to a day."),
    synthetic_day: str | None = typer.Option(
        None, "--synthetic-day", help="Their day (YYYY-MM-DD; default yesterday)."
    ),
    profile: str | None = typer.Option(
        None,
        "--profile",
        envvar="COVIU_SANDBOX_PROFILE",
        show_envvar=True,
        help="Account profile: default, variant or random.",
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        envvar="COVIU_SANDBOX_SEED",
        show_envvar=True,
        help="The random profile's seed (default: a new one, printed).",
    ),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Serve the simulator over HTTP (then set TRUTO_BASE_URL, TRUTO_API_KEY=sandbox, ...=sandbox).

    -v shows the HTTP server's own info lines (start-up, shutdown)."""
    configure_cli_logging(-1 if quiet else verbose)
    from datetime import timedelta

    from sandbox import create_sandbox, generate_sessions, serve_sandbox
    from sandbox.profiles import ProfileError, serve_config

    if not 0 <= synthetic_sessions <= 100_000:
        fail(EXIT_BAD_INPUT, f"--synthetic-sessions: expected 0 to 100000, got {synthetic_sessions}")
    try:
        config, described = serve_config(profile, seed)
    except ProfileError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    sandbox = create_sandbox(config)
    if synthetic_sessions:
        from graphs.audit_window import WindowError, parse_day

        try:
            day = (
                parse_day("--synthetic-day", synthetic_day)
                if synthetic_day
                else (sandbox.clock.now().date() - timedelta(days=1))
            )
        except WindowError as exc:
            fail(EXIT_BAD_INPUT, str(exc))
        generate_sessions(sandbox.store, day, synthetic_sessions)

    from sandbox import DEMO_ACCOUNT_ID, DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID

    err.print(
        f"sandbox on http://{host}:{port}  (TRUTO_BASE_URL=http://{host}:{port} TRUTO_API_KEY=sandbox "
        f"TRUTO_INTEGRATED_ACCOUNT_ID={DEMO_ACCOUNT_ID})",
        highlight=False,
    )
    err.print(
        f"demo account {DEMO_ACCOUNT_ID!r}, whose ids are the defaults: COVIU_TEAM_ID={DEMO_TEAM_ID} "
        f"COVIU_WAITING_QUEUE_ID={DEMO_WAITING_QUEUE_ID} COVIU_INTAKE_COLLECTION_ID={DEMO_INTAKE_COLLECTION_ID}",
        highlight=False,
    )
    err.print(f"sandbox profile: {described}", highlight=False)
    serve_sandbox(host=host, port=port, sandbox=sandbox, log_level="info" if verbose and not quiet else "warning")
