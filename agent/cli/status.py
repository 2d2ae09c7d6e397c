"""`coviu-agent status`: the last run of each graph per clinic, pending approvals, and (with `--server`) the
LangGraph Server's waiting threads and the next scheduled runs. Reads only; exit 0, or 3 when a store or the
server cannot be read, 2 for a bad `--server`."""

from __future__ import annotations

from typing import Any

import typer

from agent.cli.common import QUIET, VERBOSE, emit_json, fail, load_settings, out
from agent.errors import EXIT_BAD_INPUT, EXIT_UPSTREAM, BadInput
from agent.runs.ask import answer_command

NO_SERVER = "no --server given: crons run on a LangGraph server (`coviu-agent status --server URL`)"


def next_steps(thread_id: str, *, on_server: bool, server: str | None) -> dict[str, Any]:
    """How to answer a thread waiting for approval where it lives: `resume` shows the pending actions first (asks
    at a terminal; else prints the request as JSON, exit 4), `approve` / `reject` decide. A LangGraph server's
    thread is not in this state store: it is answered on the server (`ask --server`; its URL, when `status` was not
    given it, is to be filled in)."""
    review = answer_command(thread_id, (server or "URL") if on_server else None)
    return {
        "runs_on": "server" if on_server else "cli",
        "resume": review,
        "approve": f"{review} --yes",
        "reject": f"{review} --no",
    }


def _steps_line(p: dict[str, Any]) -> str:
    fill = " (URL: the LangGraph server's)" if " --server URL " in p["resume"] else ""
    return f"review with `{p['resume']}`, then add --yes or --no{fill}"


def _server_status(url: str, as_json: bool) -> dict[str, Any]:
    from agent.cli.common import run_async
    from agent.schedules import run_server_status

    return run_async(lambda: run_server_status(url), as_json=as_json).as_dict()


def status(
    server: str | None = typer.Option(None, "--server", help="A LangGraph server's URL: its threads and crons too."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Show the last run of each graph per clinic, pending approvals and the next scheduled run."""
    from agent import runlog

    settings = load_settings(-1 if quiet else verbose, as_json, needs_truto=False)  # reads the state store only
    url = None
    if server is not None:
        from agent.cli.schedule import check_server

        try:
            url = check_server(server)
        except BadInput as exc:
            fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    try:
        runs = runlog.last_runs(settings.state)
        pending = runlog.pending_approvals(settings.state)
    except Exception as exc:  # sqlite3 / psycopg errors: the store cannot be read
        where = runlog.where(settings.state)
        fail(EXIT_UPSTREAM, f"the state store {where} cannot be read: {type(exc).__name__}", as_json=as_json)
    result: dict[str, Any] = {
        "state": runlog.where(settings.state),
        "last_runs": [r.as_dict() for r in runs],
        "pending_approvals": [
            {**p.as_dict(), **next_steps(str(p.thread_id), on_server=p.on_server, server=url)} for p in pending
        ],
        "server": _server_status(url, as_json) if url else None,
    }
    if url:
        for thread in result["server"]["pending_approvals"]:
            thread.update(next_steps(str(thread["thread_id"]), on_server=True, server=url))
    if as_json:
        emit_json(result)
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    say = out.print
    say(f"state store: {result['state']}", highlight=False)
    if not result["last_runs"]:
        say("no runs recorded yet", highlight=False)
    else:
        say("last run of each graph per clinic:", highlight=False)
    for r in result["last_runs"]:
        report = f"  report {r['report_path']}" if r["report_path"] else ""
        say(
            f"  {r['graph']:<10} clinic {r['clinic'] or '(default)'} (team {r['team_id'] or '?'})  {r['finished_at']}  "
            f"{r['outcome']} "
            f"(exit {r['exit_code']}, {r['duration_seconds']:.1f} s){report}",
            highlight=False,
        )
    if result["pending_approvals"]:
        say("waiting for approval:", highlight=False)
    for p in result["pending_approvals"]:
        where = " (on a LangGraph server)" if p["runs_on"] == "server" else ""
        say(f"  {p['thread_id']}{where} since {p['finished_at']}: {_steps_line(p)}", highlight=False)
    server = result["server"]
    if server is None:
        say(f"next scheduled run: unknown; {NO_SERVER}", highlight=False)
        return
    say(f"LangGraph server {server['url']}:", highlight=False)
    for graph, thread in server["last_threads"].items():
        say(
            f"  last {graph} thread {thread['thread_id']}: {thread['status']} at {thread['updated_at']}",
            highlight=False,
        )
    for thread in server["pending_approvals"]:
        say(
            f"  waiting for approval: thread {thread['thread_id']} ({thread['graph']}): {_steps_line(thread)}",
            highlight=False,
        )
    nxt = server["next_run"]
    if nxt is None:
        say("  no crons: nothing is scheduled", highlight=False)
    else:
        say(
            f"  next scheduled run: {nxt['next_run_date']} ({nxt['assistant_id']}, '{nxt['schedule']}' "
            f"{nxt['timezone']}); {len(server['crons'])} cron(s)",
            highlight=False,
        )
