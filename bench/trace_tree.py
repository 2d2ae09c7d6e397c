"""Print the trace of one audit as a text tree: the spans OpenTelemetry exports, as a collector would receive them.

    .venv/bin/python bench/trace_tree.py > docs/trace-audit.txt
    .venv/bin/python bench/trace_tree.py --svg docs/trace-audit.svg > docs/trace-audit.txt   # and its waterfall

The audit runs in process on the embedded sandbox's demo day (8 sessions) with a 429 storm on a quarter of the
requests (the sandbox's fault injection), through `agent.runs.run_audit` as the CLI runs it, with the SDK's
in-memory span exporter installed (`tools.telemetry`). The sandbox runs on a fake clock, so waits take no real time:
a wait span's own duration is ~0 ms and `coviu.wait.seconds` says how long it would have waited. Nothing here is
drawn by hand: every line is one exported span (name, duration, attributes, events). Each request is an event on the
span it was sent from (a tool call's); the catalog fetch (`GET tools`) is in no trace here because this script opens
the toolbox before the run (it is counted in the metrics); under the CLI it is an event in the run.
"""

from __future__ import annotations

import argparse
import asyncio
import html
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


COLOURS = {"run": "#4c78a8", "node": "#72b7b2", "tool": "#f58518", "wait": "#b279a2"}


def waterfall(spans: list[Any]) -> str:
    """The trace as a collector's UI draws it: a row a span (indented under its parent), a bar from its start to
    its end on the run's time line, a dot an event (red: a 429 or a failed request). SVG, drawn from the spans."""
    children: dict[int | None, list[Any]] = {}
    for span in spans:
        children.setdefault(span.parent.span_id if span.parent is not None else None, []).append(span)
    rows: list[tuple[int, Any]] = []

    def walk(span: Any, depth: int) -> None:
        rows.append((depth, span))
        for child in sorted(children.get(span.context.span_id, []), key=lambda s: s.start_time):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time):
        walk(root, 0)
    begin = min(s.start_time for s in spans)
    total = max(s.end_time for s in spans) - begin or 1
    label_width, bar_width, row, top = 430, 560, 20, 30
    height = top + row * len(rows) + 10

    def x(ns: int) -> float:
        return label_width + (ns - begin) / total * bar_width

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 20}" height="{height}" '
        'font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="6" y="18" font-size="12">one audit of the demo day, traced ({len(spans)} spans; '
        f"{total / 1e6:.0f} ms on a fake clock: waits take no time)</text>",
    ]
    for i, (depth, span) in enumerate(rows):
        y = top + i * row
        attributes = dict(span.attributes or {})
        calls = attributes.get("coviu.tool.calls")
        name = span.name + (f" ×{calls}" if calls else "")
        ms = (span.end_time - span.start_time) / 1e6
        colour = COLOURS.get(span.name.split(" ", 1)[0], "#999999")
        left, right = x(span.start_time), max(x(span.end_time), x(span.start_time) + 1.5)
        out.append(f'<text x="{6 + depth * 12}" y="{y + 13}">{html.escape(name)}  {ms:.1f} ms</text>')
        out.append(f'<rect x="{left:.1f}" y="{y + 3}" width="{right - left:.1f}" height="{row - 6}" fill="{colour}"/>')
        for event in span.events:
            status = (event.attributes or {}).get("http.response.status_code", 200)
            bad = event.name == "rate_limited" or not 200 <= int(status) < 400
            out.append(
                f'<circle cx="{x(event.timestamp):.1f}" cy="{y + row / 2:.1f}" r="3" '
                f'fill="{"#d62728" if bad else "#333333"}"><title>{html.escape(event.name)}</title></circle>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--svg", type=Path, help="also draw the trace as a waterfall into this SVG file")
    args = parser.parse_args()
    spans = asyncio.run(audit_spans())
    if args.svg:
        args.svg.write_text(waterfall(spans), encoding="utf-8")
    traces = len({s.context.trace_id for s in spans})
    print(
        f"# one audit of the sandbox's demo day, traced: {len(spans)} spans in {traces} trace(s) (bench/trace_tree.py)"
    )
    print("\n".join(render(spans)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
