"""`coviu-agent ask REQUEST`: the assistant graph at the command line; every call that is not a list/get waits for
approval.

The pending calls are a LangChain HITLRequest (the interrupt Studio and Agent Chat UI answer too). At the command
line: a prompt per action at a terminal; else exit 4 with the request as JSON. Then `--thread-id T --yes` approves
exactly the listed calls (anything the run asks next stops again), `--no` rejects, `--decisions FILE` answers each
with approve / edit / reject.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from agent.cli.common import (
    EXIT_APPROVAL,
    EXIT_BAD_INPUT,
    check_id,
    emit_json,
    err,
    fail,
    load_settings,
    open_services,
    out,
    run_async,
)
from agent.errors import BadInput

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from agent.settings import Settings
    from graphs.context import Services

NO_LLM = (
    "the assistant needs an LLM: set OPENAI_API_KEY (for an OpenAI-compatible server such as vLLM, Ollama or "
    "LiteLLM, also set OPENAI_BASE_URL and COVIU_AGENT_MODEL)"
)
RECURSION_LIMIT = 200  # a backstop only: the graph bounds model calls per request itself
MAX_APPROVAL_ROUNDS = 50
MAX_REQUEST_CHARS = 4000

# Given the pending approval request (HITLRequest) and whether an earlier run listed it (exit 4), the decisions
# (one approve/edit/reject per action, in order), or None when nobody can answer now (exit 4).
Decide = Callable[[dict[str, Any], bool], Awaitable[list[dict[str, Any]] | None]]


@dataclass
class AskOutcome:
    """How a request ended: an answer, or calls waiting for approval on `thread_id` (a HITLRequest)."""

    thread_id: str
    answer: str = ""
    tool_calls: int = 0
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> list[dict[str, Any]]:
        return list(self.request.get("action_requests") or [])

    @property
    def needs_approval(self) -> bool:
        return bool(self.pending)

    @property
    def resume(self) -> str:
        return f"coviu-agent ask --thread-id {shlex.quote(self.thread_id)} --yes"


def pending_request(snapshot: Any) -> dict[str, Any]:
    """The approval request (HITLRequest) a paused assistant thread is waiting on; empty when none."""
    for pending in getattr(snapshot, "interrupts", ()) or ():
        value = getattr(pending, "value", None)
        if isinstance(value, dict) and value.get("action_requests"):
            return dict(value)
    return {}


def load_decisions(path: Path) -> list[dict[str, Any]]:
    """`--decisions FILE`: a HITLResponse (`{"decisions": [...]}`) or the bare list, as JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"--decisions: cannot read {path} as JSON ({type(exc).__name__})") from None
    decisions = data.get("decisions") if isinstance(data, dict) else data
    if not isinstance(decisions, list) or not all(isinstance(d, dict) for d in decisions):
        raise BadInput('--decisions: expected {"decisions": [{"type": "approve"|"edit"|"reject", ...}, ...]}')
    return decisions


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
    waiting = pending_request(await graph.aget_state(config))
    if waiting and request:
        names = ", ".join(str(a.get("name", "?")) for a in waiting["action_requests"])
        raise BadInput(
            f"thread {thread} is waiting for approval of {names}; "
            f"answer it first: `coviu-agent ask --thread-id {thread} --yes` (or --no)"
        )
    # what an earlier run showed (exit 4) and the user may now answer with --yes / --decisions; nothing else
    listed = waiting
    if not waiting:
        if not request.strip():
            raise BadInput("REQUEST: say what to do (or give --thread-id of a thread waiting for approval)")
        await graph.ainvoke({"messages": [HumanMessage(content=request)]}, config, context=context)
    for _ in range(MAX_APPROVAL_ROUNDS):
        snapshot = await graph.aget_state(config)
        waiting = pending_request(snapshot)
        if not waiting:
            answer, calls = _summarize(list(snapshot.values.get("messages", [])))
            return AskOutcome(thread, answer=answer, tool_calls=calls)
        decisions = await decide(waiting, waiting == listed) if decide is not None else None
        listed = {}  # a listed request is answered once; whatever the run asks next was never shown
        if decisions is None:
            return AskOutcome(thread, request=waiting)
        if len(decisions) != len(waiting["action_requests"]):
            raise BadInput(
                f"--decisions: {len(decisions)} decision(s) for {len(waiting['action_requests'])} pending action(s)"
            )
        await graph.ainvoke(Command(resume={"decisions": decisions}), config, context=context)
    raise BadInput(f"thread {thread}: too many approval rounds in one request")


def report_outcome(outcome: AskOutcome, *, as_json: bool) -> None:
    """Print the answer (exit 0), or the pending calls as JSON (a HITLRequest) with the resume command (exit 4)."""
    if outcome.needs_approval:
        emit_json({**outcome.request, "thread_id": outcome.thread_id, "resume": outcome.resume})
        err.print(
            f"needs approval: {len(outcome.pending)} action(s) pending; run `{outcome.resume}` to approve exactly "
            "these (or --no to reject, or --decisions FILE to approve/edit/reject each)",
            highlight=False,
        )
        raise typer.Exit(EXIT_APPROVAL)
    if as_json:
        emit_json({"answer": outcome.answer, "thread_id": outcome.thread_id, "tool_calls": outcome.tool_calls})
    else:
        out.print(outcome.answer, highlight=False)


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
            approved = await asyncio.to_thread(typer.confirm, "Approve this one?", default=False, err=True)
            answers.append({"type": "approve"} if approved else {"type": "reject"})
        return answers

    return decide


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
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default COVIU_TEAM_ID)."),
    queue_id: str | None = typer.Option(None, "--queue-id", help="Waiting queue id (default COVIU_WAITING_QUEUE_ID)."),
    collection_id: str | None = typer.Option(
        None, "--collection-id", help="Intake collection id (default COVIU_INTAKE_COLLECTION_ID)."
    ),
    recordings_dir: str = typer.Option(
        "recordings", "--recordings-dir", help="Where `coviu-agent recordings` downloads (to report local paths)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="-v: debug logs; -vv: libraries too."),
) -> None:
    """Free-form requests with every tool; anything irreversible waits for approval (exit 4 without one)."""
    try:
        if sum((yes, no, decisions_file is not None)) > 1:
            raise BadInput("--yes, --no and --decisions: give one of them")
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
    settings = load_settings(verbose, as_json)
    if settings.openai_api_key is None:
        fail(EXIT_BAD_INPUT, NO_LLM, as_json=as_json)
    decide = terminal_decider(
        yes=yes, no=no, decisions=decisions, interactive=sys.stdin.isatty() and sys.stderr.isatty()
    )

    async def body() -> AskOutcome:
        from langchain_core.exceptions import ModelAuthenticationError, ModelError, ModelNotFoundError

        from tools.errors import CoviuAgentError
        from tools.textsafety import error_record

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
            raise CoviuAgentError(f"the LLM failed: {error_record(exc)[:300]}") from None

    report_outcome(run_async(body, as_json=as_json), as_json=as_json)
