"""What telemetry costs one request, and once per process, without the audit around it (issue 27).

    .venv/bin/python bench/telemetry_cost.py                 # 1,000 requests, 9 repeats of each mode
    .venv/bin/python bench/telemetry_cost.py --requests 2000 --repeat 5
    .venv/bin/python bench/telemetry_cost.py --audit 1000 --rounds 9   # and the whole audit, process by process

The audit's own CPU moves by ±7% from run to run on a shared machine, more than the overhead being measured; this
measures the instrumented path alone: per request, the tool call (`telemetry.tool_call`, a span) around one request
to Truto (`telemetry.http_request`: an event on that span, the request count and latency), inside a run, exported
over OTLP/HTTP to a loopback receiver in a child process (the exporter threads' CPU and the last export counted,
the receiver's not). Modes: `traced` (the default sampler: every run traced), `sampled-out` (a run the sampler left
out, `OTEL_TRACES_SAMPLER_ARG=0`: metrics only). And once per process: `telemetry.setup()`'s CPU (the OpenTelemetry
SDK and OTLP exporter imports) in a fresh interpreter that has already imported the audit. Divide by the untraced
audit's CPU (bench/bench.py's `audit` row) for the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profile_traced import RECEIVER  # noqa: E402  (bench/ is the script's folder)

SETUP = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import agent.runs, graphs.audit, langchain_core.tracers.context, langchain_core.runnables.config  # the audit's own
from tools import telemetry
started = time.process_time()
configured = telemetry.setup()
telemetry._node_spans(configured)
print(time.process_time() - started)
configured.shutdown()
"""


WHOLE = """
import asyncio, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/bench")
os.environ.setdefault("COVIU_AGENT_SANDBOX", "1")
from profile_traced import one_audit
with tempfile.TemporaryDirectory() as work:
    _, _, requests = asyncio.run(one_audit(int(sys.argv[2]), 7, Path(work), sys.argv[3] or None))
print(time.process_time(), requests)
"""


# what each mode sets in the child's environment (the endpoint turns both signals on; `none` turns one off)
WHOLE_MODES: dict[str, dict[str, str] | None] = {
    "off": None,
    "traces and metrics": {},
    "traces only": {"OTEL_METRICS_EXPORTER": "none"},
    "metrics only": {"OTEL_TRACES_EXPORTER": "none"},
}


def whole_audits(n: int, rounds: int, url: str) -> None:
    """The audit of N sessions in a fresh process per mode, the modes in turn each round: each process's whole CPU
    (the imports, the SDK's among them, the run, the last export at exit), the sandbox in process on a fake clock
    (pure CPU, no wire: a smaller denominator than the real audit's, so its percentage is an upper bound)."""
    cpu: dict[str, list[float]] = {mode: [] for mode in WHOLE_MODES}
    requests = 0
    for i in range(rounds + 1):  # the first round warms the file cache
        for mode, variables in WHOLE_MODES.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            env.update(variables or {})
            out = subprocess.run(
                [sys.executable, "-c", WHOLE, str(ROOT), str(n), url if variables is not None else ""],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout.split()
            if i:
                cpu[mode].append(float(out[0]))
                requests = int(out[1])
    off = statistics.median(cpu["off"])
    print(f"whole audit, N = {n} ({requests} requests), {rounds} rounds of fresh processes; untraced {off:.2f} s CPU")
    for mode, runs in cpu.items():
        if mode == "off":
            continue
        # each round's run against the untraced one beside it: less of the machine's drift than two medians
        paired = sorted(b - a for a, b in zip(cpu["off"], runs, strict=True))
        diff = statistics.median(paired)
        print(
            f"  {mode:>18}: +{diff * 1e3:.0f} ms a run (paired median; {paired[0] * 1e3:.0f} to "
            f"{paired[-1] * 1e3:.0f}), {diff / off:+.2%} of this audit's CPU"
        )


def requests_cpu(n: int, fan_out: int = 0) -> tuple[float, float]:
    """CPU seconds per request (all threads, the shutdown's export included) and of them this thread's. With
    `fan_out`, the calls go in batches of that many, each batch one span (`telemetry.tool_calls`, as the audit's
    summaries); else each call is a span of its own (a single call, as a page of a list)."""
    from tools import telemetry

    tool = "get_single_coviu_session_summary_by_id"

    def one(i: int) -> None:
        with telemetry.tool_call(tool) as call:
            with telemetry.http_request("GET", f"/proxy/session_summaries/s-{i}", "account-1"):
                telemetry.http_status(200)
            call.done("ok")

    async def run() -> None:
        with telemetry.run("audit", "team-1") as handle:
            if fan_out:
                for start in range(0, n, fan_out):
                    with telemetry.tool_calls(tool):
                        for i in range(start, min(start + fan_out, n)):
                            one(i)
            else:
                for i in range(n):
                    one(i)
            handle.finish("done", 0)

    configured = telemetry.current()
    started, here = time.process_time(), time.thread_time()
    asyncio.run(run())
    if configured is not None:
        configured.shutdown()
    return (time.process_time() - started) / n, (time.thread_time() - here) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--requests", type=int, default=1000, help="per run (default 1000: below the span queue's 2048)"
    )
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--fan-out", type=int, default=250, help="calls a fan-out span stands for (the audit's batch)")
    parser.add_argument("--audit", type=int, default=0, help="also N-session whole audits, traced and not (e.g. 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="pairs of whole audits (default 7)")
    args = parser.parse_args()
    from tools import telemetry

    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
        setups = [
            float(subprocess.run([sys.executable, "-c", SETUP, str(ROOT)], capture_output=True, text=True).stdout)
            for _ in range(3)
        ]
        print(f"setup (imports, providers, exporters), once per process: {statistics.median(setups) * 1e3:.0f} ms CPU")
        results: dict[str, list[tuple[float, float]]] = {
            "off": [],
            "traced": [],
            "traced fan-out": [],
            "sampled-out": [],
        }
        for i in range(args.repeat + 1):  # the first round warms up
            for mode in results:
                if mode != "off":
                    os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0" if mode == "sampled-out" else "1"
                    telemetry.setup()
                measured = requests_cpu(args.requests, args.fan_out if mode == "traced fan-out" else 0)
                telemetry.install(None)
                if i:
                    results[mode].append(measured)
        for mode, runs in results.items():
            total = statistics.median(r[0] for r in runs) * 1e6
            here = statistics.median(r[1] for r in runs) * 1e6
            fastest = min(r[0] for r in runs) * 1e6
            print(f"{mode:>14}: {total:6.1f} µs a request (fastest {fastest:.1f}; this thread {here:.1f})")
        if args.audit:
            whole_audits(args.audit, args.rounds, os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    finally:
        receiver.terminate()
        receiver.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
