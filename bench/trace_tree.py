"""Print the trace of one audit as a text tree: the spans OpenTelemetry exports, as a collector would receive them.

    .venv/bin/python bench/trace_tree.py > docs/trace-audit.txt

The audit runs in process on the embedded sandbox's demo day (8 sessions) with a 429 storm on a quarter of the
requests (the sandbox's fault injection), through `agent.runs.run_audit` as the CLI runs it, with the SDK's
in-memory span exporter installed (`tools.telemetry`). The sandbox runs on a fake clock, so waits take no real time:
a wait span's own duration is ~0 ms and `coviu.wait.seconds` says how long it would have waited. Nothing here is
drawn by hand: every line is one exported span (name, duration, attributes, events). Each request is an event on the
span it was sent from (a tool call's); the catalog fetch (`GET tools`) is in no trace here because this script opens
the toolbox before the run (it is counted in the metrics); under the CLI it is an event in the run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def audit_spans() -> list[Any]:
    from langgraph.checkpoint.memory import InMemorySaver
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agent.runs import AuditArgs, run_audit
    from agent.settings import Settings
    from graphs.context import Services
    from sandbox import (
        DEMO_ACCOUNT_ID,
        DEMO_INTAKE_COLLECTION_ID,
        DEMO_TEAM_ID,
        FaultConfig,
        SandboxTransport,
        create_sandbox,
    )
    from tools import telemetry
    from tools.clock import FakeClock
    from tools.ratelimit import RateLimitBudget, RateLimitGovernor
    from tools.toolbox import open_toolbox

    clock = FakeClock(start=datetime(2026, 11, 25, 9, 0, 7, tzinfo=UTC))
    sandbox = create_sandbox(clock=clock)
    sandbox.set_faults(FaultConfig(seed=3, rate_limit_storm=0.25))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(telemetry.Telemetry(tracer_provider=provider))
    with tempfile.TemporaryDirectory() as work:
        toolbox = await open_toolbox(
            base_url="http://sandbox.local",
            api_key="sandbox",
            integrated_account_id=DEMO_ACCOUNT_ID,
            transport=SandboxTransport(sandbox),
            clock=clock,
            governor=RateLimitGovernor(clock=clock),
        )
        toolbox.client.budget = RateLimitBudget(1800)
        services = Services(
            toolbox=toolbox,
            team_id=DEMO_TEAM_ID,
            collection_id=DEMO_INTAKE_COLLECTION_ID,
            report_dir=Path(work) / "reports",
        )
        settings = Settings(_env_file=None, COVIU_AGENT_STATE=str(Path(work) / "state.db"))  # type: ignore[call-arg]
        try:
            await run_audit(settings, AuditArgs(day="yesterday"), services=services, checkpointer=InMemorySaver())
        finally:
            await toolbox.aclose()
    return list(exporter.get_finished_spans())


def render(spans: list[Any]) -> list[str]:
    children: dict[int | None, list[Any]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(span: Any, depth: int) -> None:
        ms = (span.end_time - span.start_time) / 1e6
        attrs = ", ".join(f"{k}={v}" for k, v in (span.attributes or {}).items() if k not in ("url.path",))
        events = "".join(f"  [{e.name}{' ' + str(dict(e.attributes)) if e.attributes else ''}]" for e in span.events)
        lines.append(f"{'  ' * depth}{span.name}  {ms:.1f} ms  {{{attrs}}}{events}")
        for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time):
        walk(root, 0)
    return lines


def main() -> int:
    spans = asyncio.run(audit_spans())
    traces = len({s.context.trace_id for s in spans})
    print(
        f"# one audit of the sandbox's demo day, traced: {len(spans)} spans in {traces} trace(s) (bench/trace_tree.py)"
    )
    print("\n".join(render(spans)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
