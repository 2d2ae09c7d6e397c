"""The assistant run (`coviu-agent ask`): a request on the assistant graph, its approval rounds (`Decide`) and
its outcomes (`AskOutcome`: what was done, refused, failed or waits for approval, and the exit code).
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import EXIT_APPROVAL, EXIT_INCOMPLETE, EXIT_OK, BadInput
from agent.runs.base import _services_and_saver, dry_run_meets_interrupted, observed

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from agent.settings import Settings
    from graphs.context import Context, Services


NO_LLM = (
    "the assistant needs an LLM: set OPENAI_API_KEY (for an OpenAI-compatible server such as vLLM, Ollama or "
    "LiteLLM, also set OPENAI_BASE_URL and COVIU_AGENT_MODEL)"
)
ASK_RECURSION_LIMIT = 200  # a backstop only: the graph bounds model calls per request itself
MAX_APPROVAL_ROUNDS = 50

# Given the pending approval request (HITLRequest) and whether an earlier run listed it (exit 4), the decisions
# (one approve/edit/reject per action, in order), or None when nobody can answer now (exit 4).
Decide = Callable[[dict[str, Any], bool], Awaitable[list[dict[str, Any]] | None]]


FAILED_STATUSES = ("refused", "failed", "not_attempted")
MAX_NOTE_CHARS = 4000  # the model's note as printed and returned


def _target(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What an action acts on: the ids among its arguments (`id`, `session_id`, `team_id`, ...)."""
    arguments = entry.get("arguments") or {}
    return {k: v for k, v in arguments.items() if k == "id" or k.endswith("_id")}


# Verbs in a made-up tool name that say it was meant to change the account (`cancel_coviu_session`, `addGuest`).
_CHANGE_VERBS = ("create", "delete", "update", "cancel", "remove", "add", "edit", "set", "reschedule", "move", "send")


def _sounds_like_change(entry: Mapping[str, Any]) -> bool:
    name = str(entry.get("tool") or "")
    words = "_".join(name.split()).replace("-", "_")
    words = "".join(f"_{c.lower()}" if c.isupper() else c for c in words).lower()
    return any(word in _CHANGE_VERBS for word in words.split("_"))


def answer_command(thread_id: str, server: str | None = None) -> str:
    """The command that shows what a thread waits for approval of and asks it again (at a terminal; else the request
    as JSON, exit 4); add --yes or --no to decide. `server`: the LangGraph server holding the thread, for a thread
    that is not in this state store ("URL" when not known)."""
    where = f"--server {shlex.quote(server)} " if server else ""
    return f"coviu-agent ask {where}--thread-id {shlex.quote(thread_id)}"


@dataclass
class AskOutcome:
    """How a request ended: one outcome per call the model asked for (from the tool results) and the model's note,
    or calls waiting for approval on `thread_id` (a HITLRequest). `server`: the LangGraph server holding the thread
    (`coviu-agent ask --server`), None for this state store's."""

    thread_id: str
    note: str = ""
    tool_calls: int = 0
    request: dict[str, Any] = field(default_factory=dict)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    server: str | None = None

    @property
    def pending(self) -> list[dict[str, Any]]:
        return list(self.request.get("action_requests") or [])

    @property
    def needs_approval(self) -> bool:
        return bool(self.pending)

    @property
    def unfinished(self) -> list[dict[str, Any]]:
        """Actions that were refused, failed or not attempted, less those the model made good later in the request:
        a later call of the same tool on the same target that was done (it corrected an invalid argument or a
        refused start time), or, for a call of a tool that does not exist, any later call that was done. The target
        is every id the call names (`id`, `session_id`, ...): a link done in one session never makes good a link
        refused in another."""
        out = []
        for i, entry in enumerate(self.outcomes):
            if entry.get("status") not in FAILED_STATUSES:
                continue
            target = _target(entry)
            done = [o for o in self.outcomes[i + 1 :] if o.get("status") == "done"]
            if entry.get("unknown_tool") and any(o.get("change") or not _sounds_like_change(entry) for o in done):
                continue  # a made-up name for a change is made good only by a change done, never by a read
            same_tool = [o for o in done if o.get("tool") == entry.get("tool")]
            if entry.get("sent") is False and not entry.get("arguments") and same_tool:
                continue  # unparsable arguments (no target known), then the same tool done
            if any(_target(o) == target for o in same_tool):
                continue
            out.append(entry)
        return out

    @property
    def exit_code(self) -> int:
        """0 every action the model asked for was done (or rejected by the person); 4 changes wait for approval;
        5 an action was refused (by Coviu or its rules), failed or was not attempted (`unfinished`)."""
        if self.needs_approval:
            return EXIT_APPROVAL
        return EXIT_INCOMPLETE if self.unfinished else EXIT_OK

    @property
    def resume(self) -> str:
        return f"{answer_command(self.thread_id, self.server)} --yes"

    def as_dict(self) -> dict[str, Any]:
        """`ask --json` when the request ended (not waiting for approval)."""
        return {
            "thread_id": self.thread_id,
            "outcomes": self.outcomes,
            "note": self.note,
            "tool_calls": self.tool_calls,
            "exit_code": self.exit_code,
        }


def pending_request(snapshot: Any) -> dict[str, Any]:
    """The approval request (HITLRequest) a paused assistant thread is waiting on; empty when none."""
    for pending in getattr(snapshot, "interrupts", ()) or ():
        value = getattr(pending, "value", None)
        if isinstance(value, dict) and value.get("action_requests"):
            return dict(value)
    return {}


def summarize_thread(values: Mapping[str, Any], request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The request's outcomes (pending approvals added as not_attempted), the model's last text (its note) and the
    number of tool calls answered since the last user message."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    note = ""
    calls = 0
    for message in reversed(list(values.get("messages", []))):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            calls += 1
        elif isinstance(message, AIMessage) and not note and not message.tool_calls:
            note = message.text if hasattr(message, "text") else str(message.content)
    if len(note) > MAX_NOTE_CHARS:  # a model that rambles: the outcomes above say what happened
        note = f"{note[:MAX_NOTE_CHARS]}… [{len(note) - MAX_NOTE_CHARS} more characters of the model's note cut]"
    outcomes = [dict(o) for o in values.get("outcomes") or []]
    for action in (request or {}).get("action_requests") or []:
        outcomes.append(
            {
                "tool": action.get("name"),
                "change": True,
                "arguments": dict(action.get("args") or {}),
                "status": "not_attempted",
                "reason": "waiting for approval",
            }
        )
    return {"note": note, "tool_calls": calls, "outcomes": outcomes}


@observed("assistant")
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
    dry_run: bool = False,
) -> AskOutcome:
    """Run (or resume) one request on the assistant graph. Tests inject `services` (with a fake model).

    `dry_run` is the command's, never the thread's: no decision is taken (the first change stops the run, and is
    the plan), and a thread interrupted mid-run (not at an approval) is not resumed (BadInput, nothing sent).

    `recordings_dir`: where `coviu-agent recordings` downloads, so binary tools report local paths (for services
    opened here; injected ones come with their own). The LLM refusing the configuration is bad input; the LLM
    failing after its retries is an upstream failure (tools.errors.model_failure, the one mapping)."""
    from agent.threadlock import thread_lock
    from graphs.context import Context

    if services is None and not settings.llm_configured:
        raise BadInput(NO_LLM)
    async with _services_and_saver(settings, services, checkpointer, recordings_dir=recordings_dir) as (svc, saver):
        if svc.model is None:
            raise BadInput(NO_LLM)
        context = Context(team_id=team_id, waiting_queue_id=waiting_queue_id, collection_id=collection_id, services=svc)
        thread = thread_id or f"ask:{uuid.uuid4()}"
        async with thread_lock(settings.state, thread, svc.clock, wait_seconds=settings.thread_lock_wait_seconds):
            return await _ask(
                context,
                saver,
                request,
                thread,
                None if dry_run else decide,
                dry_run=dry_run,
                thread_given=thread_id is not None,
            )


def _nothing_to_approve(thread: str, snapshot: Any) -> str:
    """`ask --thread-id T --yes|--no|--decisions` with no REQUEST, on a thread that waits for nothing."""
    if not getattr(snapshot, "values", None):
        return (
            f"--thread-id {thread}: no such conversation in this state store (COVIU_AGENT_STATE); nothing to "
            "approve. Check the id printed by the run that stopped for approval (a LangGraph server's thread: "
            f"`{answer_command(thread, 'URL')}`)"
        )
    return (
        f"--thread-id {thread}: this conversation is not waiting for approval (its last request has finished); "
        f"nothing to approve. To continue it, give a new REQUEST: coviu-agent ask --thread-id {thread} '...'"
    )


async def _ask(
    context: Context,
    saver: BaseCheckpointSaver[str],
    request: str,
    thread: str,
    decide: Decide | None,
    *,
    dry_run: bool = False,
    thread_given: bool = False,
) -> AskOutcome:
    from langchain_core.messages import HumanMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.types import Command

    from graphs.assistant import compile_assistant

    graph = compile_assistant(saver)
    config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": ASK_RECURSION_LIMIT}
    snapshot = await graph.aget_state(config)
    waiting = pending_request(snapshot)
    if dry_run and snapshot.next and not waiting:
        raise BadInput(dry_run_meets_interrupted("ask", thread))
    if waiting and request:
        names = ", ".join(str(a.get("name", "?")) for a in waiting["action_requests"])
        raise BadInput(
            f"thread {thread} is waiting for approval of {names}; "
            f"answer it first: `coviu-agent ask --thread-id {thread} --yes` (or --no)"
        )
    # what an earlier run showed (exit 4) and the user may now answer with --yes / --decisions; nothing else
    listed = waiting
    if not waiting:
        if not request.strip() and thread_given:
            raise BadInput(_nothing_to_approve(thread, await graph.aget_state(config)))
        if not request.strip():
            raise BadInput("REQUEST: say what to do (or give --thread-id of a thread waiting for approval)")
        await graph.ainvoke({"messages": [HumanMessage(content=request)]}, config, context=context)
    for _ in range(MAX_APPROVAL_ROUNDS):
        snapshot = await graph.aget_state(config)
        waiting = pending_request(snapshot)
        if not waiting:
            return AskOutcome(thread, **summarize_thread(snapshot.values))
        decisions = await decide(waiting, waiting == listed) if decide is not None else None
        listed = {}  # a listed request is answered once; whatever the run asks next was never shown
        if decisions is None:
            return AskOutcome(thread, request=waiting, **summarize_thread(snapshot.values, waiting))
        if len(decisions) != len(waiting["action_requests"]):
            raise BadInput(
                f"--decisions: {len(decisions)} decision(s) for {len(waiting['action_requests'])} pending action(s)"
            )
        await graph.ainvoke(Command(resume={"decisions": decisions}), config, context=context)
        refused = pending_request(await graph.aget_state(config)).get("error")
        if refused:  # the graph did not understand the answer: nothing decided, the thread still waits for one
            raise BadInput(f"--decisions: {refused}; thread {thread} still waits for an answer")
    raise BadInput(f"thread {thread}: too many approval rounds in one request")
