"""Nightly audits as LangGraph Server crons, through `langgraph_sdk`: one cron per clinic (made again, it replaces
the clinic's earlier one), listed and deleted.

The server (`langgraph dev`, `langgraph up`, or a deployment) runs the `audit` graph on the schedule, in the
clinic's time zone; each run audits yesterday. These functions do the I/O and return typed results; the CLI
(agent/cli/schedule.py) checks the flags and prints. Failures: `BadInput` when the server understood and refused
(exit 2), `ScheduleServerError` when it could not be reached or failed (exit 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.errors import BadInput
from tools.errors import CoviuAgentError

T = TypeVar("T")

DEFAULT_SERVER = "http://127.0.0.1:2024"
MARK = "coviu_agent_clinic"  # the cron's metadata key: which clinic `schedule audit` made it for
_REFUSED = {400, 404, 409, 422}  # the server understood and said no: bad input, not an outage
_IDS = ("integrated_account_id", "team_id", "collection_id")


class ScheduleServerError(CoviuAgentError):
    """The LangGraph server could not be reached, or failed (exit 3)."""


@dataclass(frozen=True)
class CronRequest:
    """One clinic's nightly audit: the assistant, the clinic's ids and zone (unset: the server's settings)."""

    assistant: str
    context: dict[str, str]
    schedule: str
    timezone: str
    keep_threads: bool = False


@dataclass
class ScheduledCron:
    """A cron on the server, as a person reads it (the next run in the clinic's zone)."""

    cron_id: str | None
    assistant_id: str | None
    clinic: str
    schedule: str | None
    timezone: str
    next_run_date: Any
    next_run_local: str | None
    context: dict[str, Any]
    on_run_completed: str | None
    server: str
    replaced: list[str] | None = None  # the crons this one replaced (only for one just made)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.replaced is None:
            del data["replaced"]
        return data


def clinic_key(assistant: str, context: dict[str, Any]) -> str:
    """One clinic's nightly audit: the assistant and the clinic's ids (unset: the server's own settings)."""
    return "|".join([assistant, *(str(context.get(k) or "") for k in _IDS)])


def clinic_label(context: dict[str, Any]) -> str:
    """The clinic a cron audits, for a person: its account and team, or the server's own settings."""
    parts = [f"{k} {context[k]}" for k in _IDS if context.get(k)]
    return ", ".join(parts) if parts else "the server's clinic (its settings)"


def next_run_local(next_run: Any, zone: str) -> str | None:
    """The next run in the clinic's time zone (the server gives UTC), e.g. `2026-12-08 06:00 AEDT`."""
    from tools.timeparse import clinic_time, known_zone, parse_time

    if not next_run:
        return None
    moment, clinic_zone = parse_time(next_run), known_zone(zone)
    if moment is None or clinic_zone is None:
        return str(next_run)
    return clinic_time(moment, clinic_zone)


def scheduled_cron(cron: dict[str, Any], server: str, replaced: list[str] | None = None) -> ScheduledCron:
    payload = cron.get("payload") or {}
    context = payload.get("context") or {}
    zone = cron.get("timezone") or payload.get("timezone") or "UTC"
    return ScheduledCron(
        cron_id=cron.get("cron_id"),
        assistant_id=cron.get("assistant_id"),
        clinic=clinic_label(context),
        schedule=cron.get("schedule"),
        timezone=zone,
        next_run_date=cron.get("next_run_date"),
        next_run_local=next_run_local(cron.get("next_run_date"), zone),
        context=context,
        on_run_completed=cron.get("on_run_completed"),
        server=server,
        replaced=replaced,
    )


async def on_server(server: str, action: str, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run `body(client)` against the server; a refusal is BadInput, anything else ScheduleServerError."""
    import httpx
    from langgraph_sdk import get_client
    from langgraph_sdk.errors import APIStatusError

    # One quick health check first: the SDK retries refused connections for several seconds.
    try:
        async with httpx.AsyncClient(timeout=5.0) as probe:
            await probe.get(f"{server}/ok")
    except httpx.TransportError as exc:
        raise ScheduleServerError(
            f"cannot reach the LangGraph server at {server} ({type(exc).__name__}: {exc})"
        ) from None
    client = get_client(url=server, timeout=30.0)
    try:
        return await body(client)
    except httpx.HTTPStatusError as exc:  # the SDK's APIStatusError, or httpx's own from `runs.wait`
        code = exc.status_code if isinstance(exc, APIStatusError) else exc.response.status_code
        detail = str(exc).strip() or exc.__class__.__name__
        hint = " (set LANGSMITH_API_KEY for a deployed server)" if code in (401, 403) else ""
        message = f"the LangGraph server refused to {action}: HTTP {code}: {detail}{hint}"
        raise (BadInput(message) if code in _REFUSED else ScheduleServerError(message)) from None
    except httpx.TransportError as exc:
        raise ScheduleServerError(f"lost the LangGraph server at {server} ({type(exc).__name__}: {exc})") from None
    finally:
        await client.aclose()


async def _create_or_replace(client: Any, request: CronRequest, *, force: bool) -> tuple[Any, list[str]]:
    """Create this clinic's cron, then delete the crons it replaces: those `schedule audit` made for the same clinic
    (its metadata says which), and with `force` also unmarked crons of the same clinic (made by hand or by an older
    version). Created first, so a failure never leaves the clinic without its nightly audit."""
    key = clinic_key(request.assistant, request.context)
    existing = [dict(c) for c in await client.crons.search(limit=1000)]

    def same_clinic(c: dict[str, Any]) -> bool:
        mark = (c.get("metadata") or {}).get(MARK)
        if mark is not None:
            return bool(mark == key)
        return force and clinic_key(request.assistant, (c.get("payload") or {}).get("context") or {}) == key

    replaced = [str(c["cron_id"]) for c in existing if same_clinic(c)]
    created = await client.crons.create(
        request.assistant,
        metadata={MARK: key},
        context=request.context or None,
        schedule=request.schedule,
        input={},
        timezone=request.timezone,
        on_run_completed="keep" if request.keep_threads else "delete",
    )
    for cron_id in replaced:
        await client.crons.delete(cron_id)
    return created, replaced


async def run_schedule_audit(server: str, requests: Sequence[CronRequest], *, force: bool) -> list[ScheduledCron]:
    """One cron per request (a clinic), each replacing that clinic's earlier one; in the order asked."""

    async def create_all(client: Any) -> list[ScheduledCron]:
        made = []
        for request in requests:
            created, replaced = await _create_or_replace(client, request, force=force)
            made.append(scheduled_cron(dict(created), server, replaced))
        return made

    return await on_server(server, "create the cron" if len(requests) == 1 else "create the crons", create_all)


async def run_schedule_list(server: str) -> list[ScheduledCron]:
    """The crons registered on the server."""

    async def search(client: Any) -> list[ScheduledCron]:
        return [scheduled_cron(dict(c), server) for c in await client.crons.search(limit=1000)]

    return await on_server(server, "list crons", search)


async def run_schedule_delete(server: str, cron_id: str) -> None:
    """Delete one cron."""

    async def delete(client: Any) -> None:
        await client.crons.delete(cron_id)

    await on_server(server, "delete the cron", delete)


@dataclass
class ServerStatus:
    """What a LangGraph server holds for `coviu-agent status`: the last thread of each graph, the threads waiting
    for approval, and its crons (soonest first)."""

    url: str
    last_threads: dict[str, dict[str, Any]]
    pending_approvals: list[dict[str, Any]]
    crons: list[ScheduledCron]

    def as_dict(self) -> dict[str, Any]:
        crons = [c.as_dict() for c in self.crons]
        return {
            "url": self.url,
            "last_threads": self.last_threads,
            "pending_approvals": self.pending_approvals,
            "crons": crons,
            "next_run": crons[0] if crons else None,
        }


def _thread(thread: dict[str, Any]) -> dict[str, Any]:
    metadata = thread.get("metadata") or {}
    return {
        "thread_id": thread.get("thread_id"),
        "graph": metadata.get("graph_id"),
        "status": thread.get("status"),
        "updated_at": str(thread.get("updated_at") or ""),
    }


async def run_server_status(server: str) -> ServerStatus:
    """Read the server's threads and crons (reads only)."""

    async def read(client: Any) -> ServerStatus:
        waiting = await client.threads.search(status="interrupted", limit=100)
        recent = await client.threads.search(limit=100, sort_by="updated_at", sort_order="desc")
        found = await client.crons.search(limit=1000)
        last: dict[str, dict[str, Any]] = {}
        for thread in recent:
            graph = str((thread.get("metadata") or {}).get("graph_id") or "?")
            last.setdefault(graph, _thread(thread))
        crons = sorted((scheduled_cron(dict(c), server) for c in found), key=lambda c: str(c.next_run_date or "~"))
        return ServerStatus(server, last, [_thread(t) for t in waiting], crons)

    return await on_server(server, "read its threads and crons", read)
