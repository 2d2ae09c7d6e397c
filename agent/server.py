"""Graphs for LangGraph Server / Studio (`langgraph.json`): compiled without a checkpointer.

Importing this module registers how graphs get their services (settings → sandbox or Truto), once per process.
"""

from __future__ import annotations

import asyncio

from agent.settings import Settings
from graphs.audit import build_audit_graph
from graphs.context import Services, set_services_provider
from graphs.triage import build_triage_graph

_services: Services | None = None
_lock = asyncio.Lock()


async def _provide() -> Services:
    global _services
    async with _lock:
        if _services is None:
            from agent.services import build_services

            _services = await build_services(Settings())
        return _services


set_services_provider(_provide)

triage = build_triage_graph().compile(name="triage")
audit = build_audit_graph().compile(name="audit").with_config({"max_concurrency": 4})
