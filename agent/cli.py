"""The `coviu-agent` command line (typer + rich): one command per clinic job.

Exit codes: 0 done; 2 bad input (nothing sent); 3 upstream failure after retries; 4 needs approval.
Heavy imports (LangChain, LangGraph) happen inside commands so `--help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from agent.redact import SafeConsole, run_guarded, styled
from agent.settings import LONG_RUN_MAX_WAIT, Settings
from tools.textsafety import has_unsafe_chars

if TYPE_CHECKING:
    from graphs.context import Services

T = TypeVar("T")

EXIT_OK, EXIT_BAD_INPUT, EXIT_UPSTREAM, EXIT_APPROVAL, EXIT_INCOMPLETE = 0, 2, 3, 4, 5

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # Rich tracebacks show locals (secrets): a crash is one redacted line instead
    help="Run a telehealth clinic's Coviu account.",
)
queue_app = typer.Typer(no_args_is_help=True, help="The waiting queue.")
sandbox_app = typer.Typer(no_args_is_help=True, help="The embedded Truto + Coviu simulator.")
app.add_typer(queue_app, name="queue")
app.add_typer(sandbox_app, name="sandbox")

# Strings printed through these are text, never markup; secrets redacted, control/bidi characters escaped.
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BadInput(Exception):
    """A flag or setting is wrong; nothing was sent (exit 2)."""


def fail(code: int, message: str, *, as_json: bool = False, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        emit_json({"error": message, "exit_code": code, **(extra or {})})
    err.print(styled("error:", "bold red", message), highlight=False)
    raise typer.Exit(code)


def emit_json(payload: Any) -> None:
    """One JSON object on stdout: secrets redacted, bidi/C1 characters as \\u escapes (the same data)."""
    from tools.textsafety import redact_value, safe_json

    sys.stdout.write(safe_json(json.dumps(redact_value(payload), ensure_ascii=False, default=str)) + "\n")


def load_settings(verbose: bool = False, as_json: bool = False) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        fail(EXIT_BAD_INPUT, f"configuration: {problems}", as_json=as_json)
    from agent.logging import configure_logging

    configure_logging("DEBUG" if verbose else settings.log_level, settings.secrets())
    return settings


def check_id(name: str, value: str | None) -> None:
    if value is not None and not _ID_PATTERN.fullmatch(value):
        raise BadInput(f"{name}: expected an id (letters, digits, '-', '_', '.', ':'; up to 128), got {value!r}")


def run_async(fn: Callable[[], Awaitable[T]], *, as_json: bool) -> T:
    """Run a command body and turn the app's errors into exit codes and clear messages."""
    from tools.errors import (
        CoviuAgentError,
        RetriesExhaustedError,
        ToolArgumentError,
        TransportError,
        TrutoError,
    )

    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except typer.Exit:
        raise
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    except ToolArgumentError as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    except RetriesExhaustedError as exc:
        fail(EXIT_UPSTREAM, f"upstream failure: {exc}", as_json=as_json)
    except TrutoError as exc:
        code = EXIT_BAD_INPUT if exc.status_code == 404 else EXIT_UPSTREAM
        fail(code, exc.describe(), as_json=as_json)
    except TransportError as exc:
        fail(EXIT_UPSTREAM, f"upstream failure: {exc}", as_json=as_json)
    except CoviuAgentError as exc:
        fail(EXIT_UPSTREAM, str(exc), as_json=as_json)
    except ValueError as exc:  # a missing id or setting found by a graph's first node, before any request
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


async def open_services(settings: Settings) -> Services:
    from agent.services import build_services

    return await build_services(settings)


# --- tools ---------------------------------------------------------------------------------------


@app.command()
def tools(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """List the tools Truto serves for this account: name, resource, method, required args."""
    settings = load_settings(verbose, as_json)

    async def body() -> None:
        services = await open_services(settings)
        try:
            catalog = services.toolbox.catalog
            rows = [
                {
                    "name": s.name,
                    "resource": s.resource,
                    "method": s.method,
                    "required": list(s.args_schema["required"]),
                }
                for s in sorted(catalog, key=lambda s: s.name)
            ]
            if as_json:
                emit_json({"source": catalog.source, "count": len(rows), "tools": rows})
                return
            from rich.table import Table

            table = Table(title=f"{len(rows)} tools (source: {catalog.source})")
            for col in ("name", "resource", "method", "required"):
                table.add_column(col)
            for r in rows:
                table.add_row(r["name"], r["resource"], r["method"], ", ".join(r["required"]))
            out.print(table)
        finally:
            await services.toolbox.aclose()

    run_async(body, as_json=as_json)


# --- triage --------------------------------------------------------------------------------------


@app.command()
def triage(
    request: str = typer.Argument("", help="The request, e.g. 'A priority patient needs a duty nurse now'."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default COVIU_TEAM_ID)."),
    queue_id: str | None = typer.Option(None, "--queue-id", help="Waiting queue id (default COVIU_WAITING_QUEUE_ID)."),
    patient_name: str | None = typer.Option(None, "--patient-name", help="The patient's display name."),
    host_name: str = typer.Option("Duty clinician", "--host-name", help="The clinician's display name."),
    duration_minutes: int = typer.Option(30, "--duration-minutes", help="Session length in minutes."),
    wait_threshold_minutes: float = typer.Option(15, "--wait-threshold-minutes", help="Alert above this wait."),
    thread_id: str | None = typer.Option(None, "--thread-id", help="Resume this triage thread."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Scenario 1: check the queue, alert on long waits, create a session now with two links."""
    try:
        if not 1 <= duration_minutes <= 720:
            raise BadInput(f"--duration-minutes: expected 1 to 720 minutes, got {duration_minutes}")
        if not 0 <= wait_threshold_minutes <= 1440:
            raise BadInput(f"--wait-threshold-minutes: expected 0 to 1440, got {wait_threshold_minutes}")
        for label, value in (("--patient-name", patient_name), ("--host-name", host_name)):
            if value is not None and (not value.strip() or len(value) > 120):
                raise BadInput(f"{label}: expected a non-empty name of at most 120 characters")
            if value is not None and has_unsafe_chars(value):
                raise BadInput(f"{label}: control or bidi characters are not allowed in a display name")
        if len(request) > 4000:
            raise BadInput("REQUEST: expected at most 4000 characters")
        check_id("--team-id", team_id)
        check_id("--queue-id", queue_id)
        check_id("--thread-id", thread_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(verbose, as_json)

    async def body() -> dict[str, Any]:
        from langchain_core.messages import HumanMessage
        from langchain_core.runnables import RunnableConfig

        from agent.checkpoint import open_checkpointer
        from graphs.context import Context
        from graphs.triage import compile_triage

        services = await open_services(settings)
        try:
            async with open_checkpointer(settings.state) as saver:
                graph = compile_triage(saver)
                inputs: dict[str, Any] = {
                    "messages": [HumanMessage(content=request or "Triage the waiting queue now.")],
                    "host_name": host_name,
                    "duration_minutes": duration_minutes,
                    "wait_threshold_minutes": wait_threshold_minutes,
                }
                if patient_name:
                    inputs["patient_name"] = patient_name
                thread = thread_id or triage_thread(
                    team_id or services.team_id,
                    queue_id or services.waiting_queue_id,
                    patient_name,
                    request,
                    services.clock.now().astimezone(services.zone).date().isoformat(),
                )
                config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": 60}
                context = Context(team_id=team_id, waiting_queue_id=queue_id, services=services)
                snapshot = await graph.aget_state(config)
                if snapshot.next:
                    # an interrupted run of the same triage (crash, kill): finish it, don't start a second
                    err.print(f"resuming triage thread {thread}", highlight=False)
                    state = await graph.ainvoke(None, config, context=context, durability="sync")
                else:
                    if snapshot.values and not thread_id:
                        config = {
                            "configurable": {"thread_id": f"{thread}:{uuid.uuid4().hex[:8]}"},
                            "recursion_limit": 60,
                        }
                    state = await graph.ainvoke(inputs, config, context=context, durability="sync")  # type: ignore[call-overload]
        finally:
            await services.toolbox.aclose()
        return dict(state)

    state = run_async(body, as_json=as_json)
    result = {
        "team_id": state.get("team_id"),
        "queue_id": state.get("waiting_queue_id"),
        "queue": state.get("queue"),
        "alerts": state.get("alerts", []),
        "session": state.get("session"),
        "participants": state.get("participants", []),
        "reply": state.get("reply", ""),
    }
    failure = state.get("failure")
    if failure:
        code = EXIT_BAD_INPUT if state.get("queue") is None and "404" in str(state.get("last_error")) else EXIT_UPSTREAM
        if as_json:
            emit_json({**result, "error": failure, "exit_code": code})
        err.print(styled("triage did not finish:", "bold red", str(failure)), highlight=False)
        raise typer.Exit(code)
    if as_json:
        emit_json(result)
    else:
        out.print(result["reply"], highlight=False)


# --- audit ---------------------------------------------------------------------------------------


@app.command()
def audit(
    day: str | None = typer.Option(None, "--date", help="Audit this day (YYYY-MM-DD, clinic time zone)."),
    since: str | None = typer.Option(None, "--since", help="Window start (ISO-8601)."),
    until: str | None = typer.Option(None, "--until", help="Window end, exclusive (ISO-8601)."),
    team_id: str | None = typer.Option(None, "--team-id"),
    collection_id: str | None = typer.Option(None, "--collection-id"),
    overrun_threshold_minutes: float = typer.Option(10, "--overrun-threshold-minutes"),
    out_dir: str = typer.Option("reports", "--out", help="Directory for the report files."),
    thread_id: str | None = typer.Option(None, "--thread-id", help="Checkpoint thread (default from the window)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report."),
    max_wait: float | None = typer.Option(
        None, "--max-wait", min=1, help="Seconds this run may wait out rate limits in total (default 1800)."
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Scenario 2: the end-of-day audit (default: yesterday). Cron-safe; resumes after a crash."""
    settings = load_settings(verbose, as_json)
    settings.use_max_wait(max_wait, LONG_RUN_MAX_WAIT)
    try:
        from graphs.audit import WindowError, resolve_window
        from tools.clock import SystemClock

        if not 0 <= overrun_threshold_minutes <= 1440:
            raise BadInput(f"--overrun-threshold-minutes: expected 0 to 1440, got {overrun_threshold_minutes}")
        check_id("--team-id", team_id)
        check_id("--collection-id", collection_id)
        check_id("--thread-id", thread_id)
        check_report_dir(out_dir)
        try:
            w_since, w_until, _ = resolve_window(settings.zone, SystemClock().now(), day=day, since=since, until=until)
        except WindowError as exc:
            raise BadInput(str(exc)) from None
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)

    async def body() -> dict[str, Any]:
        from pathlib import Path

        from langchain_core.runnables import RunnableConfig
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from agent.checkpoint import open_checkpointer
        from graphs.audit import compile_audit
        from graphs.context import Context

        services = await open_services(settings)
        services.report_dir = Path(out_dir)
        team = team_id or services.team_id
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        bar = progress.add_task("summaries", total=None)

        def on_progress(kind: str, count: int, total: int) -> None:
            if kind == "sessions":
                progress.update(bar, total=total, description=f"summaries of {total} sessions")
            else:
                progress.advance(bar, count)

        services.on_progress = on_progress
        collection = collection_id or services.collection_id
        # Every argument that changes the result is in the thread id: a resume never mixes two runs' flags.
        arguments = {
            "team_id": team,
            "collection_id": collection,
            "since": w_since.isoformat(),
            "until": w_until.isoformat(),
            "overrun_threshold_minutes": overrun_threshold_minutes,
        }
        thread = thread_id or audit_thread(arguments)
        config: RunnableConfig = {
            "configurable": {"thread_id": thread},
            "recursion_limit": 10_000,
            "max_concurrency": 4,
        }
        context = Context(team_id=team_id, collection_id=collection_id, services=services)
        try:
            async with open_checkpointer(settings.state) as saver:
                graph = compile_audit(saver)
                snapshot = await graph.aget_state(config)
                if snapshot.next:
                    check_resumable(thread, snapshot.values, arguments)
                with progress:
                    if snapshot.next:
                        err.print(f"resuming audit thread {thread}", highlight=False)
                        state = await graph.ainvoke(None, config, context=context, durability="sync")
                    else:
                        inputs: dict[str, Any] = {"overrun_threshold_minutes": overrun_threshold_minutes}
                        if day:
                            inputs["date"] = day
                        if since and until:
                            inputs["since"], inputs["until"] = since, until
                        if team_id:
                            inputs["team_id"] = team_id
                        if collection_id:
                            inputs["collection_id"] = collection_id
                        state = await graph.ainvoke(inputs, config, context=context, durability="sync")  # type: ignore[call-overload]
                if state.get("report_paths"):
                    # the report is written: drop the thread's checkpoints (they hold patient data)
                    await saver.adelete_thread(thread)
        finally:
            await services.toolbox.aclose()
        return dict(state)

    state = run_async(body, as_json=as_json)
    report, paths = state.get("report"), state.get("report_paths") or {}
    if not report or not paths:
        fail(EXIT_UPSTREAM, "the audit did not produce a report", as_json=as_json)
    incomplete = not report.get("complete", True)
    if as_json:
        emit_json(report)
        if incomplete:
            raise typer.Exit(EXIT_INCOMPLETE)
        return
    from graphs.report import summary_line

    t = report["totals"]
    out.print(summary_line(report), highlight=False)
    for kind in ("md", "json", "html"):
        if kind in paths:
            out.print(f"report ({kind}): {paths[kind]}", highlight=False)
    if incomplete:
        err.print(
            f"audit incomplete: {t.get('summary_unavailable', 0)} sessions could not be checked "
            "(see 'Could not be checked' in the report); exit 5",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_INCOMPLETE)


def check_report_dir(out_dir: str) -> None:
    """`--out` must name a directory (existing or to be made), checked before any request is sent."""
    from pathlib import Path

    if not out_dir.strip():
        raise BadInput("--out: expected a directory for the report files, got an empty value")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out: expected a directory, but {out_dir!r} is a file")


def audit_thread(arguments: dict[str, Any]) -> str:
    """The default audit thread: the same arguments resume an interrupted run; other arguments start afresh."""
    import hashlib

    key = json.dumps(arguments, sort_keys=True)
    return f"audit:{arguments['team_id']}:{arguments['since'][:10]}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def check_resumable(thread: str, values: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Refuse to resume a thread that was started with other arguments (exit 2, with a hint)."""
    stored = {
        "team_id": values.get("team_id"),
        "collection_id": values.get("collection_id"),
        "since": (values.get("window") or {}).get("since"),
        "until": (values.get("window") or {}).get("until"),
        "overrun_threshold_minutes": values.get("overrun_threshold_minutes"),
    }
    differing = sorted(k for k, v in stored.items() if v is not None and v != arguments[k])
    if differing:
        raise BadInput(
            f"--thread-id: thread {thread} was started with other arguments ({', '.join(differing)}); "
            "rerun with the same arguments to resume it, or drop --thread-id to start a new audit"
        )


def triage_thread(team: str | None, queue: str | None, patient: str | None, request: str, day: str) -> str:
    """The default triage thread: the same request on the same day resumes an interrupted run.

    Hashed, so no patient name is stored in a thread id.
    """
    import hashlib

    key = "|".join([team or "", queue or "", patient or "", request, day])
    return f"triage:{hashlib.sha256(key.encode()).hexdigest()[:24]}"


# --- queue watch ---------------------------------------------------------------------------------


@queue_app.command("watch")
def queue_watch(
    interval: float = typer.Option(30, "--interval", help="Seconds between checks."),
    threshold_minutes: float = typer.Option(15, "--threshold-minutes", help="Alert above this wait."),
    team_id: str | None = typer.Option(None, "--team-id"),
    queue_id: str | None = typer.Option(None, "--queue-id"),
    once: bool = typer.Option(False, "--once", help="Check once and exit."),
    max_checks: int = typer.Option(0, "--max-checks", help="Stop after this many checks (0: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per check."),
    max_wait: float | None = typer.Option(
        None, "--max-wait", min=1, help="Seconds each check may wait out rate limits (default: the interval)."
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
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


# --- sandbox -------------------------------------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8765, "--port"),
    synthetic_sessions: int = typer.Option(0, "--synthetic-sessions", help="Add N synthetic sessions to a day."),
    synthetic_day: str | None = typer.Option(
        None, "--synthetic-day", help="Their day (YYYY-MM-DD; default yesterday)."
    ),
    profile: str | None = typer.Option(
        None, "--profile", help="Account profile: default, variant or random (env COVIU_SANDBOX_PROFILE)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="The random profile's seed (env COVIU_SANDBOX_SEED; default: a new one, printed)."
    ),
) -> None:
    """Serve the simulator over HTTP (then set TRUTO_BASE_URL, TRUTO_API_KEY=sandbox, ...=sandbox)."""
    from datetime import date, timedelta

    from sandbox import create_sandbox, serve_sandbox
    from sandbox.profiles import ProfileError, serve_config

    if not 0 <= synthetic_sessions <= 100_000:
        fail(EXIT_BAD_INPUT, f"--synthetic-sessions: expected 0 to 100000, got {synthetic_sessions}")
    try:
        config, described = serve_config(profile, seed)
    except ProfileError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    sandbox = create_sandbox(config)
    if synthetic_sessions:
        try:
            day = (
                date.fromisoformat(synthetic_day) if synthetic_day else (sandbox.clock.now().date() - timedelta(days=1))
            )
        except ValueError:
            fail(EXIT_BAD_INPUT, f"--synthetic-day: expected YYYY-MM-DD, got {synthetic_day!r}")
        sandbox.store.generate_sessions(day, synthetic_sessions)

    err.print(
        f"sandbox on http://{host}:{port}  (TRUTO_BASE_URL=http://{host}:{port} TRUTO_API_KEY=sandbox "
        "TRUTO_INTEGRATED_ACCOUNT_ID=sandbox)",
        highlight=False,
    )
    err.print(f"sandbox profile: {described}", highlight=False)
    serve_sandbox(host=host, port=port, sandbox=sandbox)


# Commands that live in their own modules register themselves on `app` when imported.
from agent import cli_assistant, cli_mcp, cli_recordings, cli_schedule  # noqa: E402

__all__ = ["app", "cli_assistant", "cli_mcp", "cli_recordings", "cli_schedule", "main"]


def main() -> None:
    run_guarded(app)


if __name__ == "__main__":
    from agent.cli import main as registered_main  # the imported module, where every command registered

    registered_main()
