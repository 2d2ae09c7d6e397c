"""`coviu-agent ask REQUEST`: the assistant graph at the command line; every call that is not a list/get waits for
approval.

The pending calls are a LangChain HITLRequest (the interrupt Studio and Agent Chat UI answer too). At the command
line: a prompt per action at a terminal; else exit 4 with the request as JSON. Then `--thread-id T --yes` approves
exactly the listed calls (anything the run asks next stops again), `--no` rejects, `--decisions FILE` answers each
with approve / edit / reject. A thread of a LangGraph server is answered the same way with `--server URL`
(`agent.server_ask`): the CLI's own state store does not hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, emit_json, err, fail, load_settings, out, run_async
from agent.errors import EXIT_BAD_INPUT, BadInput
from agent.runs import NO_LLM, AskOutcome, Decide, run_ask
from agent.runs.ask import answer_command

MAX_REQUEST_CHARS = 4000


def load_decisions(path: Path) -> list[dict[str, Any]]:
    """`--decisions FILE`: a HITLResponse (`{"decisions": [...]}`) or the bare list, as JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"--decisions: cannot read {path} as JSON ({type(exc).__name__})") from None
    decisions = data.get("decisions") if isinstance(data, dict) else data
    if not isinstance(decisions, list) or not decisions:
        raise BadInput('--decisions: expected {"decisions": [{"type": "approve"|"edit"|"reject", ...}, ...]}')
    from graphs.assistant import DecisionError, check_decision

    try:  # each one a HITL decision: what the user meant is never dropped (nor read as a reject)
        return [check_decision(i, d) for i, d in enumerate(decisions)]
    except DecisionError as exc:
        raise BadInput(f"--decisions: {path}: {exc}") from None


def outcome_lines(outcomes: list[dict[str, Any]]) -> list[str]:
    """One line per action: status, tool and target, then what came back (ids and entry URLs) or why not."""
    lines = []
    for entry in outcomes:
        target = entry.get("arguments", {}).get("id")
        head = f"{entry.get('status', '?'):<13} {entry.get('tool')}" + (f" ({target})" if target else "")
        details = [f"{k}={v}" for k, v in (entry.get("ids") or {}).items()]
        details += list(entry.get("entry_urls") or [])
        if entry.get("reason"):
            details.append(str(entry["reason"]))
        lines.append(f"  {head}" + (f": {'; '.join(details)}" if details else ""))
    return lines


def report_outcome(outcome: AskOutcome, *, as_json: bool, dry_run: bool = False) -> None:
    """The outcomes (one per action, from the tool results) then the model's note; or the pending calls as JSON
    (a HITLRequest) with the resume command (exit 4). Exit code: `AskOutcome.exit_code` (0, 4 or 5).

    With `dry_run`, the pending calls are the plan: printed (text, or JSON with `"dry_run": true` under --json),
    exit 0, nothing changed.
    """
    if outcome.needs_approval and dry_run:
        if as_json:
            emit_json(
                {
                    **outcome.request,
                    "dry_run": True,
                    "thread_id": outcome.thread_id,
                    "resume": outcome.resume,
                    "outcomes": outcome.outcomes,
                }
            )
        else:
            out.print(f"Dry run: {len(outcome.pending)} change(s) planned, none sent:", highlight=False)
            for action in outcome.pending:
                args = json.dumps(action.get("args"), ensure_ascii=False, sort_keys=True)
                out.print(f"  - {action.get('description')}", highlight=False)
                out.print(f"    {action.get('name')} {args}", highlight=False)
        err.print(
            f"dry run: {len(outcome.pending)} change(s) planned and none sent; to make exactly these, run "
            f"`{outcome.resume}`",
            highlight=False,
        )
        return
    if outcome.needs_approval:
        emit_json(
            {**outcome.request, "thread_id": outcome.thread_id, "resume": outcome.resume, "outcomes": outcome.outcomes}
        )
        err.print(
            f"needs approval: {len(outcome.pending)} action(s) pending; run `{outcome.resume}` to approve exactly "
            "these (or --no to reject, or --decisions FILE to approve/edit/reject each)",
            highlight=False,
        )
        raise typer.Exit(outcome.exit_code)
    if as_json:
        emit_json(outcome.as_dict())
    else:
        if outcome.outcomes:
            out.print("Outcomes (from the tool results):", highlight=False)
            for line in outcome_lines(outcome.outcomes):
                out.print(line, highlight=False)
        else:
            out.print("Outcomes: no tool was called; nothing was read or changed.", highlight=False)
        if outcome.note:
            out.print(f"Note from the model: {outcome.note}", highlight=False)
    if outcome.exit_code:
        unfinished = len(outcome.unfinished)
        err.print(f"incomplete: {unfinished} action(s) not done (see the outcomes)", highlight=False)
        raise typer.Exit(outcome.exit_code)


def terminal_decider(
    *, yes: bool, no: bool, interactive: bool, decisions: list[dict[str, Any]] | None = None
) -> Decide:
    """--no rejects everything; --yes and --decisions answer only the request an earlier run listed (exit 4);
    otherwise each action is asked at a terminal; with none of these, nobody can answer (exit 4)."""

    async def decide(request: dict[str, Any], listed: bool) -> list[dict[str, Any]] | None:
        actions = list(request.get("action_requests") or [])
        if no:
            return [{"type": "reject", "message": "rejected with --no"} for _ in actions]
        if decisions is not None and listed:
            return decisions
        if yes and listed:
            return [{"type": "approve"} for _ in actions]
        if not interactive:
            return None
        answers: list[dict[str, Any]] = []
        err.print("The assistant wants to change the account:", highlight=False)
        for action in actions:
            args = json.dumps(action.get("args"), ensure_ascii=False, sort_keys=True)
            err.print(f"  - {action.get('description')}: {action.get('name')} {args}", highlight=False)
            try:
                approved = await confirm("Approve this one? [y/N]: ")
            except (asyncio.CancelledError, KeyboardInterrupt, EOFError):
                decide.prompted = True  # type: ignore[attr-defined]  # the thread waits: say how to answer it
                raise
            answers.append({"type": "approve"} if approved else {"type": "reject"})
        return answers

    decide.prompted = False  # type: ignore[attr-defined]
    return decide


def _settle(future: asyncio.Future[bytes], line: bytes) -> None:
    if not future.done():  # cancelled by Ctrl-C: nobody waits for the line
        future.set_result(line)


async def confirm(question: str) -> bool:
    """A yes/no question at the terminal (default no) that Ctrl-C ends at once.

    The answer is read from stdin's file descriptor in a daemon thread: a thread of asyncio's executor
    (`asyncio.to_thread`) would hold `asyncio.run`'s shutdown until Enter was pressed, and a thread blocked in
    `sys.stdin`'s buffered reader would hold its lock at interpreter exit. End of input is no answer (EOFError).
    """
    import os
    import threading

    loop = asyncio.get_running_loop()
    while True:
        sys.stderr.write(question)
        sys.stderr.flush()
        answered: asyncio.Future[bytes] = loop.create_future()

        def read(future: asyncio.Future[bytes] = answered) -> None:
            try:
                line = os.read(sys.stdin.fileno(), 1024)
            except OSError:
                line = b""
            with contextlib.suppress(RuntimeError):  # the loop has closed (Ctrl-C came first)
                loop.call_soon_threadsafe(_settle, future, line)

        threading.Thread(target=read, name="approval-prompt", daemon=True).start()
        line = await answered
        if not line:
            raise EOFError("no answer at the approval prompt")
        reply = line.decode("utf-8", "replace").strip().lower()
        if reply in ("y", "yes"):
            return True
        if reply in ("", "n", "no"):
            return False
        sys.stderr.write("Please answer y or n.\n")


def unanswered_message(thread: str, server: str | None = None) -> str:
    """What a Ctrl-C at the approval prompt leaves: the thread waits; how to answer it later."""
    return (
        f"interrupted: the pending action(s) wait for an answer on thread {thread}; answer them later with "
        f"`{answer_command(thread, server)}` (asks again), `--yes` or `--no`"
    )


def _answer_on_server(server: str, thread: str, decide: Decide, as_json: bool) -> None:
    """`ask --server URL --thread-id T`: the server thread's pending request, answered as at the command line."""
    from agent.server_ask import run_server_ask

    def unanswered() -> str | None:
        return unanswered_message(thread, server) if getattr(decide, "prompted", False) else None

    outcome = run_async(lambda: run_server_ask(server, thread, decide), as_json=as_json, interrupted=unanswered)
    report_outcome(outcome, as_json=as_json)


def ask(
    request: str = typer.Argument("", help="What to do, e.g. 'Billable minutes for session S'."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Approve exactly the actions the previous run listed (exit 4); nothing new."
    ),
    no: bool = typer.Option(False, "--no", help="Reject every action the assistant asks approval for."),
    decisions_file: str | None = typer.Option(
        None,
        "--decisions",
        help='JSON {"decisions": [{"type": "approve"|"edit"|"reject", ...}]}, one per listed action (exit 4 output).',
    ),
    thread_id: str | None = typer.Option(
        None, "--thread-id", help="Continue this conversation, or resume one waiting for approval."
    ),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id.  [env var: COVIU_TEAM_ID]"),
    queue_id: str | None = typer.Option(
        None, "--queue-id", help="Waiting queue id.  [env var: COVIU_WAITING_QUEUE_ID]"
    ),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id.  [env var: COVIU_INTAKE_COLLECTION_ID]"
    ),
    recordings_dir: str = typer.Option(
        "recordings", "--recordings-dir", help="Where `coviu-agent recordings` downloads (to report local paths)."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Plan: reads are sent, every change is printed (with the command that would make it), none is sent.",
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        help="A LangGraph server's URL: answer its thread --thread-id that waits for approval (no REQUEST).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Free-form requests with every tool; anything irreversible waits for approval (exit 4 without one)."""
    try:
        if sum((yes, no, decisions_file is not None, dry_run)) > 1:
            raise BadInput("--yes, --no, --decisions and --dry-run: give one of them")
        if server is not None:
            from agent.cli.schedule import check_server

            server = check_server(server)
            if request.strip() or not thread_id or dry_run or team_id or queue_id or collection_id:
                raise BadInput(
                    "--server: answers a server thread that waits for approval: give --thread-id T (and --yes, --no "
                    "or --decisions FILE); no REQUEST, --dry-run or ids (the thread's assistant has the clinic's)"
                )
        decisions = load_decisions(Path(decisions_file)) if decisions_file is not None else None
        if len(request) > MAX_REQUEST_CHARS:
            raise BadInput(f"REQUEST: expected at most {MAX_REQUEST_CHARS} characters")
        if not request.strip() and not thread_id:
            raise BadInput("REQUEST: say what to do (or give --thread-id of a thread waiting for approval)")
        check_id("--thread-id", thread_id)
        check_id("--team-id", team_id)
        check_id("--queue-id", queue_id)
        check_id("--collection-id", collection_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if server is not None and thread_id is not None:  # the server's model and account answer it: none needed here
        load_settings(-1 if quiet else verbose, as_json, needs_truto=False)
        _answer_on_server(
            server, thread_id, terminal_decider(yes=yes, no=no, decisions=decisions, interactive=interactive), as_json
        )
        return
    settings = load_settings(-1 if quiet else verbose, as_json)
    if not settings.llm_configured:
        fail(EXIT_BAD_INPUT, NO_LLM, as_json=as_json)
    # a dry run answers no approval (no prompt either): the run stops at the first change, which is the plan
    decide = None if dry_run else terminal_decider(yes=yes, no=no, decisions=decisions, interactive=interactive)

    thread = thread_id or f"ask:{uuid.uuid4()}"  # known here, so an interrupted prompt can name it

    def unanswered() -> str | None:
        if decide is None or not getattr(decide, "prompted", False):
            return None
        return unanswered_message(thread)

    outcome = run_async(
        lambda: run_ask(
            settings,
            request,
            thread_id=thread,
            decide=decide,
            team_id=team_id,
            waiting_queue_id=queue_id,
            collection_id=collection_id,
            recordings_dir=Path(recordings_dir),
            dry_run=dry_run,
        ),
        as_json=as_json,
        interrupted=unanswered,
    )
    report_outcome(outcome, as_json=as_json, dry_run=dry_run)
