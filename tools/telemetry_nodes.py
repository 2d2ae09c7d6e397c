"""A span for each LangGraph node while a run is traced (`tools.telemetry.run`): a LangChain callback handler.

LangGraph announces each node to the callback handlers (`on_chain_start` with `metadata["langgraph_node"]`), but
not in the context that runs the node, so the node's span cannot simply be made current there. Instead a span
opened inside a node while the run's span is current (a tool call, a wait) finds its node through LangChain's own
record of the running node (the child config's `parent_run_id`): `parent_context`. Imported only when tracing is on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode, Tracer

_HOOKED: list[ContextVar[Any]] = []


def hook(var: ContextVar[Any]) -> None:
    """Have LangChain add the handler in `var` (when set) to every run's callbacks, like its own tracers."""
    if var in _HOOKED:
        return
    from langchain_core.tracers.context import register_configure_hook

    register_configure_hook(var, inheritable=True)
    _HOOKED.append(var)


class NodeSpans(AsyncCallbackHandler):
    """Opens a span when a graph node starts and ends it when the node ends (by type only when it fails)."""

    run_inline = True  # awaited in the caller's context: the span it attaches is current inside the node

    def __init__(self, tracer: Tracer | None, clean: Callable[[Mapping[str, object]], Mapping[str, Any]]) -> None:
        self.tracer = tracer
        self.clean = clean  # `tools.telemetry.safe_attributes`: ids and counts only
        self.open: dict[UUID, trace.Span] = {}

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        node = (metadata or {}).get("langgraph_node")
        if self.tracer is None or not node or kwargs.get("name") != node:
            return  # only the node itself, not the runnables inside it
        attributes = self.clean({"langgraph.node": node, "langgraph.step": (metadata or {}).get("langgraph_step")})
        run = self.open.get(parent_run_id) if parent_run_id is not None else None  # a run `add_run` keeps, or none:
        parent = trace.set_span_in_context(run) if run is not None else None  # the current span (the CLI's run's)
        self.open[run_id] = self.tracer.start_span(f"node {node}", context=parent, attributes=attributes)

    def add_run(self, run_id: UUID, run_span: trace.Span) -> None:
        """The root span of a run made current nowhere (a server run's): its nodes' spans are its children."""
        self.open[run_id] = run_span

    def drop_run(self, run_id: UUID) -> None:
        self.open.pop(run_id, None)

    def _close(self, run_id: UUID, error: BaseException | None) -> None:
        node_span = self.open.pop(run_id, None)
        if node_span is None:
            return
        if error is not None and type(error).__name__ not in ("GraphInterrupt", "ParentCommand"):
            node_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            node_span.set_attribute("error.type", type(error).__name__)
        node_span.end()

    def parent_context(self, run_span: trace.Span | None) -> context.Context | None:
        """The context of the node running here, when the run's own span is current (else None: the current span,
        a tool call's or a wait's, is the parent)."""
        current = trace.get_current_span()
        if current is not trace.INVALID_SPAN and (run_span is None or current is not run_span):
            return None
        node_span = self.node_span()
        return trace.set_span_in_context(node_span) if node_span is not None else None

    def node_span(self) -> trace.Span | None:
        """The span of the graph node running here (by LangChain's record of it), if any."""
        from langchain_core.runnables.config import var_child_runnable_config

        config = var_child_runnable_config.get() or {}
        node_run = getattr(config.get("callbacks"), "parent_run_id", None)
        return self.open.get(node_run) if node_run is not None else None

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id, None)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id, error)
