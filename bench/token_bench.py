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
GOAL = 0.5  # issue 28: at most half of today's prompt tokens per ask turn
RunCase = Callable[[Case, Any, datetime], Awaitable[CaseResult]]


@dataclass
class Call:
    case: Case
    later: bool  # the second pass
    first: bool  # the first model call of its request
    prompt: int
    completion: int
    text: str
    text_tools_first: str
    tools: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    cached: int = 0  # instructions, then tools (`prompt_text`)
    cached_tools_first: int = 0


@dataclass
class Measured:
    mode: str
    results: list[CaseResult] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    other_profiles: dict[str, tuple[int, int]] = field(default_factory=dict)  # passed, cases

    @property
    def passed(self) -> tuple[int, int]:
        return sum(r.passed for r in self.results), len(self.results)

    @property
    def every_profile_passed(self) -> tuple[tuple[int, int], ...]:
        return (self.passed, *(self.other_profiles[p] for p in sorted(self.other_profiles)))

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

    def cacheable(
        self, graph: str, *, first_only: bool = False, openai: bool = False, tools_first: bool = False
    ) -> float:
        calls = [c for c in self._work(graph, True) if c.first or not first_only]
        hits = [c.cached_tools_first if tools_first else c.cached for c in calls]
        cached = sum(_openai_cached(n) if openai else n for n in hits)
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
            e
            for e in calls[:i]
            if (e.case.id == call.case.id and e.later == call.later)
            or (e.case.id != call.case.id and e.later != call.later)
        ]
        best = max((_common_prefix(call.text, e.text) for e in earlier), default=0)
        call.cached = estimate_tokens(call.text[:best])
        best = max((_common_prefix(call.text_tools_first, e.text_tools_first) for e in earlier), default=0)
        call.cached_tools_first = estimate_tokens(call.text_tools_first[:best])


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
                        first=i == 0,
                        prompt=usage["prompt_tokens"],
                        completion=usage["completion_tokens"],
                        text=request["prompt"],
                        text_tools_first=request["prompt_tools_first"],
                        tools=list(request["tools"]),
                        calls=list(request.get("calls") or []),
                    )
                )
    mark_cached(measured.calls)
    return measured


def runner_for(mode: str, profile: str = "default") -> RunCase:
    from agent.settings import Settings
    from evals.runner import run_case

    state = Path(tempfile.mkdtemp(prefix="coviu-token-bench-")) / "state.sqlite"
    settings = Settings(_env_file=None, COVIU_AGENT_STATE=str(state))  # type: ignore[call-arg]

    def configure(services: Any) -> None:
        services.tool_selection = mode

    async def run(case: Case, model: Any, start: datetime) -> CaseResult:
        return await run_case(case, profile, model, settings, start=start, configure=configure)

    return run


def table(before: Measured, after: Measured) -> list[tuple[str, ...]]:
    def ratio(a: float, b: float) -> str:
        return f"**{b / a:.2f}**" if a else "-"

    (bp, bc), (ap, ac) = before.per_ask_turn(), after.per_ask_turn()
    (tp, tc), (up, uc) = before.per_triage(), after.per_triage()
    rows: list[tuple[str, ...]] = [("", f"before ({before.mode} tools)", f"after ({after.mode})", "after ÷ before")]
    rows.append(("`ask` turn: prompt tokens", f"{bp:,.0f}", f"{ap:,.0f}", ratio(bp, ap)))
    rows.append(("`ask` turn: completion tokens", f"{bc:,.0f}", f"{ac:,.0f}", ratio(bc, ac)))

    def share(measured: Measured, graph: str, first_only: bool) -> str:
        parts = [
            f"{measured.cacheable(graph, first_only=first_only, tools_first=t):.0%}"
            f" ({measured.cacheable(graph, first_only=first_only, tools_first=t, openai=True):.0%})"
            for t in (False, True)
        ]
        return " / ".join(parts)

    for label, first in (("`ask`: cacheable, every call", False), ("`ask`: cacheable, a request's first call", True)):
        rows.append((label, share(before, "ask", first), share(after, "ask", first), ""))
    rows.append(("triage: prompt tokens", f"{tp:,.0f}", f"{up:,.0f}", ratio(tp, up)))
    rows.append(("triage: completion tokens", f"{tc:,.0f}", f"{uc:,.0f}", ratio(tc, uc)))
    rows.append(("triage: cacheable", share(before, "triage", False), share(after, "triage", False), ""))
    (bn, bt), (an, at) = before.passed, after.passed
    rows.append(("eval cases passed", f"{bn}/{bt}", f"{an}/{at}", "equal" if (bn, bt) == (an, at) else "DIFFERENT"))
    for profile in sorted(set(before.other_profiles) | set(after.other_profiles)):
        b, a = before.other_profiles.get(profile, (0, 0)), after.other_profiles.get(profile, (0, 0))
        rows.append((f"… on `{profile}`", f"{b[0]}/{b[1]}", f"{a[0]}/{a[1]}", "equal" if a == b else "DIFFERENT"))
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


async def pass_rate(mode: str, profile: str) -> tuple[int, int]:
    """The eval score of one binding on another sandbox profile (each case once)."""
    run = runner_for(mode, profile)
    passed = 0
    for case in CASES:
        model, _ = scripted_model(case.script)
        passed += (await run(case, model, START)).passed
    return passed, len(CASES)


async def compare() -> tuple[Measured, Measured]:
    from evals.runner import PROFILES

    before = await measure("all", runner_for("all"))
    after = await measure("request", runner_for("request"))
    for profile in PROFILES[1:]:
        before.other_profiles[profile] = await pass_rate("all", profile)
        after.other_profiles[profile] = await pass_rate("request", profile)
    return before, after


def main() -> int:
    import logging

    logging.disable(logging.WARNING)
    before, after = asyncio.run(compare())
    print(f"\n## Tokens per ask turn and per triage (19 eval cases, `default` profile; tokens: {tokenizer_name()})\n")
    print_table(table(before, after))
    print(
        "\ncacheable: instructions first / tools first (a provider's two layouts); in brackets what OpenAI would bill"
        f" as cached (prompts of {OPENAI_MIN_CACHED:,} tokens or more, in steps of {OPENAI_CACHE_STEP})"
    )
    for measured in (before, after):
        misses = missed(measured)
        print(f"\ncalls to a tool not bound ({measured.mode}): {len(misses)}" + "".join(f"\n  {m}" for m in misses))
    equal = before.every_profile_passed == after.every_profile_passed
    met = after.per_ask_turn()[0] <= GOAL * before.per_ask_turn()[0] and equal
    print(f"goal (≤ {GOAL:.0%} of the prompt tokens per ask turn, equal eval score): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
