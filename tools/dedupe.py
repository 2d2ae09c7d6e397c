"""Finding a write that may already have happened, before retrying it.

When a create's response is lost (timeout, 502/504 after the write), we look for the record first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.catalog import ToolSpec
from tools.executor import ToolExecutor
from tools.timeparse import parse_time


def _same_instant(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    pa, pb = parse_time(a), parse_time(b)
    return pa is not None and pb is not None and pa == pb


async def find_created(executor: ToolExecutor, spec: ToolSpec, arguments: Mapping[str, Any]) -> Any | None:
    """The record this create would have made, if it exists already; None if not found.

    Raises `LookupError` when this kind of record cannot be looked up (the caller must not retry blindly).
    """
    if spec.resource == "sessions" and spec.method == "create":
        lister = executor.catalog.find("sessions", "list")
        if lister is None:
            raise LookupError("no sessions list tool to check a lost session create")
        query: dict[str, Any] = {}
        for key in ("start_time", "end_time"):
            if lister.wants(key) and arguments.get(key):
                query[key] = arguments[key]
        async for page, _ in executor.pages(lister.name, query):
            for session in page:
                if (
                    isinstance(session, Mapping)
                    and session.get("session_name") == arguments.get("session_name")
                    and _same_instant(session.get("start_time"), arguments.get("start_time"))
                ):
                    return session
        return None
    if spec.resource == "participants" and spec.method == "create":
        lister = executor.catalog.find("participants", "list")
        if lister is None or not arguments.get("session_id"):
            raise LookupError("no participants list tool to check a lost participant create")
        role = str(arguments.get("role", "")).lower()
        async for page, _ in executor.pages(lister.name, {"session_id": arguments["session_id"]}):
            for participant in page:
                if (
                    isinstance(participant, Mapping)
                    and participant.get("display_name") == arguments.get("display_name")
                    and str(participant.get("role", "")).lower() == role
                ):
                    return participant
        return None
    raise LookupError(f"cannot verify whether a lost {spec.resource} {spec.method} happened")
