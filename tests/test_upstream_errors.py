"""Each upstream error class gets a clear, actionable message and is never retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphs.nodes import execute_call
from sandbox import SandboxConfig, create_sandbox
from tests.conftest import make_services
from tools.clock import FakeClock


@pytest.mark.parametrize(
    ("status", "tool", "args", "words"),
    [
        ("needs_reauth", "list_all_coviu_sessions", {}, ["401", "re-authentication", "Truto"]),
        (
            "missing_scopes",
            "delete_a_coviu_session_by_id",
            {"id": "future"},
            ["403", "missing scopes", "sessions:write"],
        ),
        ("read_only", "delete_a_coviu_session_by_id", {"id": "future"}, ["405", "read-only"]),
        ("blocked", "list_all_coviu_sessions", {}, ["503", "blocked"]),
    ],
)
async def test_account_errors(status: str, tool: str, args: dict, words: list[str], clock: FakeClock, tmp_path: Path):
    sandbox = create_sandbox(SandboxConfig(account_status=status), clock=clock)  # type: ignore[arg-type]
    services = await make_services(sandbox, clock, tmp_path)
    if args.get("id") == "future":
        args = {"id": sandbox.store.demo.sessions["future"]}
    before = len(sandbox.requests)
    outcome = await execute_call(services, tool, args, call_id="c", ids={})
    await services.toolbox.aclose()
    assert outcome.kind == "error", outcome
    for word in words:
        assert word.lower() in outcome.text.lower(), outcome.text
    proxied = [r for r in sandbox.requests[before:] if r.resource]
    assert len([r for r in proxied if r.truto_method == ("list" if "list" in tool else "delete")]) == 1  # not retried
    assert all(s < 1 for s in clock.sleeps)  # pacing only, no retry wait


async def test_404_names_the_id(services, sandbox):
    outcome = await execute_call(
        services, "get_single_coviu_session_by_id", {"id": "00000000-0000-4000-8000-000000000000"}, call_id="c", ids={}
    )
    assert outcome.kind == "error"
    assert "404" in outcome.text and "00000000-0000-4000-8000-000000000000" in outcome.text
    assert sandbox.count(resource="sessions", truto_method="get") == 1


async def test_coviu_400_carries_the_providers_message(services, sandbox, clock):
    # bypass our own guard by asking Coviu directly through the executor: its rule message comes through
    from tools.errors import TrutoError

    start = clock.now().replace(microsecond=0).isoformat()
    with pytest.raises(TrutoError) as info:
        await services.toolbox.executor.run(
            "create_a_coviu_session",
            {"session_name": "Past", "start_time": start, "end_time": start},
        )
    assert info.value.status_code == 400 and info.value.truto_is_remote_error
    assert "future" in info.value.describe() or "after" in info.value.describe()
    assert not info.value.retryable
