"""`coviu-agent eval --base-url URL --model M`: the planner evals (evals/) against any OpenAI-compatible endpoint.

Every case runs on a fresh embedded sandbox (the profiles given), never on a real account. Prints a table (pass rate,
tool calls, prompt and completion tokens, seconds per case) and writes the JSON report. Exit 0 when the evals ran
(the pass rate is the result); 3 when every case failed on the model (unreachable, or an error each time).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from agent.cli.common import err, fail, load_settings, out, run_async, say
from agent.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_UPSTREAM

LOCAL_KEY = "not-needed"  # vLLM, llama.cpp and Ollama ignore the key; the openai client wants one


def eval_command(
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="An OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default OPENAI_BASE_URL).",
    ),
    model: str | None = typer.Option(None, "--model", help="The model name it serves (default COVIU_AGENT_MODEL)."),
    profiles: list[str] = typer.Option(  # noqa: B008 - typer's way to declare a repeatable option
        ["default"], "--profile", help="Sandbox profile(s) to run on: default, variant, random-<seed> (repeatable)."
    ),
    case_ids: list[str] = typer.Option(  # noqa: B008
        [], "--case", help="Run only these case ids (repeatable); default: every case a live model can take."
    ),
    scripted_only: bool = typer.Option(
        False, "--all", help="Also the cases only a script provokes (a tool that does not exist, a wrong type)."
    ),
    out_path: str | None = typer.Option(
        None, "--out", help="Where to write the JSON report (default reports/eval-<model>-<UTC time>.json)."
    ),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="-v: debug logs; -vv: libraries too."),
) -> None:
    """Run the planner evals against a model and print pass rate, tool calls, tokens and seconds per case."""
    from evals.cases import CASES
    from sandbox.profiles import parse_label

    settings = load_settings(verbose)
    for label in profiles:
        try:
            parse_label(label)
        except ValueError:
            fail(EXIT_BAD_INPUT, f"--profile: expected default, variant or random-<seed>, got {label!r}")
    known = {c.id for c in CASES}
    unknown = [c for c in case_ids if c not in known]
    if unknown:
        fail(EXIT_BAD_INPUT, f"--case: unknown case(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if case_ids:
        cases = tuple(c for c in CASES if c.id in case_ids)
    else:  # a known gap (fixed on another branch) is left out: its failure says nothing about the model
        cases = tuple(c for c in CASES if (c.live or scripted_only) and not c.known_gap)
    if base_url is not None:
        from agent.settings import _insecure

        if not base_url.startswith(("http://", "https://")):
            fail(EXIT_BAD_INPUT, f"--base-url: expected an http(s) URL, got {base_url!r}")
        if settings.openai_api_key is not None and _insecure(base_url) and not settings.truto_allow_insecure:
            fail(
                EXIT_BAD_INPUT,
                "--base-url is plain http:// to a non-loopback host: OPENAI_API_KEY would be sent in clear "
                "(use https://, unset the key for a local server, or set TRUTO_ALLOW_INSECURE=1)",
            )
        settings.openai_base_url = base_url
        if settings.openai_api_key is None:
            from pydantic import SecretStr

            settings.openai_api_key = SecretStr(LOCAL_KEY)
    if model is not None:
        settings.model = model
    from agent.model import make_model

    try:
        if make_model(settings) is None:
            fail(EXIT_BAD_INPUT, "eval needs a model: --base-url URL (or OPENAI_API_KEY) and --model M")
    except Exception as exc:  # ConfigError (a provider's package missing) and the like
        fail(EXIT_BAD_INPUT, str(exc))
    name = settings.model
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = (
        Path(out_path)
        if out_path
        else Path("reports") / f"eval-{name.replace('/', '_').replace(':', '_')}-{stamp}.json"
    )

    async def body() -> object:
        from evals.runner import run_cases, write_report

        def progress(result: object) -> None:
            say(f"{getattr(result, 'case_id', '')} [{getattr(result, 'profile', '')}]: "
                f"{'pass' if getattr(result, 'passed', False) else 'fail'}")  # fmt: skip

        report = await run_cases(
            lambda case: make_model(settings),  # type: ignore[arg-type,return-value]
            settings,
            model_name=name,
            profiles=tuple(profiles),
            cases=cases,
            on_result=progress,
        )
        write_report(report, path)
        return report

    report = run_async(body, as_json=False)
    out.print(report.table(), highlight=False)  # type: ignore[attr-defined]
    err.print(f"report: {path}", highlight=False)
    results = report.results  # type: ignore[attr-defined]
    raise typer.Exit(EXIT_UPSTREAM if results and all(r.error for r in results) else EXIT_OK)
