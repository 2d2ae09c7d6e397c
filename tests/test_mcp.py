"""The MCP tool source against the sandbox's MCP server: same catalog, same graph results, same errors as `/tools`.

In-process through `SandboxTransport`; the CLI tests at the end run as subprocesses against the served sandbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from mcp import types

from graphs.audit import build_audit_graph
from graphs.context import Context, Services
from graphs.triage import build_triage_graph
from sandbox import (
    DEMO_ACCOUNT_ID,
    DEMO_INTAKE_COLLECTION_ID,
    DEMO_TEAM_ID,
    DEMO_WAITING_QUEUE_ID,
    FaultConfig,
    Sandbox,
    SandboxTransport,
    create_sandbox,
    generate_sessions,
)
from sandbox.mcp import DEMO_MCP_TOKEN
from sandbox.testing import sandbox_client
from tests.conftest import make_services
from tests.e2e import run_cli  # the CLI as a subprocess (`python -m agent`)
from tests.test_triage import writes
from tools.catalog import ToolCatalog
from tools.clock import FakeClock
from tools.errors import MalformedResponseError, RateLimitedError, TransportError, TrutoError
from tools.mcp_source import (
    McpDispatch,
    McpRefusedError,
    McpSource,
    McpUrlError,
    catalog_from_mcp,
    check_exposure,
    check_mcp_url,
    infer_resource_and_method,
    open_mcp_toolbox,
)
from tools.ratelimit import RateLimitGovernor
from tools.retry import RetryPolicy

YESTERDAY = date(2026, 11, 24)
BASE = "http://sandbox.local"


async def make_mcp_services(
    sandbox: Sandbox, clock: FakeClock, report_dir: Path, token: str = DEMO_MCP_TOKEN, **kwargs: Any
) -> Services:
    toolbox = await open_mcp_toolbox(
        mcp_url=f"{BASE}/mcp/{token}",
        base_url=BASE,
        api_key="sandbox",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    return Services(
        toolbox=toolbox,
        team_id=DEMO_TEAM_ID,
        waiting_queue_id=DEMO_WAITING_QUEUE_ID,
        collection_id=DEMO_INTAKE_COLLECTION_ID,
        report_dir=report_dir,
        **({"source": "sandbox"} | kwargs),
    )


@pytest.fixture
async def mcp_services(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Services]:
    built = await make_mcp_services(sandbox, clock, tmp_path / "mcp-reports")
    yield built
    await built.toolbox.aclose()


async def create_mcp_server(sandbox: Sandbox, **body: Any) -> dict[str, Any]:
    payload = {"name": "test", "config": {}, "expires_at": None, **body}
    async with sandbox_client(sandbox, token="sandbox") as client:
        response = await client.post(f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp", json=payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


def source_of(services: Services) -> McpSource:
    dispatch = services.toolbox.executor.dispatch
    assert isinstance(dispatch, McpDispatch)
    return dispatch.source


async def run_triage(services: Services, saver: InMemorySaver | None = None, **inputs: Any) -> dict[str, Any]:
    graph = build_triage_graph().compile(checkpointer=saver or InMemorySaver())
    payload: dict[str, Any] = {"messages": [HumanMessage("A priority patient needs a duty nurse now")], **inputs}
    config: Any = {"configurable": {"thread_id": "t1"}, "recursion_limit": 60}
    return dict(await graph.ainvoke(payload, config, context=Context(services=services)))


async def run_audit(services: Services, thread: str = "a1") -> dict[str, Any]:
    graph = build_audit_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 1000, "max_concurrency": 4}
    return dict(await graph.ainvoke({}, config, context=Context(services=services)))


def triage_outcome(state: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the source (ids and entry links are random per sandbox)."""
    session = state["session"]
    return {
        "queue": state["queue"],
        "alerts": state["alerts"],
        "session": {k: session[k] for k in ("session_name", "start_time", "end_time")},
        "participants": sorted((p["display_name"], p["role"]) for p in state["participants"]),
        "failure": state.get("failure"),
    }


# ------------------------------------------------------------------------------------------ catalog


def comparable(catalog: ToolCatalog) -> dict[str, Any]:
    return {
        s.name: (s.description, s.resource, s.method, s.tags, s.args_schema, s.is_read_only, s.needs_approval)
        for s in catalog
    }


async def test_mcp_catalog_is_the_tools_catalog(services: Services, mcp_services: Services):
    assert services.toolbox.catalog.source == "tools"
    assert mcp_services.toolbox.catalog.source == "mcp"
    assert comparable(mcp_services.toolbox.catalog) == comparable(services.toolbox.catalog)


@pytest.mark.profiles("default")  # names can only tell CRUD methods: a custom method needs the tool's meta
async def test_resource_and_method_inferred_from_names_when_meta_is_missing(mcp_services: Services):
    tools = await source_of(mcp_services).list_tools()
    bare = [t.model_copy(update={"meta": None}) for t in tools]
    inferred = catalog_from_mcp(bare)
    assert {s.name: (s.resource, s.method) for s in inferred} == {
        s.name: (s.resource, s.method) for s in mcp_services.toolbox.catalog
    }
    # without knowing the integration's name, and for names outside the convention
    guess = infer_resource_and_method(
        ["list_all_acme_invoices", "get_single_acme_invoice_by_id", "create_a_acme_category", "send_reminder"], None
    )
    assert guess == {
        "list_all_acme_invoices": ("invoices", "list"),
        "get_single_acme_invoice_by_id": ("invoices", "get"),
        "create_a_acme_category": ("categories", "create"),
        "send_reminder": ("send_reminder", "custom"),
    }


def test_a_discovery_only_server_is_refused():
    meta_tools = [
        types.Tool(name=n, description=n, inputSchema={"type": "object"})
        for n in ("search_tools", "get_tool_schema", "call_tool")
    ]
    with pytest.raises(McpRefusedError, match="discovery"):
        check_exposure(catalog_from_mcp(meta_tools))


async def test_validation_is_the_same_before_anything_is_sent(mcp_services: Services, sandbox: Sandbox):
    before = len(sandbox.requests)
    with pytest.raises(Exception, match="start_time") as caught:
        await mcp_services.toolbox.executor.run(
            "create_a_coviu_session", {"session_name": "x", "start_time": "tomorrow", "end_time": "2026-11-26T10:00Z"}
        )
    assert type(caught.value).__name__ == "ToolArgumentError"
    assert len(sandbox.requests) == before


# ------------------------------------------------------------------------------------------ the graphs


async def test_triage_through_mcp_matches_tools(clock: FakeClock, tmp_path: Path):
    by_tools, by_mcp = create_sandbox(clock=clock), create_sandbox(clock=clock)
    services = await make_services(by_tools, clock, tmp_path / "a")
    try:
        expected = await run_triage(services, patient_name="Ava Jenkins")
    finally:
        await services.toolbox.aclose()
    mcp = await make_mcp_services(by_mcp, clock, tmp_path / "b")
    try:
        got = await run_triage(mcp, patient_name="Ava Jenkins")
        assert source_of(mcp).sessions_opened == 1
    finally:
        await mcp.toolbox.aclose()
    assert writes(by_mcp) == writes(by_tools) == {"queue_lists": 1, "session_creates": 1, "participant_creates": 2}
    assert triage_outcome(got) == triage_outcome(expected)
    for p in got["participants"]:
        assert p["entry_url"].startswith("https://") and p["entry_url"] in got["reply"]
    # every Coviu call went through the MCP endpoint (and the proxy handler behind it), none through /proxy
    assert all(r.path.startswith(("/mcp/", "/proxy/")) for r in by_mcp.requests)
    assert by_mcp.count(resource="sessions", truto_method="create") == 1


async def test_audit_through_mcp_gives_the_same_report(
    services: Services, mcp_services: Services, sandbox: Sandbox, clock: FakeClock
):
    generate_sessions(sandbox.store, YESTERDAY, 80, seed=4)
    by_tools = (await run_audit(services, "tools"))["report"]
    calls_before = len(sandbox.requests)
    by_mcp_state = await run_audit(mcp_services, "mcp")
    by_mcp = by_mcp_state["report"]
    assert len(sandbox.requests) > calls_before
    assert by_tools["totals"]["sessions"] > 50
    by_tools.pop("generated_at")
    by_tools.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    by_mcp.pop("generated_at")
    by_mcp.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    assert by_mcp == by_tools
    assert json.loads(Path(by_mcp_state["report_paths"]["json"]).read_text())["totals"] == by_tools["totals"]
    assert source_of(mcp_services).sessions_opened == 1
    summaries = mcp_services.toolbox.governor.requests_reserved
    # the governor paced every MCP call (the summaries the session list told are not fetched)
    assert summaries >= by_tools["totals"]["sessions"] - by_tools["summaries_from_list"]


async def test_mcp_429_goes_through_wait_and_retry(mcp_services: Services, sandbox: Sandbox, clock: FakeClock):
    sandbox.set_faults(FaultConfig(seed=3, rate_limit_storm=0.4))
    graph = build_triage_graph().compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "storm"}, "recursion_limit": 100}
    visited: list[str] = []
    async for update in graph.astream(
        {"messages": [HumanMessage("now")], "patient_name": "Ava Jenkins"},
        config,
        context=Context(services=mcp_services),
        stream_mode="updates",
    ):
        visited.extend(update)
    state = (await graph.aget_state(config)).values
    assert sandbox.count(status=429) > 0
    assert visited.count("wait_and_retry") >= 1
    assert writes(sandbox) == {"queue_lists": 1, "session_creates": 1, "participant_creates": 2}
    waits = [w for w in clock.sleeps if w >= 1]
    # what the 429s' retry-after said (1-3 s; up to 1 s more as an HTTP date, whose seconds are rounded up)
    assert waits and all(w <= 4.0 for w in waits)
    assert state["session"] and len(state["participants"]) == 2
    assert mcp_services.toolbox.governor.rate_limited_count >= 1
    assert source_of(mcp_services).sessions_opened == 1


async def test_lost_create_through_mcp_makes_exactly_one_session(mcp_services: Services, sandbox: Sandbox):
    sandbox.config.honour_idempotency_keys = False  # the lookup, not Truto's dedupe, must prevent a duplicate
    sandbox.set_faults(FaultConfig(lost_response_next=1, only_resources=["sessions"]))
    state = await run_triage(mcp_services, patient_name="Ava Jenkins")
    creates = [r for r in sandbox.requests if r.resource == "sessions" and r.truto_method == "create"]
    assert len(creates) == 1 and creates[0].status == 504
    assert sum(1 for s in sandbox.store.sessions.values() if s.session_name == "Triage – Ava Jenkins") == 1
    assert len(state["participants"]) == 2 and not state.get("failure")


async def test_idempotency_key_reaches_the_proxy_through_mcp(mcp_services: Services, sandbox: Sandbox):
    start = "2026-11-25T12:00:00Z"
    args = {"session_name": "Key test", "start_time": start, "end_time": "2026-11-25T12:30:00Z"}
    first = await mcp_services.toolbox.executor.run("create_a_coviu_session", args, idempotency_key="k-1")
    again = await mcp_services.toolbox.executor.run("create_a_coviu_session", args, idempotency_key="k-1")
    assert first["session_id"] == again["session_id"]
    creates = [r for r in sandbox.requests if r.resource == "sessions" and r.truto_method == "create"]
    assert [r.idempotency_key for r in creates] == ["k-1", "k-1"] and creates[1].fault == "idempotent_replay"


# ------------------------------------------------------------------------------------------ errors and faults


async def test_a_429_is_rate_limited_with_the_headers_wait(mcp_services: Services, sandbox: Sandbox):
    sandbox.set_faults(FaultConfig(rate_limit_storm=1.0))
    with pytest.raises(RateLimitedError) as caught:
        await mcp_services.toolbox.executor.run("list_all_coviu_sessions", {})
    error = caught.value
    assert 1 <= error.retry_after <= 3 and error.truto_is_remote_error
    assert error.headers["ratelimit-remaining"] == "0"
    assert mcp_services.toolbox.governor.wait_seconds() > 0


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (FaultConfig(server_errors=1.0), TrutoError),
        (FaultConfig(drop=1.0), TransportError),
        (FaultConfig(malformed_json=1.0), MalformedResponseError),
    ],
)
async def test_faults_raise_what_the_proxy_raises(
    services: Services, mcp_services: Services, sandbox: Sandbox, faults: FaultConfig, expected: type
):
    outcomes = []
    for svc in (services, mcp_services):
        sandbox.set_faults(faults.model_copy())
        with pytest.raises(expected) as caught:
            await svc.toolbox.executor.run("list_all_coviu_sessions", {})
        error = caught.value
        outcomes.append((type(error), getattr(error, "status_code", None), getattr(error, "kind", None)))
    assert outcomes[0] == outcomes[1]
    sandbox.set_faults(FaultConfig())
    assert await mcp_services.toolbox.executor.run("list_all_coviu_waiting_calls", {"team_id": DEMO_TEAM_ID})
    assert source_of(mcp_services).sessions_opened == 1  # a failed call does not cost the session


async def test_provider_errors_read_the_same(services: Services, mcp_services: Services, sandbox: Sandbox):
    missing = "00000000-0000-4000-8000-000000000000"
    finished = sandbox.store.demo.sessions["finished_today"]
    cases = [
        ("get_single_coviu_session_by_id", {"id": missing}),
        ("create_a_coviu_participant", {"session_id": finished, "display_name": "Late", "role": "guest"}),
    ]
    for name, args in cases:
        errors = []
        for svc in (services, mcp_services):
            with pytest.raises(TrutoError) as caught:
                await svc.toolbox.executor.run(name, args)
            e = caught.value
            errors.append((e.status_code, e.provider_message, e.truto_is_remote_error, e.retryable))
        assert errors[0] == errors[1], name


async def test_binary_results_become_metadata(mcp_services: Services, sandbox: Sandbox):
    key, submission = next(iter(sandbox.store.demo.audio_recordings.items()))
    media = sandbox.store.files[sandbox.store.submissions[submission].audio_recording_id]
    result = await mcp_services.toolbox.executor.run(
        "get_single_coviu_audio_recording_by_id",
        {"id": submission, "team_id": DEMO_TEAM_ID, "collection_id": DEMO_INTAKE_COLLECTION_ID},
    )
    assert result["binary"] is True
    assert result["content_type"] == "audio/webm" and result["size_bytes"] == media.size
    assert len(json.dumps(result)) < 2000  # metadata only, never the bytes
    assert key


async def test_the_session_is_reopened_after_it_ends(mcp_services: Services):
    source = source_of(mcp_services)
    await source.aclose()
    assert not source.is_open
    assert await mcp_services.toolbox.executor.run("list_all_coviu_sessions", {"limit": 1})
    assert source.sessions_opened == 2


async def test_invalid_token_is_a_clear_error(sandbox: Sandbox, clock: FakeClock, tmp_path: Path):
    token = "no-such-token-4242"
    with pytest.raises(McpRefusedError) as caught:
        await make_mcp_services(sandbox, clock, tmp_path, token=token)
    message = str(caught.value)
    assert "refused the token" in message and "coviu-agent mcp create" in message
    assert token not in message


@pytest.mark.parametrize(
    "url",
    ["ftp://api.truto.one/mcp/SECRET1", "https:///mcp/SECRET1", "https://api.truto.one/", "http://u:SECRET1@h/mcp/x"],
)
def test_malformed_url_is_refused_without_echoing_it(url: str):
    with pytest.raises(McpUrlError) as caught:
        check_mcp_url(url)
    assert "SECRET1" not in str(caught.value) and "TRUTO_MCP_URL" in str(caught.value)


async def test_deleted_token_mid_run_stops_with_a_clear_error(mcp_services: Services, sandbox: Sandbox):
    sandbox.mcp.servers.pop("mcp-demo")
    with pytest.raises(McpRefusedError) as caught:
        await mcp_services.toolbox.executor.run("list_all_coviu_sessions", {})
    assert DEMO_MCP_TOKEN not in str(caught.value)


async def test_the_mcp_url_never_appears_in_logs_output_or_checkpoints(
    sandbox: Sandbox, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    for name in (None, "mcp", "httpx", "tools", "graphs"):  # CLI tests may have quietened library loggers
        caplog.set_level(logging.DEBUG, logger=name)
    created = await create_mcp_server(sandbox, name="secret test")
    token, url = created["token"], created["url"]
    assert url.endswith(f"/mcp/{token}")
    sandbox.set_faults(FaultConfig(seed=3, rate_limit_storm=0.3))
    services = await make_mcp_services(sandbox, clock, tmp_path, token=token)
    saver = InMemorySaver()
    try:
        state = await run_triage(services, saver, patient_name="Ava Jenkins")
        assert state["session"]
        sandbox.mcp.servers.pop(created["id"])
        with pytest.raises(McpRefusedError) as caught:
            await services.toolbox.executor.run("list_all_coviu_sessions", {})
        failure = str(caught.value)
    finally:
        await services.toolbox.aclose()
    captured = capsys.readouterr()
    stored = repr(saver.storage) + repr(saver.writes) + repr(saver.blobs) + repr(state)
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("mcp.server", "sandbox")))
    texts = {"logs": ours, "output": captured.out + captured.err, "checkpoints": stored, "error": failure}
    for where, text in texts.items():
        assert token not in text, where
    # the mcp client and httpx only ever saw the alias (shown as [redacted] once the CLI's log redaction is installed)
    assert "mcp/token-redacted" in caplog.text or "mcp/[redacted]" in caplog.text


# ------------------------------------------------------------------------------------------ admin routes


@pytest.mark.profiles("default")  # the expected names assume the summary is a `get` (a read), not a custom method
async def test_admin_routes_create_list_delete(sandbox: Sandbox, clock: FakeClock):
    created = await create_mcp_server(
        sandbox, name="reads", config={"methods": ["read"], "tags": ["sessions"]}, expires_at="2026-12-01T00:00:00Z"
    )
    assert set(created) >= {"id", "name", "config", "expires_at", "token", "url"}
    async with sandbox_client(sandbox, token="sandbox") as client:
        listed = (await client.get(f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp")).json()["result"]
        assert created["id"] in {s["id"] for s in listed}
        assert all("token" not in s and "url" not in s for s in listed)
        refused = await client.post(
            f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp", json={"name": "x", "config": {"tags": ["no-such-tag"]}}
        )
        assert refused.status_code == 400
        assert (await client.post(f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp", json={"config": {}})).status_code == 400
        assert (await client.get("/integrated-account/other/mcp")).status_code == 404
    # the token's server exposes only the filtered tools
    source = McpSource(created["url"], transport=SandboxTransport(sandbox))
    try:
        await source.start()
        names = {t.name for t in await source.list_tools()}
    finally:
        await source.aclose()
    assert names == {
        "list_all_coviu_sessions",
        "get_single_coviu_session_by_id",
        "list_all_coviu_participants",
        "get_single_coviu_participant_by_id",
        "get_single_coviu_session_summary_by_id",
    }
    async with sandbox_client(sandbox, token="sandbox") as client:
        deleted = await client.delete(f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp/{created['id']}")
        assert deleted.status_code == 200
        assert (await client.delete(f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp/{created['id']}")).status_code == 404
        gone = await client.post(
            f"/mcp/{created['token']}",
            json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == -32001 and gone.json()["id"] == 7


async def test_expired_servers_are_gone(sandbox: Sandbox, clock: FakeClock):
    created = await create_mcp_server(sandbox, expires_at=(clock.now() + timedelta(minutes=5)).isoformat())
    assert sandbox.mcp.by_token(created["token"]) is not None
    clock.advance(301)
    assert sandbox.mcp.by_token(created["token"]) is None


async def test_api_token_auth_when_required(sandbox: Sandbox, clock: FakeClock):
    sandbox.config.api_token = "the-api-token"
    created = await create_mcp_server_with(sandbox, "the-api-token", config={"require_api_token_auth": True})
    bare = McpSource(created["url"], transport=SandboxTransport(sandbox))
    with pytest.raises(McpRefusedError):
        await bare.start()
    await bare.aclose()
    authed = McpSource(
        created["url"], transport=SandboxTransport(sandbox), headers={"Authorization": "Bearer the-api-token"}
    )
    try:
        await authed.start()
        assert len(await authed.list_tools()) == 19
    finally:
        await authed.aclose()
    # the toolbox sends the API token to an MCP server on Truto's own host
    toolbox = await open_mcp_toolbox(
        mcp_url=f"{BASE}/mcp/{created['token']}",
        base_url=BASE,
        api_key="the-api-token",
        integrated_account_id=DEMO_ACCOUNT_ID,
        transport=SandboxTransport(sandbox),
        clock=clock,
        governor=RateLimitGovernor(clock=clock),
    )
    try:
        assert len(toolbox.catalog) == 19
        assert await toolbox.executor.run("list_all_coviu_sessions", {"limit": 1})
    finally:
        await toolbox.aclose()


async def create_mcp_server_with(sandbox: Sandbox, api_token: str, **body: Any) -> dict[str, Any]:
    async with sandbox_client(sandbox, token=api_token) as client:
        response = await client.post(f"/integrated-account/{DEMO_ACCOUNT_ID}/mcp", json={"name": "auth", **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_retry_policy_treats_mcp_errors_like_proxy_errors():
    policy = RetryPolicy()
    assert policy.should_retry(RateLimitedError(429, "Too Many Requests", "", retry_after=2.0), 1)
    assert policy.should_retry(TransportError("connect error", "refused", method="POST", path="mcp:x", sent=False), 1)
    assert not policy.should_retry(McpRefusedError("gone"), 1)


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def served():
    from tests.e2e import serve

    with serve(create_sandbox()) as s:
        yield s


@pytest.mark.e2e
def test_cli_mcp_create_list_delete_and_tools(served, tmp_path: Path):
    from tests.e2e import FAKE_TRUTO_TOKEN, cli_env

    env = cli_env(tmp_path, served.url)
    created = run_cli(["mcp", "create", "--name", "clinic", "--methods", "read,write", "--json"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    payload = json.loads(created.stdout)
    assert set(payload) == {"source", "id", "name", "url"} and payload["name"] == "clinic"
    url = payload["url"]
    token = url.rsplit("/", 1)[1]
    assert url.startswith(f"{served.url}/mcp/")

    listed = run_cli(["mcp", "list", "--json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    servers = json.loads(listed.stdout)["servers"]
    assert payload["id"] in {s["id"] for s in servers}
    assert token not in listed.stdout + listed.stderr

    tools = run_cli(["tools", "--json"], {**env, "TRUTO_MCP_URL": url}, tmp_path)
    assert tools.returncode == 0, tools.stderr
    assert json.loads(tools.stdout)["catalog"] == "mcp" and json.loads(tools.stdout)["count"] == 19
    assert token not in tools.stdout + tools.stderr and FAKE_TRUTO_TOKEN not in tools.stdout + tools.stderr

    deleted = run_cli(["mcp", "delete", payload["id"]], env, tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    again = run_cli(["mcp", "delete", payload["id"]], env, tmp_path)
    assert again.returncode == 2

    refused = run_cli(["tools"], {**env, "TRUTO_MCP_URL": url}, tmp_path)
    assert refused.returncode == 3
    assert "refused the token" in refused.stderr and token not in refused.stdout + refused.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "url", "code"),
    [
        (["tools"], "https://api.truto.one/", 2),
        (["tools"], "not a url TOKENX", 2),
        (["mcp", "create", "--methods", "read;drop", "--json"], None, 2),
        (["mcp", "create", "--expires-at", "tomorrow"], None, 2),
        (["mcp", "create", "--tags", "no-such-tag"], None, 2),
    ],
)
def test_cli_bad_input_exits_2(served, tmp_path: Path, args: list[str], url: str | None, code: int):
    from tests.e2e import cli_env

    env = cli_env(tmp_path, served.url, **({"TRUTO_MCP_URL": url} if url else {}))
    result = run_cli(args, env, tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    assert "TOKENX" not in result.stdout + result.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_cli_unreachable_mcp_server_exits_3(tmp_path: Path):
    from tests.e2e import cli_env, free_port

    port = free_port()
    env = cli_env(tmp_path, f"http://127.0.0.1:{port}", TRUTO_MCP_URL=f"http://127.0.0.1:{port}/mcp/TOKENY")
    result = run_cli(["tools", "--json"], env, tmp_path)
    assert result.returncode == 3, result.stderr
    assert "TOKENY" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["exit_code"] == 3
