"""`coviu-agent ask REQUEST`: the assistant graph at the command line, with approval for anything destructive.

Approval: `--yes`, a yes/no prompt at a terminal, or exit 4 with the pending action as JSON and a resume command.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from agent.cli import (
    EXIT_APPROVAL,
    EXIT_BAD_INPUT,
    BadInput,
    app,
    check_id,
    emit_json,
    err,
    fail,
    load_settings,
    open_services,
    out,
    run_async,
)
from agent.settings import Settings

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from graphs.context import Services

NO_LLM = (
    "the assistant needs an LLM: set OPENAI_API_KEY (for an OpenAI-compatible server such as vLLM, Ollama or "
    "LiteLLM, also set OPENAI_BASE_URL and COVIU_AGENT_MODEL)"
)
RECURSION_LIMIT = 200  # a backstop only: the graph bounds model calls per request itself
MAX_APPROVAL_ROUNDS = 50
MAX_REQUEST_CHARS = 4000

# Given the pending destructive actions: True approves, False rejects, None means "nobody can answer now".
Decide = Callable[[list[dict[str, Any]]], Awaitable[bool | None]]


@dataclass
class AskOutcome:
    """How a request ended: an answer, or actions waiting for approval on `thread_id`."""

    thread_id: str
    answer: str = ""
    tool_calls: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)

    @property
    def needs_approval(self) -> bool:
        return bool(self.pending)

    @property
    def resume(self) -> str:
        return f"coviu-agent ask --thread-id {shlex.quote(self.thread_id)} --yes"


def pending_actions(snapshot: Any) -> list[dict[str, Any]]:
    """The destructive calls a paused assistant thread is waiting on (from its interrupts)."""
    actions: list[dict[str, Any]] = []
    for pending in getattr(snapshot, "interrupts", ()) or ():
        value = getattr(pending, "value", None)
        if isinstance(value, dict):
            actions.extend(dict(a) for a in value.get("pending") or [])
    return actions


def _summarize(messages: list[Any]) -> tuple[str, int]:
    """(the last answer, tool calls made since the last user message)."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    answer = ""
    calls = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            calls += 1
        elif isinstance(message, AIMessage) and not answer and not message.tool_calls:
            answer = message.text if hasattr(message, "text") else str(message.content)
    return answer, calls


async def run_ask(
    settings: Settings,
    request: str,
    *,
    services: Services | None = None,
    thread_id: str | None = None,
    decide: Decide | None = None,
    team_id: str | None = None,
    waiting_queue_id: str | None = None,
    collection_id: str | None = None,
    recordings_dir: Path | None = None,
    checkpointer: BaseCheckpointSaver[str] | None = None,
) -> AskOutcome:
    """Run (or resume) one request on the assistant graph. Tests inject `services` (with a fake model)."""
    own_services = services is None
    if services is None:
        if settings.openai_api_key is None:
            raise BadInput(NO_LLM)
        services = await open_services(settings)
    try:
        if services.model is None:
            raise BadInput(NO_LLM)
        if recordings_dir is not None and services.toolbox.executor.binary_locator is None:
            from tools.recordings import DownloadIndex

            services.toolbox.executor.binary_locator = DownloadIndex(recordings_dir)
        if checkpointer is not None:
            return await _run(
                services, request, checkpointer, thread_id, decide, team_id, waiting_queue_id, collection_id
            )
        from agent.checkpoint import open_checkpointer

        async with open_checkpointer(settings.state) as saver:
            return await _run(services, request, saver, thread_id, decide, team_id, waiting_queue_id, collection_id)
    finally:
        if own_services:
            await services.toolbox.aclose()


async def _run(
    services: Services,
    request: str,
    saver: BaseCheckpointSaver[str],
    thread_id: str | None,
    decide: Decide | None,
    team_id: str | None,
    waiting_queue_id: str | None,
    collection_id: str | None,
) -> AskOutcome:
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.types import Command

    from graphs.assistant import compile_assistant
    from graphs.context import Context

    thread = thread_id or f"ask:{uuid.uuid4()}"
    graph = compile_assistant(saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": RECURSION_LIMIT}
    context = Context(
        team_id=team_id, waiting_queue_id=waiting_queue_id, collection_id=collection_id, services=services
    )
    waiting = pending_actions(await graph.aget_state(config))
    if waiting and request:
        raise BadInput(
            f"thread {thread} is waiting for approval of {', '.join(a.get('tool', '?') for a in waiting)}; "
            f"answer it first: `coviu-agent ask --thread-id {thread} --yes` (or --no)"
        )
    if not waiting:
        if not request.strip():
            raise BadInput("REQUEST: say what to do (or give --thread-id of a thread waiting for approval)")
        await graph.ainvoke({"messages": [HumanMessage(content=request)]}, config, context=context)
    for _ in range(MAX_APPROVAL_ROUNDS):
        snapshot = await graph.aget_state(config)
        waiting = pending_actions(snapshot)
        if not waiting:
            answer, calls = _summarize(list(snapshot.values.get("messages", [])))
            return AskOutcome(thread, answer=answer, tool_calls=calls)
        decision = await decide(waiting) if decide is not None else None
        if decision is None:
            return AskOutcome(thread, pending=waiting)
        await graph.ainvoke(Command(resume={"approved": decision}), config, context=context)
    raise BadInput(f"thread {thread}: too many approval rounds in one request")


def report_outcome(outcome: AskOutcome, *, as_json: bool) -> None:
    """Print the answer (exit 0), or the pending actions as JSON with the resume command (exit 4)."""
    if outcome.needs_approval:
        emit_json({"pending": outcome.pending, "thread_id": outcome.thread_id, "resume": outcome.resume})
        err.print(
            f"needs approval: {len(outcome.pending)} irreversible action(s) pending; run `{outcome.resume}` "
            "to approve (or --no to reject)",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_APPROVAL)
    if as_json:
        emit_json({"answer": outcome.answer, "thread_id": outcome.thread_id, "tool_calls": outcome.tool_calls})
    else:
        out.print(outcome.answer, highlight=False, markup=False)


def terminal_decider(*, yes: bool, no: bool, interactive: bool) -> Decide:
    """--yes / --no decide; otherwise ask at a terminal; with neither, nobody can answer (exit 4)."""

    async def decide(pending: list[dict[str, Any]]) -> bool | None:
        if yes:
            return True
        if no:
            return False
        if not interactive:
            return None
        err.print("The assistant wants to do something irreversible:", highlight=False, markup=False)
        for action in pending:
            err.print(f"  - {action.get('action')}: {action.get('tool')} {action.get('arguments')}", markup=False)
        return bool(await asyncio.to_thread(typer.confirm, "Approve?", default=False, err=True))

    return decide


@app.command()
def ask(
    request: str = typer.Argument("", help="What to do, e.g. 'Billable minutes for session S'."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve cancelling/deleting without asking."),
    no: bool = typer.Option(False, "--no", help="Reject any cancel/delete the assistant asks for."),
    thread_id: str | None = typer.Option(
        None, "--thread-id", help="Continue this conversation, or resume one waiting for approval."
    ),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default COVIU_TEAM_ID)."),
    queue_id: str | None = typer.Option(None, "--queue-id", help="Waiting queue id (default COVIU_WAITING_QUEUE_ID)."),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id (default COVIU_INTAKE_COLLECTION_ID)."
    ),
    recordings_dir: str = typer.Option(
        "recordings", "--recordings-dir", help="Where `coviu-agent recordings` downloads (to report local paths)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """Free-form requests with every tool; anything irreversible waits for approval (exit 4 without one)."""
    try:
        if yes and no:
            raise BadInput("--yes and --no: give one of them")
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
    settings = load_settings(verbose, as_json)
    if settings.openai_api_key is None:
        fail(EXIT_BAD_INPUT, NO_LLM, as_json=as_json)
    decide = terminal_decider(yes=yes, no=no, interactive=sys.stdin.isatty() and sys.stderr.isatty())

    async def body() -> AskOutcome:
        from langchain_core.exceptions import ModelAuthenticationError, ModelError, ModelNotFoundError

        from tools.errors import CoviuAgentError

        try:
            return await run_ask(
                settings,
                request,
                thread_id=thread_id,
                decide=decide,
                team_id=team_id,
                waiting_queue_id=queue_id,
                collection_id=collection_id,
                recordings_dir=Path(recordings_dir),
            )
        except (ModelAuthenticationError, ModelNotFoundError) as exc:
            raise BadInput(
                f"the LLM refused the configuration ({type(exc).__name__}): check OPENAI_API_KEY, "
                "OPENAI_BASE_URL and COVIU_AGENT_MODEL"
            ) from None
        except ModelError as exc:  # after the openai SDK's own retries
            raise CoviuAgentError(f"the LLM failed ({type(exc).__name__}): {str(exc)[:300]}") from None

    report_outcome(run_async(body, as_json=as_json), as_json=as_json)
