"""Scale past one process (issue 28): clinics per process, triage's start to its links, and a model of a thousand
clinics. `bench/bench.py` runs these beside its other lines; this file runs them alone too:

    .venv/bin/python bench/scale_bench.py --k 2 --k 5 --n 50          # small, while the machine is busy
    .venv/bin/python bench/scale_bench.py --k 10 --k 25 --k 50 --k 100 # the real measurement (K clinics × 200)

- **Clinics per process.** One sandbox serving K accounts (each with its own 50 requests / 10 s and N sessions)
  runs on 127.0.0.1 in this process's thread; `coviu-agent audit --accounts clinic-1,...` audits them all in one
  child process through the real path (TCP, the SQLite rate store beside the state, the product's checkpointer).
  Wall time against one clinic's floor, 429s, the child's peak RSS (kernel accounting), the CPU seconds per 1,000
  requests of the audit process (the child's, from the kernel) and of the sandbox (this process's CPU while the
  child runs: the sandbox's server thread and this process's 0.2 s sampling), and the state store's files (every
  file the run left in its state directory, and their peak while it ran).
- **Triage's start to its links.** `coviu-agent triage ...` on the embedded sandbox from the command to the second
  link on stdout, against `python -c "import langgraph.graph"`, alternated in the same run.
- **A thousand accounts.** The real governor (`tools/ratelimit.py`) pacing 1,000 accounts against an in-memory
  upstream with Truto's fixed windows, on a simulated clock: each request's two store transactions on one shared
  SQLite rate store, then with the accounts assigned to 4 workers, each pacing its own in memory. Real seconds per
  simulated second say whether the store keeps up (≤ 1: it does).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_bench import ALLOWED_RATE, RATE_LIMIT, RATE_WINDOW, ROOT, RequestTally, ServedSandbox

CLI = [str(ROOT / ".venv" / "bin" / "coviu-agent")]

GOAL_FLEET_RATIO = 1.10
GOAL_RSS_MB_AT_100 = 500
GOAL_CPU_MS_PER_REQUEST = 1.0
GOAL_LINKS_RATIO = 1.10
PACKAGES = ("agent", "tools", "graphs", "sandbox", "prompts", "reporting", "workers", "evals")
GOAL_STATE_LEFT_MB = 15  # the state store's goal (issue 18) for what a run leaves on disk


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_", "LANGSMITH_"))}
    env.update(HOME=str(tmp), COVIU_AGENT_STATE=str(tmp / "state" / "state.sqlite"), PYTHONPATH=str(ROOT), **extra)
    return env


def dir_bytes(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file():
                total += item.stat().st_size
        except OSError:
            continue
    return total


# ============================================================================================ clinics per process


@dataclass
class ScaleRun:
    clinics: int
    per_clinic: int
    wall: float
    tally: RequestTally
    exit_code: int
    audit_cpu: float  # seconds, user + system, of the audit process
    sandbox_cpu: float  # seconds of this process (the sandbox's server thread) while the audit ran
    peak_rss: float  # bytes, the audit process's
    state_peak: int = 0  # bytes, every file in the state directory, sampled
    state_left: int = 0  # bytes, what the run left there
    startup_cpu: float = math.nan  # seconds of the audit process's CPU before its first request (imports, set-up)
    clinic_totals: dict[str, Any] = field(default_factory=dict)  # account: (exit, complete, totals)
    rate_store: str = "shared"

    @property
    def requests(self) -> int:
        return self.tally.sent

    @property
    def one_clinic_floor(self) -> float:
        return self.tally.total_needed / self.clinics / ALLOWED_RATE

    @property
    def ratio(self) -> float:
        return self.wall / self.one_clinic_floor if self.one_clinic_floor else math.nan

    @property
    def audit_ms_per_request(self) -> float:
        return 1000 * self.audit_cpu / self.requests if self.requests else math.nan

    @property
    def audit_ms_per_request_running(self) -> float:
        """CPU a request once the process is up: start-up (imports, K clients and graphs) left out."""
        if not self.requests or math.isnan(self.startup_cpu):
            return math.nan
        return 1000 * (self.audit_cpu - self.startup_cpu) / self.requests

    @property
    def sandbox_ms_per_request(self) -> float:
        return 1000 * self.sandbox_cpu / self.requests if self.requests else math.nan


def fleet_run(
    clinics: int, per_clinic: int, day: date, seed: int, work: Path, profile: bool = False, rate_store: str = "shared"
) -> ScaleRun:
    """One `audit --accounts` process over `clinics` accounts of one served sandbox; `rate_store` as
    COVIU_AGENT_RATE_STORE (shared: the SQLite rate store beside the state, the default; process: in memory)."""
    import psutil

    from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, generate_sessions

    tmp = work / f"fleet-{clinics}x{per_clinic}-{rate_store}"
    (tmp / "state").mkdir(parents=True, exist_ok=True)
    accounts = [f"clinic-{i + 1}" for i in range(clinics)]
    note(f"clinics per process: K = {clinics} × {per_clinic} sessions: seeding")
    with ServedSandbox(day, 0, seed, 0.0, accounts=accounts) as served:
        for i, account in enumerate(accounts):
            generate_sessions(served.sandbox.store_for(account), day, per_clinic, seed=seed + i)
        env = clean_env(
            tmp,
            TRUTO_BASE_URL=served.base_url,
            TRUTO_API_KEY="sandbox",
            TRUTO_INTEGRATED_ACCOUNT_ID=accounts[0],
            COVIU_TEAM_ID=DEMO_TEAM_ID,
            COVIU_INTAKE_COLLECTION_ID=DEMO_INTAKE_COLLECTION_ID,
        )
        env["COVIU_AGENT_RATE_STORE"] = rate_store
        command = [*CLI, "audit", "--accounts", ",".join(accounts), "--date", day.isoformat(), "--out", str(tmp)]
        if profile:  # cProfile of the audit process, written beside the reports
            command = [sys.executable, "-m", "cProfile", "-o", str(work / f"fleet-{clinics}.prof"), *command]
        start = served.mark()
        cpu_before = time.process_time()
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state_peak = 0
        next_note = started + 15
        watched = psutil.Process(proc.pid)
        startup_cpu = math.nan  # the audit process's CPU when its first proxied request reached the sandbox
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if math.isnan(startup_cpu) and served.tally(start).sent:
                with contextlib.suppress(psutil.Error):
                    times = watched.cpu_times()
                    startup_cpu = times.user + times.system
            state_peak = max(state_peak, dir_bytes(tmp / "state"))
            if time.perf_counter() >= next_note:
                tally = served.tally(start)
                note(
                    f"  [K = {clinics}] {time.perf_counter() - started:4.0f} s, {tally.total_needed} answered, "
                    f"{tally.rate_limited} × 429"
                )
                next_note += 15
            time.sleep(0.2)
        wall = time.perf_counter() - started
        sandbox_cpu = time.process_time() - cpu_before
        proc.returncode = os.waitstatus_to_exitcode(status)
        left = dir_bytes(tmp / "state")
        clinic_totals = fleet_totals(tmp)
        return ScaleRun(
            clinics=clinics,
            per_clinic=per_clinic,
            wall=wall,
            tally=served.tally(start),
            exit_code=proc.returncode,
            audit_cpu=usage.ru_utime + usage.ru_stime,
            sandbox_cpu=sandbox_cpu,
            peak_rss=usage.ru_maxrss * 1024.0,
            state_peak=max(state_peak, left),
            state_left=left,
            startup_cpu=startup_cpu,
            clinic_totals=clinic_totals,
            rate_store=rate_store,
        )


def fleet_totals(out: Path) -> dict[str, Any]:
    """Each clinic's report totals from the fleet summaries written under `out` (every shard's)."""
    import json

    totals: dict[str, Any] = {}
    for path in out.glob("fleet-*.json"):
        for clinic in json.loads(path.read_text()).get("clinics", []):
            totals[clinic["account"]] = (clinic["exit_code"], clinic["complete"], clinic["totals"])
    return totals


# ============================================================================================ workers on PostgreSQL


@dataclass
class WorkersRun:
    clinics: int
    per_clinic: int
    shards: int
    wall: float  # first start to last end
    tally: RequestTally
    exit_codes: list[int]
    cpu: list[float]  # each worker's CPU seconds
    peak_rss: list[float]
    pg_transactions: int  # commits and rollbacks in the database while the workers ran
    rate_store: str = "shared"
    clinic_totals: dict[str, Any] = field(default_factory=dict)

    @property
    def one_clinic_floor(self) -> float:
        return self.tally.total_needed / self.clinics / ALLOWED_RATE

    @property
    def ratio(self) -> float:
        return self.wall / self.one_clinic_floor if self.one_clinic_floor else math.nan


def pg_transactions(admin_url: str, database: str) -> int:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
        return int(row[0]) if row else 0


def workers_run(
    clinics: int,
    per_clinic: int,
    day: date,
    seed: int,
    work: Path,
    shards: int,
    pg_url: str,
    rate_store: str = "shared",
) -> WorkersRun:
    """The fleet split over `shards` worker processes at once (`audit --accounts ... --shard I/N`), every one of them
    on one PostgreSQL (checkpoints, side rows, summary cache, rate store) in a database of its own for this run."""
    import psycopg
    from psycopg import sql

    from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, generate_sessions

    database = f"coviu_bench_{clinics}_{rate_store}_{int(time.time())}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    state = pg_url.rsplit("/", 1)[0] + "/" + database
    tmp = work / f"workers-{clinics}x{per_clinic}-{rate_store}"
    tmp.mkdir(parents=True, exist_ok=True)
    accounts = [f"clinic-{i + 1}" for i in range(clinics)]
    note(f"workers: K = {clinics} × {per_clinic} sessions over {shards} processes on PostgreSQL: seeding")
    with ServedSandbox(day, 0, seed, 0.0, accounts=accounts) as served:
        for i, account in enumerate(accounts):
            generate_sessions(served.sandbox.store_for(account), day, per_clinic, seed=seed + i)
        env = clean_env(
            tmp,
            TRUTO_BASE_URL=served.base_url,
            TRUTO_API_KEY="sandbox",
            TRUTO_INTEGRATED_ACCOUNT_ID=accounts[0],
            COVIU_TEAM_ID=DEMO_TEAM_ID,
            COVIU_INTAKE_COLLECTION_ID=DEMO_INTAKE_COLLECTION_ID,
        )
        env["COVIU_AGENT_STATE"] = state
        env["COVIU_AGENT_RATE_STORE"] = rate_store  # shared: in PostgreSQL; process: each worker's own memory
        start = served.mark()
        before = pg_transactions(pg_url, database)
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    *CLI,
                    "audit",
                    "--accounts",
                    ",".join(accounts),
                    "--shard",
                    f"{i + 1}/{shards}",
                    "--date",
                    day.isoformat(),
                    "--out",
                    str(tmp),
                ],
                env=env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"worker-{i + 1}.stderr").open("w"),
            )
            for i in range(shards)
        ]
        codes, cpu, rss = [], [], []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
            cpu.append(usage.ru_utime + usage.ru_stime)
            rss.append(usage.ru_maxrss * 1024.0)
        wall = time.perf_counter() - started
        done = pg_transactions(pg_url, database) - before
        return WorkersRun(
            clinics=clinics,
            per_clinic=per_clinic,
            shards=shards,
            wall=wall,
            tally=served.tally(start),
            exit_codes=codes,
            cpu=cpu,
            peak_rss=rss,
            pg_transactions=done,
            clinic_totals=fleet_totals(tmp),
            rate_store=rate_store,
        )


def report_workers(runs: list[WorkersRun], one_process: list[ScaleRun]) -> int:
    failures = 0
    print()
    print(
        "Workers (issue 28): the fleet split over worker processes (`audit --accounts ... --shard I/N`) at once, "
        "sharing one PostgreSQL (checkpoints, side rows, summary cache, rate store)"
    )
    for r in runs:
        same = next((o for o in one_process if o.clinics == r.clinics and o.per_clinic == r.per_clinic), None)
        exact = "not compared (no one-process run of this K)"
        if same is not None:
            exact = (
                "every clinic's report equals the one-process run's"
                if same.clinic_totals == r.clinic_totals
                else ("reports DIFFER from the one-process run's")
            )
            failures += same.clinic_totals != r.clinic_totals
        per_request = r.pg_transactions / r.tally.sent if r.tally.sent else math.nan
        ok = r.tally.rate_limited == 0 and not any(r.exit_codes) and len(r.clinic_totals) == r.clinics
        failures += not ok
        print(
            f"  {r.clinics} clinics × {r.per_clinic} over {r.shards} workers, pacing in "
            f"{'PostgreSQL (shared)' if r.rate_store == 'shared' else 'each worker (process)'}: "
            f"{r.tally.sent:,} requests, "
            f"{r.tally.rate_limited} × 429, {r.wall:.1f} s ({r.ratio:.3f}× the one-clinic floor of "
            f"{r.one_clinic_floor:.1f} s), exits {r.exit_codes}, {len(r.clinic_totals)} clinic reports ({exact}); "
            f"CPU {sum(r.cpu):.1f} s ({1000 * sum(r.cpu) / max(1, r.tally.sent):.2f} ms a request), peak RSS "
            f"{max(r.peak_rss) / 2**20:.0f} MB a worker; PostgreSQL {r.pg_transactions:,} transactions "
            f"({per_request:.1f} a request): {'PASS' if ok else 'FAIL'}"
        )
    return failures


def saturation(run: ScaleRun) -> str:
    """Which process, if any, ran out of CPU: a process near one core (Python runs on one), or the two together
    near the machine's cores."""
    cores = os.cpu_count() or 1
    audit = run.audit_cpu / run.wall
    sandbox = run.sandbox_cpu / run.wall
    if audit >= 0.85:
        return f"the audit process ({audit:.2f} of a core)"
    if sandbox >= 0.85:
        return f"the sandbox ({sandbox:.2f} of a core)"
    if audit + sandbox >= 0.85 * cores:
        return f"the machine ({audit + sandbox:.2f} of {cores} cores)"
    return f"none (audit {audit:.2f}, sandbox {sandbox:.2f} of a core)"


def report_fleet(runs: list[ScaleRun]) -> int:
    failures = 0
    print()
    print(
        "Clinics per process (issue 28): `coviu-agent audit --accounts` over K clinics, one process; each clinic "
        f"its own {RATE_LIMIT} / {RATE_WINDOW:g} s"
    )
    header = (
        "K × N",
        "requests",
        "429s",
        "wall s",
        "one-clinic floor s",
        "ratio",
        "peak RSS MB",
        "audit CPU ms/req",
        "sandbox CPU ms/req",
        "state peak / left MB",
        "exit",
        "saturated",
    )
    rows: list[tuple[str, ...]] = [header]
    for r in runs:
        rows.append(
            (
                f"{r.clinics} × {r.per_clinic}" + (" (pacing in memory)" if r.rate_store == "process" else ""),
                f"{r.requests:,}",
                str(r.tally.rate_limited),
                f"{r.wall:.1f}",
                f"{r.one_clinic_floor:.1f}",
                f"{r.ratio:.3f}",
                f"{r.peak_rss / 2**20:.0f}",
                f"{r.audit_ms_per_request:.2f} ({r.audit_ms_per_request_running:.2f})",
                f"{r.sandbox_ms_per_request:.2f}",
                f"{r.state_peak / 2**20:.2f} / {r.state_left / 2**20:.2f}",
                str(r.exit_code),
                saturation(r),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  "
            + "  ".join(
                c.ljust(w) if i in (0, 11) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    shared = [r for r in runs if r.rate_store == "shared"]
    within = [r for r in shared if r.ratio <= GOAL_FLEET_RATIO and r.exit_code == 0 and r.tally.rate_limited == 0]
    largest = max((r.clinics for r in within), default=0)
    beyond = [r for r in shared if r.clinics > largest]
    reason = saturation(min(beyond, key=lambda r: r.clinics)) if beyond else "every K measured is within the goal"
    print(
        f"  largest K within {GOAL_FLEET_RATIO}× one clinic's floor with 0 429s: {largest or 'none'}; past it: {reason}"
    )
    ordered = sorted(shared, key=lambda r: r.clinics)
    for a, b in itertools.pairwise(ordered):
        if b.requests > a.requests:
            marginal = 1000 * (b.audit_cpu - a.audit_cpu) / (b.requests - a.requests)
            sandbox = 1000 * (b.sandbox_cpu - a.sandbox_cpu) / (b.requests - a.requests)
            print(
                f"  K = {a.clinics} to {b.clinics}: {marginal:.2f} ms of the audit process's CPU for each further "
                f"request (its clinics' set-up and reports included, its start-up not), {sandbox:.2f} ms of the "
                "sandbox's"
            )
    for r in runs:
        ok = r.audit_ms_per_request <= GOAL_CPU_MS_PER_REQUEST
        print(
            f"  K = {r.clinics}: audit CPU {r.audit_ms_per_request:.2f} ms a request, start-up included "
            f"({r.startup_cpu:.2f} s before the first request; {r.audit_ms_per_request_running:.2f} ms a request "
            f"after it) (goal ≤ {GOAL_CPU_MS_PER_REQUEST}): {'PASS' if ok else 'FAIL'}"
        )
        failures += not ok
        if r.clinics >= 100:
            ok = r.peak_rss <= GOAL_RSS_MB_AT_100 * 2**20
            failures += not ok
            print(
                f"  K = {r.clinics}: peak RSS {r.peak_rss / 2**20:.0f} MB (goal ≤ {GOAL_RSS_MB_AT_100}): "
                f"{'PASS' if ok else 'FAIL'}"
            )
        ok = r.state_left <= GOAL_STATE_LEFT_MB * 2**20
        failures += not ok
    return failures


HTTP_FLOOR_CHILD = r"""
import asyncio, sys, time, httpx
async def main(base, sid, n):
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": "Bearer sandbox"}) as client:
        gate = asyncio.Semaphore(8)
        async def one():
            async with gate:
                query = [("integrated_account_id", "sandbox")]
                reply = await client.get(f"/proxy/session_summaries/{sid}", params=query)
                reply.json()
        await asyncio.gather(*(one() for _ in range(100)))
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        print((time.process_time() - started) / n)
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def http_floor(requests: int = 2000) -> tuple[float, float]:
    """CPU seconds a request of plain httpx (8 in flight, a summary's GET and its JSON) against the sandbox served on
    loopback with no limit, and of the sandbox answering it: the HTTP stack's own cost, under any client."""
    from sandbox import SandboxConfig, build_server, create_sandbox

    sandbox = create_sandbox(config=SandboxConfig(rate_limit=10**6))
    session = next(iter(sandbox.store.sessions))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = build_server(sandbox, "127.0.0.1", int(sock.getsockname()[1]))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        cpu = time.process_time()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                HTTP_FLOOR_CHILD,
                f"http://127.0.0.1:{sock.getsockname()[1]}",
                session,
                str(requests),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        served = (time.process_time() - cpu) / (requests + 100)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    return float(out.stdout.strip()), served


def report_http_floor(floor: tuple[float, float]) -> None:
    client, served = floor
    print(
        f"  the HTTP stack alone (plain httpx, 8 in flight, against the sandbox with no limit): {1000 * client:.2f} ms "
        f"CPU a request in the client, {1000 * served:.2f} ms in the sandbox"
    )


# ============================================================================================ triage: start to links


@dataclass
class LinksRun:
    triage: list[float] = field(default_factory=list)  # seconds from the command to the second link on stdout
    whole: list[float] = field(default_factory=list)  # seconds of the whole command
    baseline: list[float] = field(default_factory=list)  # seconds of `python -c "import langgraph.graph"` to its print
    baseline_whole: list[float] = field(default_factory=list)  # ... to its exit

    @property
    def ratio(self) -> float:
        return statistics.median(self.triage) / statistics.median(self.baseline)

    @property
    def ratio_of_fastest(self) -> float:
        """The fastest against the fastest: what a shared machine's noise spares."""
        return min(self.triage) / min(self.baseline)


def to_links(env: dict[str, str], cwd: Path) -> tuple[float, float]:
    command = [*CLI, "triage", "A priority patient needs a duty nurse now", "--patient-name", "Ava Jenkins"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    links = 0
    at = math.nan
    for line in proc.stdout:
        if " link " in line and "https://" in line:
            links += 1
            if links == 2:
                at = time.perf_counter() - started
    code = proc.wait()
    whole = time.perf_counter() - started
    if code != 0 or math.isnan(at):
        raise RuntimeError(f"coviu-agent triage exited {code} with {links} link(s)")
    return at, whole


def links(runs: int, work: Path) -> LinksRun:
    """Triage on the embedded sandbox against `import langgraph.graph`, one warm-up each, then alternated."""
    tmp = work / "links"
    tmp.mkdir(parents=True, exist_ok=True)
    env = clean_env(tmp, COVIU_AGENT_SANDBOX="1")
    # Our own modules' bytecode, as an installed package has it (and as the warm-up leaves it where Python may write
    # it): with PYTHONDONTWRITEBYTECODE set, a checkout's ~80 modules were compiled again on every run (~0.1 s)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *(str(ROOT / p) for p in PACKAGES)], check=True, capture_output=True
    )
    # timed the same way: from the command to its line on stdout (the import done), not to the process's exit
    baseline = [sys.executable, "-c", "import langgraph.graph; print('imported', flush=True)"]
    out = LinksRun()
    for i in range(runs + 1):
        at, whole = to_links(env, tmp)
        started = time.perf_counter()
        proc = subprocess.Popen(baseline, env=env, cwd=tmp, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        base = time.perf_counter() - started
        if proc.wait() != 0:
            raise RuntimeError("python -c 'import langgraph.graph' failed")
        base_whole = time.perf_counter() - started
        if i:  # the first is a warm-up
            out.triage.append(at)
            out.whole.append(whole)
            out.baseline.append(base)
            out.baseline_whole.append(base_whole)
    return out


def report_links(run: LinksRun) -> int:
    ratio = run.ratio
    ok = ratio <= GOAL_LINKS_RATIO
    base = 'python -c "import langgraph.graph"'
    whole_ratio = statistics.median(run.whole) / statistics.median(run.baseline_whole)
    print()
    print(
        f"Triage, start to links (embedded sandbox, rules planner, {len(run.triage)} runs alternated): "
        f"{statistics.median(run.triage):.3f} s [{min(run.triage):.3f}–{max(run.triage):.3f}] from the command to "
        f"the second link; `{base}` {statistics.median(run.baseline):.3f} s "
        f"[{min(run.baseline):.3f}–{max(run.baseline):.3f}] to its print: **{ratio:.2f}×** "
        f"(goal ≤ {GOAL_LINKS_RATIO}): {'PASS' if ok else 'FAIL'}"
    )
    print(
        f"  the fastest against the fastest {run.ratio_of_fastest:.2f}×; to their exits (interpreter shut-down "
        f"included) {statistics.median(run.whole):.3f} s against {statistics.median(run.baseline_whole):.3f} s, "
        f"{whole_ratio:.2f}×"
    )
    return 0 if ok else 1


# ============================================================================================ a thousand accounts


class Upstream:
    """Truto's limit per account, in memory: fixed windows of `limit` requests opened by the first request."""

    def __init__(self, limit: int = RATE_LIMIT, window: float = RATE_WINDOW) -> None:
        self.limit, self.window = limit, window
        self.windows: dict[str, tuple[float, int]] = {}
        self.answered = 0
        self.rate_limited = 0

    def send(self, account: str, now: float) -> tuple[int, dict[str, str]]:
        start, count = self.windows.get(account, (-math.inf, 0))
        if now >= start + self.window:
            start, count = now, 0
        reset = str(max(1, math.ceil(start + self.window - now)))
        if count >= self.limit:
            self.rate_limited += 1
            self.windows[account] = (start, count)
            return 429, {
                "ratelimit-limit": str(self.limit),
                "ratelimit-remaining": "0",
                "ratelimit-reset": reset,
                "retry-after": reset,
            }
        count += 1
        self.windows[account] = (start, count)
        self.answered += 1
        return 200, {
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(self.limit - count),
            "ratelimit-reset": reset,
        }


class CountingStore:
    """A rate store that counts its transactions."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.shared = store.shared
        self.transactions = 0

    def transact(self, key: str, change: Any) -> Any:
        self.transactions += 1
        return self.store.transact(key, change)

    def close(self) -> None:
        self.store.close()


@dataclass
class SimRun:
    label: str
    accounts: int
    workers: int
    simulated: float
    real: float
    transactions: int
    answered: int
    rate_limited: int
    busiest_worker_real: float = 0.0

    @property
    def tx_per_second_needed(self) -> float:
        return self.transactions / self.simulated

    @property
    def real_per_simulated(self) -> float:
        return self.busiest_worker_real / self.simulated

    @property
    def shared(self) -> bool:
        return self.label.startswith("sqlite-shared")

    @property
    def tx_per_second_capacity(self) -> float:
        """Transactions a second one store carries: a shared store all the workers' (they contend for it), else one
        worker's own."""
        done = self.transactions if self.shared else self.transactions / self.workers
        return done / self.busiest_worker_real if self.busiest_worker_real else math.nan


SIM_START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def pace(mine: list[str], store_kind: str, path: str, seconds: float) -> tuple[int, float, int, int]:
    """One worker pacing its accounts for `seconds` of simulated time against an in-memory upstream: (store
    transactions, real seconds spent in the governor and its store, requests answered, 429s)."""
    from tools.clock import FakeClock
    from tools.ratelimit import RateLimitGovernor, Ticket, parse_rate_limit_headers
    from tools.ratestore import MemoryRateStore, RateStore, SqliteRateStore

    clock = FakeClock(SIM_START)
    base = clock.now().timestamp()
    upstream = Upstream()
    store: RateStore = SqliteRateStore(path) if store_kind.startswith("sqlite") else MemoryRateStore()
    counting = CountingStore(store)
    governors = {n: RateLimitGovernor(clock=clock, store=counting, key=n) for n in mine}
    tickets: dict[str, Ticket] = {}  # each account's booked send, answered by its `observe`
    # events: (simulated time, seq, account, kind): "ask" books a slot; "send" sends the booked one
    events: list[tuple[float, int, str, str]] = [(0.0, i, n, "ask") for i, n in enumerate(mine)]
    heapq.heapify(events)
    seq = len(events)
    now = 0.0
    real = 0.0
    while events:
        at, _, name, kind = heapq.heappop(events)
        if at >= seconds:
            break
        if at > now:
            clock.advance(at - now)
            now = at
        governor = governors[name]
        started = time.perf_counter()
        if kind == "send":
            status, headers = upstream.send(name, base + now)
            info = parse_rate_limit_headers(headers, clock.now())
            governor.observe(info, status_code=status, ticket=tickets.pop(name))  # the slot this send booked
            nxt = (now, "ask")
        else:
            wait, ticket = governor.book(governor.budget, name)
            if ticket is not None:
                tickets[name] = ticket
            nxt = (now + wait, "ask" if ticket is None else "send")
        real += time.perf_counter() - started
        seq += 1
        heapq.heappush(events, (nxt[0], seq, name, nxt[1]))
    store.close()
    return counting.transactions, real, upstream.answered, upstream.rate_limited


def simulate(accounts: int, seconds: float, *, store_kind: str, workers: int = 1, work: Path | None = None) -> SimRun:
    """Pace `accounts` accounts, each wanting to send all the time, for `seconds` of simulated time, through the real
    governor: every request a `book` and an `observe` (two store transactions) as the client does them. The
    accounts are assigned to `workers` workers (`agent.fleet.shard_of`). `memory`: each worker paces its accounts in
    its own memory (simulated one after the other; the busiest one's real time counts, as they would run side by
    side). `sqlite`: the same, each its own SQLite file. `sqlite-shared`: the workers are processes at once on one
    SQLite rate store (the shared store of one machine), their transactions contending for its lock."""
    import multiprocessing

    from agent.fleet import shard_of

    names = [f"ia-{i:04d}" for i in range(accounts)]
    by_worker: dict[int, list[str]] = {}
    for name in names:
        by_worker.setdefault(shard_of(name, workers), []).append(name)
    assert work is not None or store_kind == "memory"
    jobs = [
        (mine, store_kind, str((work or Path(".")) / f"sim-{store_kind}-{workers}-{w}.ratelimit.sqlite"), seconds)
        for w, mine in sorted(by_worker.items())
    ]
    if store_kind == "sqlite-shared":
        jobs = [(mine, kind, str((work or Path(".")) / "sim-shared.ratelimit.sqlite"), s) for mine, kind, _, s in jobs]
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.starmap(pace, jobs)
    else:
        results = [pace(*job) for job in jobs]
    busiest = max(real for _, real, _, _ in results)
    return SimRun(
        label=f"{store_kind}, {workers} worker(s)",
        accounts=accounts,
        workers=workers,
        simulated=seconds,
        real=busiest,
        transactions=sum(r[0] for r in results),
        answered=sum(r[2] for r in results),
        rate_limited=sum(r[3] for r in results),
        busiest_worker_real=busiest,
    )


def report_simulation(runs: list[SimRun]) -> None:
    print()
    print(
        "A thousand accounts (issue 28): the real governor against an in-memory upstream (fixed windows of "
        f"{RATE_LIMIT} / {RATE_WINDOW:g} s per account), simulated clock"
    )
    for r in runs:
        rate = r.answered / r.simulated / r.accounts
        print(
            f"  {r.accounts:,} accounts, {r.label}: {r.answered:,} requests in {r.simulated:g} simulated s "
            f"({rate:.2f} a second an account), {r.rate_limited} × 429; {r.transactions:,} store transactions "
            f"({r.tx_per_second_needed:,.0f}/s needed); the busiest worker's real time {r.busiest_worker_real:.1f} s: "
            f"{r.real_per_simulated:.2f} s a simulated second (≤ 1 keeps up), capacity "
            f"{r.tx_per_second_capacity:,.0f} transactions/s {'the shared store' if r.shared else 'a worker'}"
        )


# ============================================================================================ fewer requests


@dataclass
class ListSavings:
    profile: str
    sessions: int
    requests: int
    summaries: int
    from_list: int


def list_savings(n: int, profile: str) -> ListSavings:
    """A cold audit of `n` sessions on the in-process sandbox (fake clock, no limit: requests, not time) of a profile:
    its requests, the summaries it fetched and those the session list made unnecessary."""
    import asyncio

    return asyncio.run(_list_savings(n, profile))


async def _list_savings(n: int, profile: str) -> ListSavings:
    from graphs.audit import build_audit_graph
    from graphs.context import Context, Services
    from sandbox import (
        DEMO_ACCOUNT_ID,
        DEMO_INTAKE_COLLECTION_ID,
        DEMO_TEAM_ID,
        SandboxTransport,
        create_sandbox,
        generate_sessions,
    )
    from sandbox.profiles import build_profile
    from tools.clock import FakeClock
    from tools.ratelimit import RateLimitBudget, RateLimitGovernor
    from tools.toolbox import open_toolbox

    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    clock = FakeClock(now)
    config = build_profile(profile, rate_limit=10**6).config
    sandbox = create_sandbox(config, clock=clock, seed_demo=False)
    generate_sessions(sandbox.store, now.date() - timedelta(days=1), n, seed=7)
    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    toolbox.client.budget = RateLimitBudget(10**9)
    with tempfile.TemporaryDirectory() as tmp:
        services = Services(
            toolbox=toolbox,
            team_id=DEMO_TEAM_ID,
            collection_id=DEMO_INTAKE_COLLECTION_ID,
            report_dir=Path(tmp) / "reports",
        )
        before = len(sandbox.requests)
        config_: Any = {"configurable": {"thread_id": "cold"}, "recursion_limit": 100_000, "max_concurrency": 4}
        try:
            out = (
                await build_audit_graph()
                .compile()
                .ainvoke(
                    {"date": (now.date() - timedelta(days=1)).isoformat()}, config_, context=Context(services=services)
                )
            )
        finally:
            await toolbox.aclose()
    asked = [r for r in sandbox.requests[before:] if r.resource is not None]
    report = out["report"]
    return ListSavings(
        profile=profile,
        sessions=report["totals"]["sessions"],
        requests=len(asked),
        summaries=sum(1 for r in asked if r.resource == "session_summaries"),
        from_list=report["summaries_from_list"],
    )


def report_savings(runs: list[ListSavings]) -> None:
    print()
    print("Fewer requests (issue 28): a cold audit, in-process sandbox (requests, not time)")
    for r in runs:
        print(
            f"  {r.profile} profile, {r.sessions} sessions: {r.requests} requests, {r.summaries} summaries fetched, "
            f"{r.from_list} not needed (the session list carried them: {r.from_list / max(1, r.sessions):.0%})"
        )


# ============================================================================================ main


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--k", type=int, action="append", help="clinics (repeatable; default 10, 25, 50, 100)")
    parser.add_argument("--n", type=int, default=200, help="sessions per clinic (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--links-runs", type=int, default=5, help="runs of triage and of the import (default 5)")
    parser.add_argument("--sim-accounts", type=int, default=1000)
    parser.add_argument("--sim-seconds", type=float, default=20.0)
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--skip-links", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the audit process (fleet-K.prof, kept)")
    parser.add_argument(
        "--memory-k",
        type=int,
        action="append",
        default=[],
        help="also run K clinics with COVIU_AGENT_RATE_STORE=process",
    )
    parser.add_argument("--workers", type=int, default=4, help="worker processes of the PostgreSQL run (default 4)")
    parser.add_argument("--workers-k", type=int, action="append", help="clinics of the PostgreSQL run (repeatable)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("COVIU_BENCH_POSTGRES_URL", ""),
        help="an admin URL of a PostgreSQL to run the workers on (COVIU_BENCH_POSTGRES_URL; none: not run)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="coviu-scale-"))
    failures = 0
    try:
        day = datetime.now(UTC).date() - timedelta(days=1)
        runs: list[ScaleRun] = []
        if not args.skip_fleet:
            runs = [fleet_run(k, args.n, day, args.seed, work, args.profile) for k in (args.k or [10, 25, 50, 100])]
            runs += [fleet_run(k, args.n, day, args.seed, work, args.profile, "process") for k in args.memory_k]
            failures += report_fleet(runs)
            report_http_floor(http_floor())
        if args.pg_url:
            ks = args.workers_k or [max((r.clinics for r in runs), default=10)]
            workers = [
                workers_run(k, args.n, day, args.seed, work, args.workers, args.pg_url, mode)
                for k in ks
                for mode in ("shared", "process")
            ]
            failures += report_workers(workers, runs)
        else:
            print()
            print("Workers on PostgreSQL: not run (no --pg-url / COVIU_BENCH_POSTGRES_URL)")
        report_savings([list_savings(args.n, "default"), list_savings(args.n, "variant")])
        if not args.skip_links:
            failures += report_links(links(args.links_runs, work))
        if not args.skip_sim:
            sims = [
                simulate(args.sim_accounts, args.sim_seconds, store_kind="sqlite", workers=1, work=work),
                simulate(args.sim_accounts, args.sim_seconds, store_kind="sqlite-shared", workers=2, work=work),
                simulate(args.sim_accounts, args.sim_seconds, store_kind="memory", workers=1),
                simulate(args.sim_accounts, args.sim_seconds, store_kind="memory", workers=4),
            ]
            report_simulation(sims)
    finally:
        if args.profile:
            note(f"profiles kept in {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
