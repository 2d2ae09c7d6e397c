"""Sandbox profiles: the variant account answers every alternative a real account allows; `random` replays by seed;
the product never learns which profile it talks to.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import DEMO_INTAKE_COLLECTION_ID, DEMO_TEAM_ID, DEMO_WAITING_QUEUE_ID, SandboxConfig, create_sandbox
from sandbox.profiles import (
    ALTERNATIVES,
    VARIANT,
    ProfileError,
    build_profile,
    config_from_env,
    parse_label,
    parse_seeds,
    profile_from_env,
    random_choices,
)
from sandbox.testing import sandbox_client
from sandbox.timefmt import parse_time
from tools.clock import FakeClock

IA = {"integrated_account_id": "sandbox"}
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
PRODUCT_DIRS = ("agent", "tools", "graphs", "reporting", "workers")


def sandboxes(**overrides: Any) -> tuple[Any, Any]:
    """The same demo clinic on the default and on the variant profile."""
    default = create_sandbox(build_profile("default", **overrides).config, clock=FakeClock(NOW))
    variant = create_sandbox(build_profile("variant", **overrides).config, clock=FakeClock(NOW))
    return default, variant


async def walk(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> tuple[list[Any], int]:
    """Every row of a list, following `next_cursor`; also how many pages it took."""
    rows: list[Any] = []
    pages = 0
    cursor = None
    while True:
        response = await client.get(path, params={**IA, **params, **({"next_cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        envelope = "results" if "results" in body else "result"
        rows.extend(body[envelope])
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            return rows, pages


def row_id(row: dict[str, Any]) -> Any:
    return next(row[k] for k in ("callId", "item_submission_id", "session_id") if k in row)


# ------------------------------------------------------------------------------------------ the variant account


async def test_variant_tools_use_results_id_in_body_and_a_custom_summary_method() -> None:
    default, variant = sandboxes()
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        plain = {t["name"]: t for t in (await a.get("/integrated-account/sandbox/tools")).json()["result"]}
        other_body = (await b.get("/integrated-account/sandbox/tools")).json()
    assert set(other_body) == {"results"}
    other = {t["name"]: t for t in other_body["results"]}
    assert set(other) == set(plain)
    summary = other["get_single_coviu_session_summary_by_id"]
    assert (summary["resource"], summary["method"]) == ("session_summaries", "summary")
    assert plain["get_single_coviu_session_summary_by_id"]["method"] == "get"
    for name, tool in other.items():
        if "id" in tool["required"]:
            assert "id" in tool["body_schema"]["properties"] and "id" not in tool["query_schema"]["properties"], name
    assert any("id" in tool["required"] for tool in other.values())


async def test_variant_serves_the_summary_only_as_a_custom_method_with_the_same_content() -> None:
    default, variant = sandboxes()
    session_id = default.store.demo.sessions["overrun"]
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        expected = (await a.get(f"/proxy/session_summaries/{session_id}", params=IA)).json()
        got = await b.post("/proxy/session_summaries/summary", params=IA, json={"id": session_id})
        assert got.status_code == 200, got.text
        as_get = await b.get(f"/proxy/session_summaries/{session_id}", params=IA)
        assert as_get.status_code == 404
        unknown = await b.post("/proxy/session_summaries/nonsense", params=IA, json={"id": session_id})
        assert unknown.status_code == 404 and "nonsense" in unknown.json()["message"]  # Truto's own error
    summary = got.json()
    assert summary["actual_end_time"].endswith("GMT")  # RFC-1123
    assert parse_time(summary["actual_end_time"]) == parse_time(expected["actual_end_time"])
    assert [p["participant_id"] for p in summary["participants"]] == [
        p["participant_id"] for p in expected["participants"]
    ]


async def test_variant_pages_every_list_by_two_whatever_the_limit() -> None:
    default, variant = sandboxes()
    lists: list[tuple[str, dict[str, Any]]] = [
        ("/proxy/waiting_queue_calls", {"team_id": DEMO_TEAM_ID, "waiting_queue_id": DEMO_WAITING_QUEUE_ID}),
        ("/proxy/waiting_calls", {"team_id": DEMO_TEAM_ID}),
        ("/proxy/submissions", {"team_id": DEMO_TEAM_ID, "collection_id": DEMO_INTAKE_COLLECTION_ID}),
        ("/proxy/sessions", {"include_canceled": "true"}),
    ]
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        for path, params in lists:
            expected, one_page = await walk(a, path, {**params, "limit": 200})
            got, pages = await walk(b, path, {**params, "limit": 200})
            assert one_page == 1 and len(expected) > 2, path
            assert pages == -(-len(expected) // 2), path  # 2 rows a page, `limit` ignored
            assert [row_id(row) for row in got] == [row_id(row) for row in expected], path
        bad = await b.get("/proxy/sessions", params={**IA, "limit": "0"})
        assert bad.status_code == 400  # `limit` is ignored, not unchecked


async def test_variant_times_are_rfc1123_and_name_the_same_moments() -> None:
    default, variant = sandboxes()
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        queue = {"team_id": DEMO_TEAM_ID, "waiting_queue_id": DEMO_WAITING_QUEUE_ID}
        plain, _ = await walk(a, "/proxy/waiting_queue_calls", queue)
        other, _ = await walk(b, "/proxy/waiting_queue_calls", queue)
    assert len(plain) == len(other)
    for x, y in zip(plain, other, strict=True):
        assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", y["joinedAt"]), y["joinedAt"]
        assert parsedate_to_datetime(y["joinedAt"]) == parse_time(x["joinedAt"]).replace(microsecond=0)


async def test_variant_lists_canceled_sessions_unless_filtered() -> None:
    default, variant = sandboxes()
    canceled = default.store.demo.sessions["canceled"]
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        plain, _ = await walk(a, "/proxy/sessions", {})
        listed, _ = await walk(b, "/proxy/sessions", {})
        filtered, _ = await walk(b, "/proxy/sessions", {"include_canceled": "false"})
    assert canceled not in {s["session_id"] for s in plain}
    assert canceled in {s["session_id"] for s in listed}
    assert next(s for s in listed if s["session_id"] == canceled)["canceled_time"]
    assert [s["session_id"] for s in filtered] == [s["session_id"] for s in plain]


async def test_variant_submissions_are_sparse_and_still_name_their_session() -> None:
    default, variant = sandboxes()
    params = {"team_id": DEMO_TEAM_ID, "collection_id": DEMO_INTAKE_COLLECTION_ID}
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        plain, _ = await walk(a, "/proxy/submissions", params)
        other, _ = await walk(b, "/proxy/submissions", params)
    assert any(row["locked_at"] is None for row in plain)  # the demo has a pending form
    for x, y in zip(plain, other, strict=True):
        assert None not in y.values()
        assert list(y) != list(x)  # another key order
        assert {k: v for k, v in x.items() if v is not None and "_at" not in k} == {
            k: v for k, v in y.items() if "_at" not in k
        }
        assert y["session_id"] == x["session_id"]


async def test_variant_remote_errors_have_an_empty_message_and_the_text_in_raw_response() -> None:
    default, variant = sandboxes()
    async with sandbox_client(default) as a, sandbox_client(variant) as b:
        plain = (await a.get("/proxy/sessions/not-a-session", params=IA)).json()
        other = (await b.get("/proxy/sessions/not-a-session", params=IA)).json()
        own = (await b.get("/proxy/sessions", params={"integrated_account_id": "nope"})).json()
    assert plain["message"] and plain["truto_is_remote_error"]
    assert other["message"] == "" and other["truto_is_remote_error"]
    assert other["raw_response"] == plain["raw_response"] and plain["message"] in str(other["raw_response"])
    assert own["message"], "Truto's own errors keep their message"


async def test_variant_rate_limit_headers_are_a_unix_time_and_an_http_date() -> None:
    clock = FakeClock(NOW)
    sb = create_sandbox(build_profile("variant", rate_limit=1).config, clock=clock)
    async with sandbox_client(sb) as client:
        first = await client.get("/proxy/sessions", params=IA)
        refused = await client.get("/proxy/sessions", params=IA)
    assert first.status_code == 200 and refused.status_code == 429
    assert int(first.headers["ratelimit-reset"]) == int(NOW.timestamp()) + 10
    assert parsedate_to_datetime(refused.headers["retry-after"]) == NOW + timedelta(seconds=10)


# ------------------------------------------------------------------------------------------ choosing a profile


def test_random_profiles_replay_by_seed_and_cover_every_alternative() -> None:
    assert random_choices(7) == random_choices(7)
    assert build_profile("random", 7).config == build_profile("random", 7).config
    assert parse_label("random-7").config == build_profile("random", 7).config
    assert parse_label("random-7").label == "random-7"
    seen: dict[str, set[Any]] = {name: set() for name in ALTERNATIVES}
    for seed in range(40):
        for name, value in random_choices(seed).items():
            seen[name].add(value)
    assert {name: set(values) for name, values in ALTERNATIVES.items()} == seen
    assert set(VARIANT) == set(ALTERNATIVES)
    for name, value in VARIANT.items():
        assert value != ALTERNATIVES[name][0] and getattr(SandboxConfig(), name) == ALTERNATIVES[name][0], name


def test_profiles_from_the_environment_and_bad_input() -> None:
    assert config_from_env({}) == SandboxConfig()
    variant = config_from_env({"COVIU_SANDBOX_PROFILE": "variant", "COVIU_SANDBOX_CONFIG": '{"rate_limit": 7}'})
    assert variant == build_profile("variant", rate_limit=7).config
    seeded = config_from_env({"COVIU_SANDBOX_PROFILE": "random", "COVIU_SANDBOX_SEED": "3"})
    assert seeded == build_profile("random", 3).config
    assert profile_from_env({"COVIU_SANDBOX_PROFILE": "random", "COVIU_SANDBOX_SEED": "3"}).label == "random-3"
    with pytest.raises(ProfileError, match="unknown sandbox profile 'odd'"):
        profile_from_env({"COVIU_SANDBOX_PROFILE": "odd"})
    with pytest.raises(ProfileError, match="needs a seed"):
        profile_from_env({"COVIU_SANDBOX_PROFILE": "random"})
    with pytest.raises(ProfileError, match="COVIU_SANDBOX_SEED"):
        profile_from_env({"COVIU_SANDBOX_PROFILE": "random", "COVIU_SANDBOX_SEED": "x"})
    with pytest.raises(ProfileError, match="only for the random profile"):
        build_profile("variant", 3)
    assert parse_seeds("1-3,7,2") == [1, 2, 3, 7]
    with pytest.raises(ProfileError):
        parse_seeds("a-b")


def test_cli_serve_banner_names_the_profile_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import agent.cli as cli

    served: list[SandboxConfig] = []
    monkeypatch.setattr("sandbox.serve_sandbox", lambda **kw: served.append(kw["sandbox"].config))
    result = CliRunner().invoke(cli.app, ["sandbox", "serve", "--profile", "random", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "random-5" in result.output and "--seed 5" in result.output
    assert served == [build_profile("random", 5).config]
    bad = CliRunner().invoke(cli.app, ["sandbox", "serve", "--profile", "odd"])
    assert bad.exit_code == 2 and "odd" in bad.output


# ------------------------------------------------------------------------------------------ the product is blind


def _mentions(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, text, enclosing function) for each mention of a sandbox profile in a product file."""
    source = path.read_text()
    tree = ast.parse(source)
    owners: dict[int, str] = {}
    for node in ast.walk(tree):  # breadth first: an inner function's lines end up named after it
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                owners[line] = node.name
    found = []
    for number, text in enumerate(source.splitlines(), start=1):
        if re.search(r"COVIU_SANDBOX_PROFILE|COVIU_SANDBOX_SEED|sandbox\.profiles|\bprofile", text, re.IGNORECASE):
            found.append((number, text.strip(), owners.get(number)))
    return found


def test_the_product_never_branches_on_the_sandbox_profile() -> None:
    """Only `sandbox serve` (and `eval`, which runs its cases on sandboxes of the profiles given) may name a profile,
    to hand it to the sandbox; nothing on the product's path may know it."""
    offending = []
    for folder in PRODUCT_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, text, owner in _mentions(path):
                rel = path.relative_to(ROOT)
                passes_through = not re.search(r"\bif\b|==|!=|\bmatch\b", text)
                in_cli = str(rel) == "agent/cli.py" or rel.parts[:2] == ("agent", "cli")
                if in_cli and owner == "sandbox_serve" and passes_through:
                    continue
                if str(rel) == "agent/cli/eval_cmd.py":  # the evals harness: picks the sandboxes cases run on
                    continue
                offending.append(f"{rel}:{number} ({owner}): {text}")
    assert not offending, "the product must not know the sandbox profile:\n" + "\n".join(offending)
