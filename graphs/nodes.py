"""The nodes every graph shares: `act` (the one tool-execution path) and `wait_and_retry`.

`act` fills ids from state, validates, applies policy and temporal guards, checks lost creates,
executes, and writes results back; any transient failure routes to `wait_and_retry`. One call's path (hold, fill,
validate, policy, guards, execute: `execute_call`) is in `graphs/calls.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypeVar, cast

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs.calls import (
    DEFAULT_IDS,
    OWNED_IDS,
    CallOutcome,
    Held,
    HoldArguments,
    Policy,
    allow_everything,
    allow_only,
    error_text,
    execute_call,
    fill_ids,
    hold_arguments,
    idempotency_key,
    precheck_call,
    traced_call,
)
from graphs.context import Context, Services, resolve_services
from tools import telemetry
from tools.catalog import ToolSpec
from tools.errors import (
    RateLimitedError,
    RetriesExhaustedError,
    TransportError,
    TrutoError,
)
from tools.ratelimit import checked_retry_at, retry_deadline

log = logging.getLogger(__name__)

# one tool call (graphs/calls.py): importable from here, with the nodes that run them
__all__ = [
    "DEFAULT_IDS",
    "OWNED_IDS",
    "CallOutcome",
    "Held",
    "HoldArguments",
    "Policy",
    "allow_everything",
    "allow_only",
    "error_text",
    "execute_call",
    "fill_ids",
    "hold_arguments",
    "idempotency_key",
    "precheck_call",
    "traced_call",
]
MAX_REFUSALS = 2  # a refused write gets one more try, then the graph stops with the refusal
UNAPPROVED = "was not approved by the user"  # in the refusal of a guarded call that has no approval


class RetryingState(TypedDict):
    """What `wait_and_retry` reads: the retry bookkeeping, always written by the node that routed there."""

    retry: RetryState


class ActState(TypedDict):
    """What the shared `act` node reads and writes: the state of a graph that plans tool calls has these keys, set
    by its `prepare` (`messages` is the conversation: read with `.get`, a graph's input may not carry it).

    Add `act` with `input_schema=<the graph's state>`: LangGraph hands a node only the keys of its annotation, and
    `act` also reads the ids the graph owns (team, queue, collection, session) through `ids_from_state`.
    """

    messages: NotRequired[list[AnyMessage]]
    retry: RetryState
    known_sessions: dict[str, dict[str, Any]]
    refusals: int


# `act` on a state without ActState's bookkeeping (a caller's own partial state): none kept yet
ACT_DEFAULTS: dict[str, Callable[[], Any]] = {"retry": dict, "known_sessions": dict, "refusals": lambda: 0}
S = TypeVar("S", bound=ActState)  # a graph's state, as `act` hands it to the graph's own handlers
M = TypeVar("M", bound=Mapping[str, Any])


def filled(state: M, added: Mapping[str, Callable[[], Any]]) -> M:
    """`state` with the keys a checkpoint written by an earlier version may lack set to their defaults (`added`: the
    keys a graph's `prepare` sets that an earlier `prepare` did not). A thread resumes at whichever node it stopped
    before, so each node after `prepare` that reads such a key reads its state through this first."""
    missing = {key: make() for key, make in added.items() if key not in state}
    return cast(M, {**state, **missing}) if missing else state


class RetryState(TypedDict, total=False):
    """Retry bookkeeping carried in state (checkpointed). `run` is the run that counted `attempts`."""

    run: str
    kind: Literal["rate_limit", "transient", ""]  # a 429 waits by the budget; other failures count attempts
    attempts: int
    delay: float  # a transient failure's back-off (the policy's); a 429's own Retry-After (seconds)
    retry_at: float  # a 429's: when its Retry-After / ratelimit-reset allows the retry (Unix seconds)
    reason: str
    resume: str
    unverified: list[str]
    waits: list[float]


def retry_update(
    services: Services, retry: RetryState | None, outcome: CallOutcome, call_id: str, resume: str
) -> RetryState:
    """Bookkeeping for a transient failure: attempts, the wait the policy wants, lost-write markers.

    A 429 is not an attempt: it is waited out by time (the run's rate-limit budget), however many come.
    """
    previous = RetryState(**(retry or {}))
    error = outcome.error or RuntimeError("transient failure")
    attempts = int(previous.get("attempts", 0)) + (0 if isinstance(error, RateLimitedError) else 1)
    rate_limited = isinstance(error, RateLimitedError)
    # a 429's delay is its own Retry-After (from its arrival): what bounds `retry_at` when a resumed run reads it back
    delay = (
        error.retry_after
        if isinstance(error, RateLimitedError)
        else services.toolbox.retry_policy.delay_for(error, attempts)
    )
    unverified = list(previous.get("unverified", []))
    if outcome.extra.get("may_have_written") and call_id not in unverified:
        unverified.append(call_id)
    return {
        "run": str(previous.get("run", "")),
        "attempts": attempts,
        "delay": delay,
        # kept in state (so a resumed thread still honours it): `wait_and_retry` hands it to the governor
        "retry_at": (
            retry_deadline(error.retry_after, services.clock, error.received_at)
            if isinstance(error, RateLimitedError)
            else 0.0
        ),
        "kind": "rate_limit" if rate_limited else "transient",
        "reason": _reason(error),
        "resume": resume,
        "unverified": unverified,
        "waits": list(previous.get("waits", [])),
    }


def _reason(error: BaseException) -> str:
    if isinstance(error, RateLimitedError):
        return "rate limited (429)"
    if isinstance(error, TrutoError):
        return f"upstream {error.status_code}"
    if isinstance(error, TransportError):
        return error.kind
    return type(error).__name__


def settled(retry: RetryState | None) -> RetryState:
    """After progress: attempts reset, the history of waits kept."""
    return {
        "attempts": 0,
        "delay": 0.0,
        "retry_at": 0.0,
        "kind": "",
        "reason": "",
        "resume": "",
        "unverified": [],
        "waits": list((retry or {}).get("waits", [])),
    }


def pending_tool_calls(messages: list[AnyMessage]) -> tuple[AIMessage | None, list[dict[str, Any]]]:
    """The last AI message's tool calls that have no ToolMessage answer yet."""
    answered: set[str] = set()
    for message in reversed(messages):
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
        elif isinstance(message, AIMessage):
            calls = [dict(c) for c in message.tool_calls if c.get("id") not in answered]
            return message, calls
    return None, []


IdsFromState = Callable[[Mapping[str, Any]], dict[str, Any]]


def call_fingerprint(name: str, arguments: Mapping[str, Any]) -> str:
    """The identity of one exact call (tool + canonical arguments as they will be sent): what an approval binds to.

    Computed by the graph from the filled arguments, never from the model's tool-call id.
    """
    canonical = json.dumps({"tool": name, "args": arguments}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ApprovalGate:
    """Which calls need a human, and where a graph keeps the approvals (fingerprints, each used once)."""

    needs: Callable[[ToolSpec], bool] = lambda spec: spec.needs_approval
    key: str = "approvals"

    def granted(self, state: Mapping[str, Any]) -> list[str]:
        return [str(x) for x in (state.get(self.key) or [])]


def default_ids(state: Mapping[str, Any]) -> dict[str, Any]:
    session = state.get("session") or {}
    return {
        "team_id": state.get("team_id"),
        "waiting_queue_id": state.get("waiting_queue_id"),
        "collection_id": state.get("collection_id"),
        "session_id": state.get("session_id") or session.get("session_id"),
    }


def session_facts(result: Any) -> dict[str, dict[str, Any]]:
    """Remember what we learned about sessions (phase facts only), for the temporal guards."""
    out: dict[str, dict[str, Any]] = {}
    if isinstance(result, Mapping) and result.get("session_id") and result.get("end_time"):
        out[str(result["session_id"])] = {
            k: result.get(k) for k in ("start_time", "end_time", "actual_end_time", "canceled_time")
        }
    return out


def require_approval(policy: Policy, gate: ApprovalGate, granted: list[str]) -> Policy:
    """`policy`, plus: a call the gate guards is refused unless this exact call (tool + filled arguments) was
    approved."""

    def check(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
        if gate.needs(spec) and call_fingerprint(spec.name, arguments) not in granted:
            return (
                f"Refused: {spec.name} with these arguments {UNAPPROVED}, so it was not sent. "
                "Do not retry it; tell the user what you wanted to do and why."
            )
        return policy(spec, arguments)

    return check


def make_act_node(
    *,
    on_result: Callable[[CallOutcome, S, Services], dict[str, Any]] | None = None,
    policy: Policy = allow_everything,
    after: str = "plan",
    ids_from_state: IdsFromState = default_ids,
    approved: ApprovalGate | None = None,
    hold_from_state: Callable[[ToolSpec, Mapping[str, Any], S], Held | None] | None = None,
    added: Mapping[str, Callable[[], Any]] | None = None,
) -> Callable[[S, Runtime[Context]], Coroutine[Any, Any, Command[Any]]]:
    """Build the shared `act` node for a graph: same path everywhere, graph-specific result handling.

    With `approved`, a call the gate guards runs only when its fingerprint is among the state's approvals
    (defense in depth behind a graph's approval step); an approval is used up once the call is answered.
    With `hold_from_state`, what the user gave wins over the planner's values (`Held`), whichever planner asked.
    With `added`, keys an earlier version's checkpoint may lack are filled first (`filled`).
    """

    async def act(state: S, runtime: Runtime[Context]) -> Command[Any]:
        services = await resolve_services(runtime.context)
        state = filled(state, {**ACT_DEFAULTS, **(added or {})})
        shared: ActState = state  # the keys every planning graph has (mypy reads a bound TypeVar's keys loosely)
        _, calls = pending_tool_calls(list(shared.get("messages", [])))
        retry = RetryState(**shared["retry"])
        new_messages: list[ToolMessage] = []
        update: dict[str, Any] = {}
        known = dict(shared["known_sessions"])
        refusals = shared["refusals"]
        for call in calls:
            call_id = str(call.get("id"))
            # the state as this call sees it (earlier calls of the turn applied): the graph's own type
            view = cast(S, {**state, **update})
            granted = approved.granted(view) if approved is not None else []
            call_policy = policy if approved is None else require_approval(policy, approved, granted)
            outcome = await execute_call(
                services,
                call["name"],
                call.get("args") or {},
                call_id=call_id,
                ids=ids_from_state(view),
                policy=call_policy,
                known_sessions=known,
                unverified_write=call_id in retry.get("unverified", []),
                all_pages=True,
                hold=_hold_in(hold_from_state, view),
            )
            if outcome.kind == "transient":
                return Command(
                    goto="wait_and_retry",
                    update={
                        **update,
                        "messages": new_messages,
                        "known_sessions": known,
                        "refusals": refusals,  # this turn's calls answered so far are not run again
                        "retry": retry_update(services, retry, outcome, call_id, "act"),
                    },
                )
            if outcome.kind == "refused":
                refusals += 1
            if approved is not None and outcome.spec is not None:
                fingerprint = call_fingerprint(outcome.spec.name, outcome.arguments)
                if fingerprint in granted:  # used once: the same call again needs a new approval
                    granted.remove(fingerprint)
                    update[approved.key] = granted
            status: Literal["success", "error"] = "success" if outcome.kind == "ok" else "error"
            new_messages.append(
                ToolMessage(content=outcome.text, tool_call_id=call_id, name=call["name"], status=status)
            )
            if outcome.kind == "ok":
                known.update(session_facts(outcome.result))
            if on_result is not None:
                update.update(on_result(outcome, cast(S, {**state, **update}), services))
        return Command(
            goto=after,
            update={
                **update,
                "messages": new_messages,
                "known_sessions": known,
                "refusals": refusals,
                "retry": settled(retry),
            },
        )

    return act


def _hold_in(
    hold_from_state: Callable[[ToolSpec, Mapping[str, Any], S], Held | None] | None, state: S
) -> HoldArguments | None:
    if hold_from_state is None:
        return None
    return lambda spec, arguments: hold_from_state(spec, arguments, state)


async def wait_and_retry(state: RetryingState, runtime: Runtime[Context]) -> Command[Any]:
    """Every 429 and transient failure lands here: wait what the headers/governor say, then go back.

    429s wait as long as the run's rate-limit budget allows (`RateLimitBudgetError`, exit 3, when a wait would
    not fit); other transient failures are retried up to the policy's attempt count.
    """
    services = await resolve_services(runtime.context)
    retry = RetryState(**state["retry"])
    token = runtime.context.run_token if runtime.context is not None else ""
    if retry.get("run") != token:  # a new run of this thread (a resume): its attempts start afresh
        retry["attempts"] = 1
        retry["run"] = token
    attempts = int(retry.get("attempts", 1))
    policy = services.toolbox.retry_policy
    rate_limited = retry.get("kind") == "rate_limit"
    if not rate_limited and attempts >= policy.max_attempts:
        raise RetriesExhaustedError(
            f"{retry.get('resume', 'act')} ({retry.get('reason', 'transient failure')})",
            attempts,
            RuntimeError(retry.get("reason", "transient failure")),
        )
    reason = str(retry.get("reason", ""))
    if rate_limited:  # the owner of rate limits waits: Retry-After / the account's hold, claimed from the run's budget
        delay = await services.toolbox.governor.wait_to_retry(
            services.budget,
            services.clock.sleep,
            retry_at=checked_retry_at(retry.get("retry_at"), retry.get("delay"), services.clock),
            what=f"retrying {retry.get('resume') or 'act'}",
            why=reason,
        )
    else:
        delay = float(retry.get("delay", 0.0))  # the policy's back-off, worked out when the failure was seen
        log.info("waiting %.1fs before retrying (%s, attempt %d of %d)", delay, reason, attempts, policy.max_attempts)
        with telemetry.waiting(delay, "retry", services.toolbox.governor.key, reason):
            await services.clock.sleep(delay)
    waits = [*retry.get("waits", []), round(delay, 3)][-200:]
    return Command(goto=retry.get("resume") or "act", update={"retry": {**retry, "waits": waits}})
