"""One tool call, from the planner's arguments to its outcome: hold the given values, fill the graph's ids,
validate, apply the graph's policy and the temporal guards, check a lost create, execute (`execute_call`), traced
and counted; `precheck_call` checks the same without sending.

The nodes that run calls (`act`) and wait out transient failures (`wait_and_retry`) are in `graphs/nodes.py`, which
re-exports these names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec

from graphs.context import Services
from tools import telemetry
from tools.catalog import ToolSpec
from tools.dedupe import find_created
from tools.errors import (
    ToolArgumentError,
    TrutoError,
    UnknownToolError,
    is_transient,
)
from tools.executor import render_for_model
from tools.guards import TemporalGuard
from tools.textsafety import error_record, redact

# the nodes' logger: what a call overrode, replaced or recovered is said under the same name as the rest of `act`
log = logging.getLogger("graphs.nodes")
P = ParamSpec("P")

# Ids the graph owns: always taken from state when the schema asks (the model cannot redirect them).
OWNED_IDS = ("team_id", "waiting_queue_id", "collection_id")
# Ids the planner may choose; filled from state only when the call lacks them.
DEFAULT_IDS = ("session_id",)


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
