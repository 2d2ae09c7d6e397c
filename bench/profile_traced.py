"""Where tracing's CPU goes: one audit in-process, traced and not, with the CPU each costs and a profile.

    .venv/bin/python bench/profile_traced.py --n 300                # CPU off vs on, per request
    .venv/bin/python bench/profile_traced.py --n 300 --profile 25   # and cProfile's top 25 of the traced run

The sandbox runs in-process (`SandboxTransport`) on a fake clock (its rate limit's waits are instant, so the run
is pure CPU), seeded as bench/audit_bench.py seeds it (`generate_sessions(day, N)`, no demo sessions). The traced
run exports over OTLP/HTTP to a loopback receiver in a child process (so the receiver's CPU is not counted), with
the same `telemetry.setup()` the CLI calls; the shutdown (the last export) is part of its cost. Each mode runs
`--repeat` times after a warm-up and the median CPU is shown. Not part of the test suite; the figure that counts is
bench/bench.py's `traced` row (the real N = 1,000 audit over HTTP), this one says where to look.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

START = datetime(2026, 11, 25, 9, 0, 7, tzinfo=UTC)

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        return None

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


async def one_audit(n: int, seed: int, work: Path, traced_url: str | None) -> tuple[float, float, int]:
    """CPU seconds of one audit of N sessions (sandbox in-process, fake clock), the part of them spent outside
    this thread (the exporters' threads), and the requests it sent."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graphs.audit import compile_audit
    from graphs.context import Context, Services
    from sandbox import (
        DEMO_INTAKE_COLLECTION_ID,
        DEMO_TEAM_ID,
        SandboxConfig,
        SandboxTransport,
        create_sandbox,
        generate_sessions,
    )
    from tools import telemetry
    from tools.clock import FakeClock
    from tools.ratelimit import RateLimitGovernor
    from tools.toolbox import open_toolbox

    clock = FakeClock(start=START)
    config = SandboxConfig(integrated_account_id="sandbox", rate_limit=50, rate_window_seconds=10.0)
    sandbox = create_sandbox(config=config, clock=clock, seed_demo=False)
    day = (START - timedelta(days=1)).date()
    generate_sessions(sandbox.store, day, n, seed=seed)
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id="sandbox",
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    services = Services(
        toolbox=toolbox,
        team_id=DEMO_TEAM_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        report_dir=work / "reports",
        source="sandbox",
    )
    configured = None
    if traced_url:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = traced_url  # the exporters read it themselves
        configured = telemetry.setup()
    graph = compile_audit(InMemorySaver())
    config_: Any = {"configurable": {"thread_id": f"audit:{day}"}, "recursion_limit": 10_000, "max_concurrency": 4}
    started, started_here = time.process_time(), time.thread_time()
    try:
        with telemetry.run("audit", DEMO_TEAM_ID) as run:
            result = await graph.ainvoke({"date": day.isoformat()}, config_, context=Context(services=services))
            run.finish("done", 0, sessions=len(result["report"]["sessions"]))
    finally:
        await toolbox.aclose()
        if configured is not None:
            configured.shutdown()
            telemetry.install(None)
    cpu, here = time.process_time() - started, time.thread_time() - started_here
    return cpu, cpu - here, toolbox.client.requests_sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="sessions on the audited day (default 300)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode after a warm-up (default 3)")
    parser.add_argument("--profile", type=int, default=0, help="show cProfile's top K of one traced run")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (default tottime)")
    args = parser.parse_args()
    os.environ.setdefault("COVIU_AGENT_SANDBOX", "1")
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            asyncio.run(one_audit(args.n, args.seed, work / "warm", None))  # imports, caches
            asyncio.run(one_audit(args.n, args.seed, work / "warm-t", url))
            cpu: dict[str, list[float]] = {"off": [], "on": []}
            threads: dict[str, list[float]] = {"off": [], "on": []}
            requests = 0
            for i in range(args.repeat):
                for mode in ("off", "on"):
                    seconds, elsewhere, requests = asyncio.run(
                        one_audit(args.n, args.seed, work / f"{mode}{i}", url if mode == "on" else None)
                    )
                    cpu[mode].append(seconds)
                    threads[mode].append(elsewhere)
            off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
            shown = {mode: [round(c, 3) for c in runs] for mode, runs in cpu.items()}
            print(f"N={args.n}: {requests} requests; CPU off {off:.3f} s, on {on:.3f} s (runs: {shown})")
            elsewhere = {mode: statistics.median(runs) for mode, runs in threads.items()}
            print(f"  of which in other threads: off {elsewhere['off']:.3f} s, on {elsewhere['on']:.3f} s")
            print(f"tracing: +{(on - off) / off:.1%} CPU, {(on - off) / max(requests, 1) * 1000:.3f} ms per request")
            # each round's traced run against the untraced one beside it: less of the machine's drift than medians
            paired = sorted(b - a for a, b in zip(cpu["off"], cpu["on"], strict=True))
            middle = statistics.median(paired)
            each = middle / max(requests, 1) * 1e6
            print(
                f"  paired (on - off, per round): median {middle * 1e3:.1f} ms ({each:.0f} µs "
                f"a request), from {paired[0] * 1e3:.1f} to {paired[-1] * 1e3:.1f} ms; the SDK's imports not included "
                "(bench/telemetry_cost.py measures them)"
            )
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                asyncio.run(one_audit(args.n, args.seed, work / "profiled", url))
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.profile)
                print(out.getvalue())
    finally:
        receiver.terminate()
        receiver.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
