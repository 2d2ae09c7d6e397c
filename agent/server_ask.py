"""`coviu-agent ask --server URL --thread-id T`: answer an assistant thread that waits for approval on a LangGraph
server, through `langgraph_sdk` (the client `status --server` and `schedule` use).

The thread lives in the server's checkpointer, not in the CLI's state store, so the CLI's own resume cannot reach it:
the pending request (the graph's HITLRequest interrupt) is read from the thread's state, answered as at the command
line (a prompt per action at a terminal, `--yes`, `--no`, `--decisions`; else exit 4 with the request as JSON), and
the answer is sent as the run's resume value, `{"decisions": [...]}`, on the thread's own assistant (its clinic's
context). A request the resumed run asks next was never shown: it is asked again, never approved by `--yes`.
Failures as `agent.schedules`: the server refusing is exit 2, unreachable or failing exit 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.errors import BadInput
from agent.runs.ask import MAX_APPROVAL_ROUNDS, AskOutcome, Decide, summarize_thread
from agent.schedules import ScheduleServerError, on_server


def server_request(state: Mapping[str, Any]) -> dict[str, Any]:
    """The approval request (HITLRequest) a server thread's state (`threads.get_state`) waits on; empty when none."""
    interrupts = list(state.get("interrupts") or [])
    for task in state.get("tasks") or []:  # servers that list interrupts only under their task
        interrupts.extend(task.get("interrupts") or [])
    for pending in interrupts:
        value = pending.get("value") if isinstance(pending, Mapping) else None
        if isinstance(value, dict) and value.get("action_requests"):
            return dict(value)
    return {}


def _values(state: Mapping[str, Any]) -> dict[str, Any]:
    """The thread's values with its messages as LangChain messages (the server sends them as JSON)."""
    from langchain_core.messages import convert_to_messages

    values = dict(state.get("values") or {})
    values["messages"] = convert_to_messages(values.get("messages") or [])
    return values


async def run_server_ask(server: str, thread_id: str, decide: Decide) -> AskOutcome:
    """Answer the approval thread `thread_id` waits for on `server`; the outcome as `run_ask`'s (`server` set, so
    its resume command is the server's)."""
    from langgraph_sdk.errors import NotFoundError

    async def answer(client: Any) -> AskOutcome:
        try:
            thread = await client.threads.get(thread_id)
        except NotFoundError:
            raise BadInput(
                f"--thread-id {thread_id}: no such thread on the LangGraph server at {server}; nothing to approve"
            ) from None
        metadata = thread.get("metadata") or {}
        assistant = str(metadata.get("assistant_id") or metadata.get("graph_id") or "assistant")
        state = await client.threads.get_state(thread_id)
        waiting = server_request(state)
        if not waiting:
            raise BadInput(
                f"--thread-id {thread_id}: this thread on {server} is not waiting for approval (status "
                f"{thread.get('status')}); nothing to approve"
            )
        listed = waiting  # what the user has seen (exit 4, or this prompt): --yes / --decisions answer only it
        for _ in range(MAX_APPROVAL_ROUNDS):
            decisions = await decide(waiting, waiting == listed)
            listed = {}
            if decisions is None:
                summary = summarize_thread(_values(state), waiting)
                return AskOutcome(thread_id, request=waiting, server=server, **summary)
            if len(decisions) != len(waiting["action_requests"]):
                raise BadInput(
                    f"--decisions: {len(decisions)} decision(s) for {len(waiting['action_requests'])} pending action(s)"
                )
            # multitask "reject": a thread busy with another answer's run refuses this one (409, exit 2): never twice
            ran = await client.runs.wait(
                thread_id,
                assistant,
                command={"resume": {"decisions": decisions}},
                multitask_strategy="reject",
                raise_error=False,
            )
            failure = ran.get("__error__") if isinstance(ran, Mapping) else None
            if isinstance(failure, Mapping):
                raise ScheduleServerError(
                    f"the LangGraph server's run on thread {thread_id} failed: {failure.get('error')}: "
                    f"{failure.get('message')}"
                )
            state = await client.threads.get_state(thread_id)
            waiting = server_request(state)
            if waiting.get("error"):  # the graph did not understand the answer: nothing decided, the thread waits
                raise BadInput(f"--decisions: {waiting['error']}; thread {thread_id} still waits for an answer")
            if not waiting:
                return AskOutcome(thread_id, server=server, **summarize_thread(_values(state)))
        raise BadInput(f"thread {thread_id}: too many approval rounds in one request")

    return await on_server(server, "answer the thread", answer)
