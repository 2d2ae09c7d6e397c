"""A watcher checking every 30 s alongside a running audit, on one account's rate budget (issue 24).

    .venv/bin/python bench/watch_bench.py                 # N = 500 sessions (about 4 minutes)
    .venv/bin/python bench/watch_bench.py --n 1000        # about 8 minutes

The sandbox is served over real HTTP on 127.0.0.1 with its real limit (50 requests / 10 s per account, fixed
windows), with the demo waiting queue (five callers, three over 15 min) and N synthetic sessions yesterday. Two
phases, each on a fresh state store and a fresh rate window:

1. the audit alone (`coviu-agent audit --date D`);
2. the same audit with `coviu-agent queue watch --interval 30 --json` running beside it (started first, stopped a
   check after the audit ends), both processes on one `COVIU_AGENT_STATE`, so they spend one budget through the
   shared rate store; the watcher's alerts go to a webhook receiver on loopback.

Printed: requests and 429s per phase (from the sandbox's own log), the audit's wall time alone and with the
watcher, the watcher's checks during the audit and the longest gap between two checks (its interval is 30 s: a gap
much longer means a check waited for the audit's requests), and the busiest fixed 10 s window. The exit code is 1
when the watcher pushed the account over its budget (a 429) or a check was held up by more than one interval. Not
part of the test suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from audit_bench import RATE_LIMIT, RATE_WINDOW, ServedSandbox  # noqa: E402

from tests.receivers import webhook  # noqa: E402

CLI = [str(ROOT / ".venv" / "bin" / "coviu-agent")]
INTERVAL = 30.0


def env_for(served: ServedSandbox, state: Path, **extra: str) -> dict[str, str]:
    from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_"))}
    env.update(
        HOME=str(state.parent),
        PYTHONPATH=str(ROOT),
        COVIU_AGENT_STATE=str(state),
        TRUTO_BASE_URL=served.base_url,
        TRUTO_API_KEY="sandbox",
        TRUTO_INTEGRATED_ACCOUNT_ID="sandbox",
        COVIU_TEAM_ID=DEMO_TEAM_ID,
        COVIU_WAITING_QUEUE_ID=DEMO_WAITING_QUEUE_ID,
        COVIU_INTAKE_COLLECTION_ID=DEMO_INTAKE_COLLECTION_ID,
        **extra,
    )
    return env


def tally(served: ServedSandbox, start: int, end: int | None = None) -> tuple[Counter[str], int, int]:
    """Requests by resource, 429s, and the most requests that reached the sandbox in one fixed 10 s window."""
    records = served.sandbox.requests[start:end]
    times = served.sandbox.requests.times[start:end]
    by_resource: Counter[str] = Counter()
    limited = 0
    windows: Counter[int] = Counter()
    first = times[0] if times else 0.0
    for record, moment in zip(records, times, strict=True):
        if record.resource is None:
            continue
        if record.status == 429:
            limited += 1
            continue
        by_resource[str(record.resource)] += 1
        windows[int((moment - first) // RATE_WINDOW)] += 1
    return by_resource, limited, max(windows.values(), default=0)


def audit(served: ServedSandbox, day: date, work: Path, env: dict[str, str]) -> tuple[float, int]:
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "audit", "--date", day.isoformat(), "--out", str(work / "reports")],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - started, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="sessions yesterday (default 500)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    with tempfile.TemporaryDirectory(prefix="watch-bench-") as tmp, webhook() as hook:
        work = Path(tmp)
        with ServedSandbox(day, args.n, args.seed, 0.0, demo=True) as served:
            # 1. the audit alone
            alone_dir = work / "alone"
            alone_dir.mkdir()
            print(f"audit alone, N = {args.n} ...", file=sys.stderr)
            mark = len(served.sandbox.requests)
            alone_wall, alone_code = audit(served, day, alone_dir, env_for(served, alone_dir / "state.sqlite"))
            alone, alone_429, alone_peak = tally(served, mark)
            served.wait_for_fresh_window()

            # 2. the same audit with the watcher beside it, one state store (one rate budget)
            both_dir = work / "both"
            both_dir.mkdir()
            env = env_for(served, both_dir / "state.sqlite", COVIU_AGENT_NOTIFY=hook.url)
            print("audit with queue watch every 30 s ...", file=sys.stderr)
            mark = len(served.sandbox.requests)
            lines = both_dir / "watch.jsonl"
            with lines.open("wb") as sink:
                watcher = subprocess.Popen(
                    [*CLI, "queue", "watch", "--interval", str(INTERVAL), "--json"],
                    env=env,
                    cwd=both_dir,
                    stdout=sink,
                    stderr=subprocess.DEVNULL,
                )
            try:
                time.sleep(2)  # the watcher's first check, then the audit starts
                audit_start = time.time()
                both_wall, both_code = audit(served, day, both_dir, env)
                audit_end = time.time()
                time.sleep(INTERVAL + 5)  # one more check after the audit
            finally:
                watcher.send_signal(signal.SIGINT)
                try:
                    watcher.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    watcher.kill()
                    watcher.wait()
            both, both_429, both_peak = tally(served, mark)

        checks = [json.loads(line) for line in lines.read_text(encoding="utf-8").splitlines() if line.strip()]
        at = [datetime.fromisoformat(c["checked_at"]).timestamp() for c in checks if "checked_at" in c]
        during = [t for t in at if audit_start <= t <= audit_end]
        gaps = [b - a for a, b in itertools.pairwise(at)]
        longest_gap = max(gaps, default=0.0)
        delivered = len(hook.posts)

    watch_requests = sum(v for k, v in both.items() if "waiting" in k)
    print()
    limit = f"limit {RATE_LIMIT} requests / {RATE_WINDOW:g} s per account"
    print(f"N = {args.n} sessions; {limit}; watcher every {INTERVAL:g} s")
    print()
    print("| phase | requests | 429s | busiest 10 s window | audit wall | audit exit |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| audit alone | {sum(alone.values())} | {alone_429} | {alone_peak} | {alone_wall:.1f} s | {alone_code} |")
    print(
        f"| audit + queue watch | {sum(both.values())} | {both_429} | {both_peak} | {both_wall:.1f} s "
        f"({both_wall / alone_wall:.3f}x) | {both_code} |"
    )
    print()
    print(
        f"watcher: {len(at)} checks ({len(during)} during the audit), {watch_requests} queue requests, longest gap "
        f"between checks {longest_gap:.1f} s (interval {INTERVAL:g} s); {delivered} alerts delivered to the webhook"
    )
    ok = both_429 == 0 and longest_gap <= 2 * INTERVAL and both_code == 0 and len(during) >= 1
    print(f"verdict: {'within the budget' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
