"""Tokens per `ask` turn and per triage on the eval cases, every tool bound against the request's tools (issue 28).

Every eval case (evals/cases.py, the `default` profile, scripted models through the real `ChatOpenAI` client) runs
twice: at the sandbox's demo time, then a day and some hours later. The token figures are the first pass's; the
cacheable share is the second pass's: how much of each request's prompt, laid out as a provider caches it
(instructions, tools, conversation: `evals/fake_openai.prompt_text`), is a prefix of a request sent before, i.e. what
a provider's prompt cache would serve the next day. OpenAI caches only prompts of 1,024 tokens or more, in steps of
128: the share it would bill as cached is printed too.

    .venv/bin/python bench/token_bench.py            # or: bench/bench.py --tokens
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evals.cases import CASES, Case
from evals.fake_openai import FakeOpenAI, estimate_tokens, scripted_model, tokenizer_name
from evals.runner import START, CaseResult

LATER = timedelta(days=1, hours=2, minutes=17)
OPENAI_MIN_CACHED, OPENAI_CACHE_STEP = 1024, 128
RunCase = Callable[[Case, Any, datetime], Awaitable[CaseResult]]


@dataclass
class Call:
    case: Case
    later: bool  # the second pass
    first: bool  # the first model call of its request
    prompt: int
    completion: int
    text: str
    tools: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    cached: int = 0


@dataclass
class Measured:
    mode: str
    results: list[CaseResult] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def passed(self) -> tuple[int, int]:
        return sum(r.passed for r in self.results), len(self.results)

    def _work(self, graph: str, later: bool) -> list[Call]:
        ok = {r.case_id for r in self.results if r.passed}
        return [
            c
            for c in self.calls
            if c.later == later and c.case.graph == graph and c.case.kind in ("hero", "scenario") and c.case.id in ok
        ]

    def per_ask_turn(self) -> tuple[float, float]:
        calls = self._work("ask", False)
        return sum(c.prompt for c in calls) / len(calls), sum(c.completion for c in calls) / len(calls)

    def per_triage(self) -> tuple[float, float]:
        calls = self._work("triage", False)
        runs = len({c.case.id for c in calls})
        return sum(c.prompt for c in calls) / runs, sum(c.completion for c in calls) / runs

    def cacheable(self, graph: str, *, first_only: bool = False, openai: bool = False) -> float:
        calls = [c for c in self._work(graph, True) if c.first or not first_only]
        cached = sum(_openai_cached(c.cached) if openai else c.cached for c in calls)
        return cached / sum(c.prompt for c in calls)


def _openai_cached(tokens: int) -> int:
    return 0 if tokens < OPENAI_MIN_CACHED else tokens - tokens % OPENAI_CACHE_STEP


def _common_prefix(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))  # noqa: RUF071 (strings' common prefix is what is meant)


def mark_cached(calls: list[Call]) -> None:
    """Each call's cached tokens: the longest prefix it shares with a call sent before it, either of its own
    conversation or of another request at another time (the other pass's other cases): the same request or the same
    time again would flatter a prompt that holds the time."""
    for i, call in enumerate(calls):
        earlier = [
            e.text
            for e in calls[:i]
            if (e.case.id == call.case.id and e.later == call.later)
            or (e.case.id != call.case.id and e.later != call.later)
        ]
        best = max((_common_prefix(call.text, text) for text in earlier), default=0)
        call.cached = estimate_tokens(call.text[:best])


async def measure(mode: str, run_case: RunCase) -> Measured:
    """Both passes of every case; `run_case(case, model, start)` runs one (the binding mode is the caller's)."""
    measured = Measured(mode)
    for start, later in ((START, False), (START + LATER, True)):
        for case in CASES:
            server = FakeOpenAI(pick=lambda messages, case=case: case.script)
            model, _ = scripted_model(case.script, server=server)
            result = await run_case(case, model, start)
            if not later:
                measured.results.append(result)
            for i, request in enumerate(server.requests):
                usage = request["usage"]
                measured.calls.append(
                    Call(
                        case,
                        later,
                        i == 0,
                        usage["prompt_tokens"],
                        usage["completion_tokens"],
                        request["prompt"],
                        list(request["tools"]),
                        list(request.get("calls") or []),
                    )
                )
    mark_cached(measured.calls)
    return measured


def runner_for(mode: str) -> RunCase:
    from agent.settings import Settings
    from evals.runner import run_case

    state = Path(tempfile.mkdtemp(prefix="coviu-token-bench-")) / "state.sqlite"
    settings = Settings(_env_file=None, COVIU_AGENT_STATE=str(state))  # type: ignore[call-arg]

    def configure(services: Any) -> None:
        services.tool_selection = mode

    async def run(case: Case, model: Any, start: datetime) -> CaseResult:
        return await run_case(case, "default", model, settings, start=start, configure=configure)

    return run


def table(before: Measured, after: Measured) -> list[tuple[str, ...]]:
    def ratio(a: float, b: float) -> str:
        return f"**{b / a:.2f}**" if a else "-"

    (bp, bc), (ap, ac) = before.per_ask_turn(), after.per_ask_turn()
    (tp, tc), (up, uc) = before.per_triage(), after.per_triage()
    rows: list[tuple[str, ...]] = [("", f"before ({before.mode} tools)", f"after ({after.mode})", "after ÷ before")]
    rows.append(("`ask` turn: prompt tokens", f"{bp:,.0f}", f"{ap:,.0f}", ratio(bp, ap)))
    rows.append(("`ask` turn: completion tokens", f"{bc:,.0f}", f"{ac:,.0f}", ratio(bc, ac)))
    for label, first in (("`ask`: cacheable share, every call", False), ("`ask`: cacheable share, first call", True)):
        b, a = before.cacheable("ask", first_only=first), after.cacheable("ask", first_only=first)
        bo, ao = (
            before.cacheable("ask", first_only=first, openai=True),
            after.cacheable("ask", first_only=first, openai=True),
        )
        rows.append((label, f"{b:.0%} (OpenAI {bo:.0%})", f"{a:.0%} (OpenAI {ao:.0%})", ""))
    rows.append(("triage: prompt tokens", f"{tp:,.0f}", f"{up:,.0f}", ratio(tp, up)))
    rows.append(("triage: completion tokens", f"{tc:,.0f}", f"{uc:,.0f}", ratio(tc, uc)))
    b, a = before.cacheable("triage"), after.cacheable("triage")
    bo, ao = before.cacheable("triage", openai=True), after.cacheable("triage", openai=True)
    rows.append(("triage: cacheable share", f"{b:.0%} (OpenAI {bo:.0%})", f"{a:.0%} (OpenAI {ao:.0%})", ""))
    (bn, bt), (an, at) = before.passed, after.passed
    rows.append(("eval cases passed", f"{bn}/{bt}", f"{an}/{at}", "equal" if (bn, bt) == (an, at) else "DIFFERENT"))
    return rows


def missed(measured: Measured) -> list[str]:
    """Calls the model made to a tool that was not bound for that call (first pass): selection's misses on the evals
    (and the scripted misbehaviours: an invented tool, a delete on injected text)."""
    return [f"{c.case.id}: {name}" for c in measured.calls if not c.later for name in c.calls if name not in c.tools]


def print_table(rows: list[tuple[str, ...]]) -> None:
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


async def compare() -> tuple[Measured, Measured]:
    before = await measure("all", runner_for("all"))
    after = await measure("request", runner_for("request"))
    return before, after


def main() -> int:
    import logging

    logging.disable(logging.WARNING)
    before, after = asyncio.run(compare())
    print(f"\n## Tokens per ask turn and per triage (19 eval cases, `default` profile; tokens: {tokenizer_name()})\n")
    print_table(table(before, after))
    for measured in (before, after):
        misses = missed(measured)
        print(f"\ncalls to a tool not bound ({measured.mode}): {len(misses)}" + "".join(f"\n  {m}" for m in misses))
    return 0 if before.passed == after.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
