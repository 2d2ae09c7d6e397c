"""A model failure is an upstream failure: 429 and 5xx from the model retried within the run's wait budget
(Retry-After honoured, on the injected clock), then exit 3 with one line and the JSON error object; with
COVIU_AGENT_PLANNER=auto a triage is planned by the rules instead, and says so. Loopback only."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from agent.cli import app
from agent.model import make_model
from agent.runs import TriageArgs, run_triage
from agent.settings import Settings
from graphs.context import Services
from graphs.planning import MODEL_RETRY
from sandbox import Sandbox
from tools.clock import FakeClock
from tools.errors import ModelFailedError


class ModelServer:
    """An OpenAI-compatible endpoint on loopback that answers every request with `status` (and `headers`)."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.requests += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"error": {"message": "model overloaded", "type": "server_error"}}).encode()
                self.send_response(server.status)
                for key, value in server.headers.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def failing_model(request: pytest.FixtureRequest) -> Iterator[ModelServer]:
    status, headers = getattr(request, "param", (500, {"retry-after": "0"}))
    server = ModelServer(status, headers)
    yield server
    server.close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def cli_env(tmp_path: Path, base_url: str, planner: str) -> dict[str, str]:
    return {
        "COVIU_AGENT_SANDBOX": "1",
        "COVIU_AGENT_STATE": str(tmp_path / "state.db"),
        "OPENAI_API_KEY": "sk-test-model-key",
        "OPENAI_BASE_URL": base_url,
        "COVIU_AGENT_PLANNER": planner,
        "TRUTO_API_KEY": "",
        "COVIU_AGENT_LOG_LEVEL": "ERROR",
    }


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


TRIAGE = ["triage", "A priority patient needs a duty nurse now", "--patient-name", "Ava Jenkins", "--json"]


@pytest.mark.parametrize(
    "failing_model", [(500, {"retry-after": "0"}), (429, {"retry-after": "0"})], indirect=True, ids=["500", "429"]
)
def test_triage_json_with_a_failing_model_exits_3_with_the_error_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_model: ModelServer
):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, TRIAGE, env=cli_env(tmp_path, failing_model.url, "llm"))
    assert result.exit_code == 3, result.output
    payload = last_json(result.stdout)
    assert payload["exit_code"] == 3 and "LLM failed" in payload["error"]
    assert "not done: the queue check, the session" in payload["error"] and "created: nothing" in payload["error"]
    assert failing_model.requests == MODEL_RETRY.max_attempts  # retried, bounded (the SDK's own retries are off)
    assert "sk-test-model-key" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "LLM failed" in errors[0]  # one line


def test_triage_with_auto_planner_falls_back_to_the_rules_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_model: ModelServer
):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, TRIAGE, env=cli_env(tmp_path, failing_model.url, "auto"))
    assert result.exit_code == 0, result.output
    payload = last_json(result.stdout)
    assert payload["planner"] == "rules" and "the model failed" in payload["planner_note"]
    assert payload["session"] and {p["role"] for p in payload["participants"]} == {"guest", "host"}
    assert "planned by the rules" in result.stderr


def test_ask_json_with_a_failing_model_exits_3_with_the_error_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_model: ModelServer
):
    monkeypatch.chdir(tmp_path)
    args = ["ask", "How many patients are waiting?", "--json"]
    result = CliRunner().invoke(app, args, env=cli_env(tmp_path, failing_model.url, "llm"))
    assert result.exit_code == 3, result.output
    assert "LLM failed" in last_json(result.stdout)["error"]
    assert failing_model.requests == MODEL_RETRY.max_attempts


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


def model_at(base_url: str) -> Any:
    return make_model(Settings(_env_file=None, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=base_url))  # type: ignore[call-arg]


async def triage_with(settings: Settings, services: Services, base_url: str) -> None:
    services.model = model_at(base_url)
    services.planner = "llm"
    args = TriageArgs(request="A priority patient needs a duty nurse now", patient_name="Ava Jenkins")
    await run_triage(settings, args, services=services, checkpointer=InMemorySaver())


@pytest.mark.profiles("default")
async def test_unreachable_model_is_retried_on_the_runs_clock_then_fails_with_nothing_written(
    settings: Settings, services: Services, sandbox: Sandbox, clock: FakeClock
):
    with pytest.raises(ModelFailedError, match="LLM failed"):
        await triage_with(settings, services, closed_port())
    assert len(clock.sleeps) == MODEL_RETRY.max_attempts - 1  # backoff on the injected clock: no real sleep
    assert sandbox.count(resource="sessions", truto_method="create") == 0


@pytest.mark.profiles("default")
@pytest.mark.parametrize("failing_model", [(429, {"retry-after": "7"})], indirect=True)
async def test_model_429_honours_retry_after_within_the_wait_budget(
    settings: Settings, services: Services, clock: FakeClock, failing_model: ModelServer
):
    with pytest.raises(ModelFailedError):
        await triage_with(settings, services, failing_model.url)
    assert clock.sleeps == [7.0] * (MODEL_RETRY.max_attempts - 1)
    # a budget too small for the next wait ends the run at once, naming the budget
    services.budget.restart()
    services.budget.seconds = 5
    before = failing_model.requests
    with pytest.raises(ModelFailedError, match="wait budget"):
        await triage_with(settings, services, failing_model.url)
    assert failing_model.requests == before + 1


@pytest.mark.profiles("default")
@pytest.mark.parametrize(
    "failing_model",
    [(429, {"retry-after-ms": "inf", "retry-after": "2"}), (429, {"retry-after-ms": "1e400"}),
     (429, {"retry-after-ms": "1e30"})],
    indirect=True,
    ids=["inf", "overflow", "huge"],
)  # fmt: skip
async def test_a_model_429_with_an_unusable_retry_after_ms_is_an_upstream_failure_not_a_crash(
    settings: Settings, services: Services, clock: FakeClock, failing_model: ModelServer
):
    """`retry-after-ms` is read with the same checks as Retry-After (finite, at most a header's longest wait; else
    Retry-After, else the back-off). Before, infinity or 1e30 ms went to the budget as they were, and wording the
    budget error overflowed: OverflowError, a crash, instead of the model failure (exit 3)."""
    with pytest.raises(ModelFailedError):
        await triage_with(settings, services, failing_model.url)
    assert all(wait <= 60 for wait in clock.sleeps)


@pytest.mark.profiles("default")
async def test_a_model_that_fails_mid_triage_stops_it_resumably_and_the_rerun_creates_nothing_twice(
    settings: Settings, services: Services, sandbox: Sandbox
):
    from langchain_core.exceptions import ModelAPIError
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

    from tests.fakes import ScriptedChatModel
    from tests.test_triage_facts import inventing_model

    healthy = {"up": False}

    def flaky(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        if sum(isinstance(m, ToolMessage) for m in messages) >= 2 and not healthy["up"]:
            raise ModelAPIError("503 from the model endpoint")  # after the queue and the session
        return inventing_model(messages, tools)

    services.model = ScriptedChatModel(script=flaky)
    services.planner = "llm"
    saver = InMemorySaver()
    args = TriageArgs(request="A priority patient needs a duty nurse now", patient_name="Ava Jenkins")
    with pytest.raises(ModelFailedError) as stopped:
        await run_triage(settings, args, services=services, checkpointer=saver)
    assert sandbox.count(resource="sessions", truto_method="create", status=200) == 1
    message = str(stopped.value)
    assert "not done: the patient's link, the clinician's link; created: session " in message
    assert "the same command resumes it" in message
    healthy["up"] = True
    result = await run_triage(settings, args, services=services, checkpointer=saver)
    assert result.resumed and result.exit_code == 0, result.failure
    assert sandbox.count(resource="sessions", truto_method="create", status=200) == 1  # not created twice
    assert sandbox.count(resource="participants", truto_method="create", status=200) == 2


class Hanging:
    """A model that never answers: each attempt takes the client's whole timeout (60 s on the run's clock), then
    times out."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.attempts = 0

    async def ainvoke(self, prompt: Any) -> Any:
        from langchain_core.exceptions import ModelTimeoutError

        self.attempts += 1
        self.clock.advance(60.0)
        raise ModelTimeoutError("Request timed out.")


@pytest.mark.profiles("default")
async def test_a_model_that_never_answers_is_bounded_by_the_runs_wait_budget(services: Services, clock: FakeClock):
    """Each timed-out attempt is time the run sat waiting on the model: it counts against the wait budget. Before,
    only the backoff did, so a hung model cost 4 x 60 s whatever --max-wait said (COVIU_AGENT_MAX_WAIT=5: 3 min)."""
    from graphs.planning import invoke_model

    budget = services.budget
    budget.restart()
    budget.seconds = 90
    model = Hanging(clock)
    with pytest.raises(ModelFailedError, match="wait budget"):
        await invoke_model(services, model, "hello", what="planning the next step")
    assert model.attempts == 2  # 60 s, then the second 60 s leaves nothing for a third
