"""The nodes every graph shares: `act` (the one tool-execution path) and `wait_and_retry`.

`act` fills ids from state, validates, applies policy and temporal guards, checks lost creates,
executes, and writes results back; any transient failure routes to `wait_and_retry`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, ParamSpec, TypeVar, cast

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12 (graph JSON schemas)

from graphs.context import Context, Services, resolve_services
from tools import telemetry
from tools.catalog import ToolSpec
from tools.dedupe import find_created
from tools.errors import (
    RateLimitedError,
    RetriesExhaustedError,
    ToolArgumentError,
    TransportError,
    TrutoError,
    UnknownToolError,
    is_transient,
)
from tools.executor import render_for_model
from tools.guards import TemporalGuard
from tools.ratelimit import checked_retry_at, retry_deadline
from tools.textsafety import error_record, redact

log = logging.getLogger(__name__)
P = ParamSpec("P")

# Ids the graph owns: always taken from state when the schema asks (the model cannot redirect them).
OWNED_IDS = ("team_id", "waiting_queue_id", "collection_id")
# Ids the planner may choose; filled from state only when the call lacks them.
DEFAULT_IDS = ("session_id",)
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


@dataclass
class CallOutcome:
    """What happened to one tool call."""

    kind: Literal["ok", "error", "refused", "transient"]
    name: str
    arguments: dict[str, Any]
    spec: ToolSpec | None = None
    result: Any = None
    text: str = ""
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""


Policy = Callable[[ToolSpec, Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class Held:
    """What a graph holds for one call, whatever its planner asked: the values the user, the settings or the run's
    input gave (the planner fills only what is missing), whether they are the whole call (the planner's other
    arguments are dropped), or why the call is not sent at all (answered to the planner as an error)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    whole: bool = False
    refusal: str | None = None


# (the tool, the planner's arguments) -> what the graph holds for that call; None: nothing held
HoldArguments = Callable[[ToolSpec, Mapping[str, Any]], "Held | None"]


def hold_arguments(
    spec: ToolSpec, arguments: Mapping[str, Any], held: Held | None, call_id: str = ""
) -> dict[str, Any]:
    """The call with the held values in place: a conflict is overridden and logged (tool, field names and the call
    id, never the values: they may be patient names); with `whole`, the planner's other arguments are dropped."""
    if held is None:
        return dict(arguments)
    kept = {key: value for key, value in held.values.items() if value is not None}
    overridden = sorted(
        key for key, value in kept.items() if arguments.get(key) not in (None, "", [], {}) and arguments[key] != value
    )
    dropped = sorted(
        key for key in arguments if held.whole and key not in kept and key not in (*OWNED_IDS, *DEFAULT_IDS)
    )
    if overridden:
        log.warning(
            "%s: the planner's %s overridden by the given value(s) (call %s)", spec.name, ", ".join(overridden), call_id
        )
    if dropped:
        log.warning(
            "%s: the planner's %s dropped: the graph sets this call (call %s)", spec.name, ", ".join(dropped), call_id
        )
    base = (
        {key: value for key, value in arguments.items() if key in (*OWNED_IDS, *DEFAULT_IDS)}
        if held.whole
        else dict(arguments)
    )
    return {**base, **kept}


def allow_everything(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
    return None


def allow_only(*names: str) -> Policy:
    """A graph's permission by tool name, whatever the tool's verb or custom method: anything else is refused.

    The audit names its three reads this way, so an account that serves a read as a custom method (POST) still
    works, and a write can never slip in under a read-looking verb.
    """
    allowed = frozenset(names)

    def check(spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
        if spec.name in allowed:
            return None
        return f"Refused: {spec.name} is not one of this graph's tools ({', '.join(sorted(allowed))})."

    return check


def fill_ids(spec: ToolSpec, arguments: Mapping[str, Any], ids: Mapping[str, Any]) -> dict[str, Any]:
    """Put the graph's ids into the call wherever the tool's schema asks for them."""
    filled = dict(arguments)
    for key in OWNED_IDS:
        if spec.wants(key) and ids.get(key):
            if filled.get(key) not in (None, "") and filled[key] != ids[key]:
                log.warning("%s: the planner's %s replaced by the run's", spec.name, key)
            filled[key] = ids[key]
    for key in DEFAULT_IDS:
        if spec.wants(key) and not filled.get(key) and ids.get(key):
            filled[key] = ids[key]
    if (
        spec.wants("id")
        and not filled.get("id")
        and spec.resource in ("sessions", "session_summaries")
        and ids.get("session_id")
    ):
        filled["id"] = ids["session_id"]
    return filled


def idempotency_key(call_id: str, arguments: Mapping[str, Any]) -> str:
    """Stable across retries and resumes of the same planned call, so Truto can dedupe too."""
    digest = hashlib.sha256(f"{call_id}|{json.dumps(arguments, sort_keys=True, default=str)}".encode())
    return digest.hexdigest()[:40]


def error_text(error: BaseException) -> str:
    """What a failed call tells the model and the state: text, secrets redacted (an upstream may echo the token)."""
    if isinstance(error, ToolArgumentError):
        text = f"Invalid arguments, nothing was sent. {error}. Fix the argument and call the tool again."
    elif isinstance(error, UnknownToolError):
        text = f"{error}. Use one of the tools you were given."
    elif isinstance(error, TrutoError):
        text = f"Error: {error.describe()}"
    else:
        text = f"Error: {error_record(error)}"
    return redact(text)


def traced_call(fn: Callable[P, Awaitable[CallOutcome]]) -> Callable[P, Awaitable[CallOutcome]]:
    """A tool call, traced and counted by outcome (`tools.telemetry`): the tool's name is the second argument."""

    @functools.wraps(fn)
    async def traced(*args: P.args, **kwargs: P.kwargs) -> CallOutcome:
        with telemetry.tool_call(str(args[1] if len(args) > 1 else kwargs.get("name"))) as call:
            outcome = await fn(*args, **kwargs)
            call.done(outcome.kind)
            return outcome

    return traced


@traced_call
async def execute_call(
    services: Services,
    name: str,
    arguments: Mapping[str, Any],
    *,
    call_id: str,
    ids: Mapping[str, Any],
    policy: Policy = allow_everything,
    known_sessions: Mapping[str, Mapping[str, Any]] | None = None,
    unverified_write: bool = False,
    extra_query: Mapping[str, Any] | None = None,
    all_pages: bool = False,
    hold: HoldArguments | None = None,
) -> CallOutcome:
    """Run one tool call through fill → validate → policy → guards → (lost-create check) → execute.

    With `all_pages`, a list call is walked to its last page by the one pager (rows de-duplicated), whatever the
    planner asked for: a queue check that read only the first page would miss waiting patients.
    """
    outcome = await _execute_call(
        services,
        name,
        arguments,
        call_id=call_id,
        ids=ids,
        policy=policy,
        known_sessions=known_sessions,
        unverified_write=unverified_write,
        extra_query=extra_query,
        all_pages=all_pages,
        hold=hold,
    )
    outcome.call_id = call_id
    return outcome


async def precheck_call(
    services: Services,
    name: str,
    arguments: Mapping[str, Any],
    *,
    call_id: str,
    ids: Mapping[str, Any],
    known_sessions: Mapping[str, Mapping[str, Any]] | None = None,
) -> CallOutcome | None:
    """What `execute_call` would refuse before sending, checked without sending anything (the guards may read the
    session): an unknown tool, invalid arguments, a write the temporal guards refuse. None when the call may go on
    (to a person's approval, then `execute_call`, which checks all of it again)."""
    return await _checked(services, name, arguments, call_id=call_id, ids=ids, known_sessions=known_sessions)


async def _checked(
    services: Services,
    name: str,
    arguments: Mapping[str, Any],
    *,
    call_id: str,
    ids: Mapping[str, Any],
    policy: Policy = allow_everything,
    known_sessions: Mapping[str, Mapping[str, Any]] | None = None,
    extra_query: Mapping[str, Any] | None = None,
    hold: HoldArguments | None = None,
    prepared_out: list[tuple[dict[str, Any], Any]] | None = None,
) -> CallOutcome | None:
    """hold → fill → validate → policy → temporal guards: the refusal (or error) of a call that must not be sent, or
    None (then `prepared_out` receives the arguments as they will be sent and the prepared call)."""
    executor = services.toolbox.executor
    try:
        spec = executor.spec(name)
    except UnknownToolError as exc:
        return CallOutcome("error", name, dict(arguments), text=error_text(exc), error=exc, call_id=call_id)
    held = hold(spec, arguments) if hold is not None else None
    if held is not None and held.refusal:
        text = redact(held.refusal)
        return CallOutcome("error", name, dict(arguments), spec, text=text, extra={"held": True}, call_id=call_id)
    args = fill_ids(spec, hold_arguments(spec, arguments, held, call_id), ids)
    try:
        _, prepared = executor.prepare(
            spec.name, args, idempotency_key=idempotency_key(call_id, args), extra_query=extra_query
        )
    except ToolArgumentError as exc:
        return CallOutcome("error", name, args, spec, text=error_text(exc), error=exc, call_id=call_id)
    if prepared_out is not None:
        prepared_out.append((args, prepared))
    refusal = policy(spec, args)
    if refusal:
        return CallOutcome("refused", name, args, spec, text=refusal, call_id=call_id)
    if spec.method in ("create", "update", "delete"):
        try:
            guard = TemporalGuard(executor, services.zone)
            refusal = await guard.check(spec, args, services.clock.now(), known_sessions)
        except Exception as exc:
            if is_transient(exc):
                return CallOutcome("transient", name, args, spec, error=exc, call_id=call_id)
            if isinstance(exc, TrutoError | ToolArgumentError):
                return CallOutcome("error", name, args, spec, text=error_text(exc), error=exc, call_id=call_id)
            raise
        if refusal:
            return CallOutcome("refused", name, args, spec, text=refusal, call_id=call_id)
    return None


async def _execute_call(
    services: Services,
    name: str,
    arguments: Mapping[str, Any],
    *,
    call_id: str,
    ids: Mapping[str, Any],
    policy: Policy,
    known_sessions: Mapping[str, Mapping[str, Any]] | None,
    unverified_write: bool,
    extra_query: Mapping[str, Any] | None,
    all_pages: bool,
    hold: HoldArguments | None,
) -> CallOutcome:
    executor = services.toolbox.executor
    prepared_out: list[tuple[dict[str, Any], Any]] = []
    stopped = await _checked(
        services,
        name,
        arguments,
        call_id=call_id,
        ids=ids,
        policy=policy,
        known_sessions=known_sessions,
        extra_query=extra_query,
        hold=hold,
        prepared_out=prepared_out,
    )
    if stopped is not None:
        return stopped
    spec = executor.spec(name)
    args, prepared = prepared_out[0]
    try:
        if unverified_write and spec.method == "create":
            try:
                existing = await find_created(executor, spec, args)
            except LookupError as exc:
                msg = f"A {name} call may have been written but its response was lost, and {exc}; not retried."
                return CallOutcome("error", name, args, spec, text=msg, error=exc)
            if existing is not None:
                log.info("lost create found on retry: %s", name)
                return CallOutcome(
                    "ok", name, args, spec, result=existing, text=render_for_model(existing), extra={"recovered": True}
                )
        if all_pages and spec.method == "list":
            rows = [row async for page, _ in executor.pages(spec.name, args) for row in page]
            result: Any = {"result": rows}
        else:
            result = await executor.send(spec, prepared)
    except Exception as exc:
        if is_transient(exc):
            written = bool(getattr(exc, "may_have_written", False)) and spec.method == "create"
            return CallOutcome("transient", name, args, spec, error=exc, extra={"may_have_written": written})
        if isinstance(exc, TrutoError | ToolArgumentError):
            return CallOutcome("error", name, args, spec, text=error_text(exc), error=exc)
        raise
    return CallOutcome("ok", name, args, spec, result=result, text=render_for_model(result))


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
