"""Runs through the LangGraph Server's graphs (agent/server.py) leave what CLI runs leave: a row in the run log
(`coviu-agent status`) and, when telemetry is configured, the run's spans (run → node → tool call, one trace) and
run metrics.

The graphs are the objects langgraph.json names, copied with a checkpointer as the server copies them, and streamed
as the server streams them: each step of the stream in an asyncio task of its own (langgraph_api's
`wait_if_not_done`), so nothing a step sets in its context reaches the next.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent import runlog
from agent.settings import Settings
from graphs.context import Services
from sandbox import DEMO_TEAM_ID, Sandbox
from tests.test_status import cli, status
from tests.test_telemetry import exported_texts, leaks, metric_points, parent_chain
from tools import telemetry

pytestmark = pytest.mark.profiles("default")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def server(state: Path, services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """agent/server.py with these settings (COVIU_AGENT_STATE in a temporary folder) and the sandbox's services."""
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    import agent.server as module

    settings = Settings(_env_file=None, COVIU_AGENT_STATE=str(state))  # type: ignore[call-arg]
    monkeypatch.setattr(module, "_settings", settings)
    monkeypatch.setitem(module._by_account, "sandbox", services)
    yield module


@pytest.fixture
def in_memory() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    previous = telemetry.install(
        telemetry.Telemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]))
    )
    yield spans, reader
    telemetry.install(previous)


async def steps(stream: AsyncIterator[Any]) -> list[Any]:
    """Every item of `stream`, each step awaited in a task of its own, as LangGraph's server does."""
    items: list[Any] = []
    sentinel = object()
    while True:
        item = await asyncio.create_task(anext(stream, sentinel))  # type: ignore[arg-type]
        if item is sentinel:
            return items
        items.append(item)


async def run_on_server(
    server: Any, graph_id: str, inputs: Any, thread: str, saver: InMemorySaver | None = None
) -> dict[str, Any]:
    graph = getattr(server, graph_id).copy(update={"checkpointer": saver or InMemorySaver()})
    config = {"configurable": {"thread_id": thread, "graph_id": graph_id}}
    context = server.ServerContext()
    await steps(graph.astream(inputs, config, context=context, stream_mode=["values", "updates"]))
    return dict((await graph.aget_state(config)).values)


async def test_a_server_audit_and_triage_are_in_the_run_log_and_status(server: Any, state: Path, sandbox: Sandbox):
    assert telemetry.current() is None  # the run log does not depend on telemetry
    audit = await run_on_server(server, "audit", {"date": "yesterday"}, "t-audit-1")
    assert audit["report"]["sessions"]
    triage = await run_on_server(
        server,
        "triage",
        {"messages": [{"role": "user", "content": "A priority patient needs a duty nurse now"}], "patient_name": "Ava"},
        "t-1",
    )
    assert not triage.get("failure")
    runs = {entry.graph: entry for entry in runlog.last_runs(str(state))}
    assert set(runs) == {"audit", "triage"}
    assert runs["audit"].clinic == DEMO_TEAM_ID and runs["audit"].thread_id == "t-audit-1"
    assert (runs["audit"].outcome, runs["audit"].exit_code) == ("done", 0)
    assert runs["audit"].report_path and Path(runs["audit"].report_path).exists()
    assert (runs["triage"].graph, runs["triage"].clinic, runs["triage"].outcome) == ("triage", DEMO_TEAM_ID, "done")
    shown = json.loads(status(state, "--json").stdout)["last_runs"]
    assert {(r["graph"], r["thread_id"], r["outcome"]) for r in shown} == {
        ("audit", "t-audit-1", "done"),
        ("triage", "t-1", "done"),
    }


async def test_a_server_run_that_fails_is_logged_with_its_exit_code(server: Any, state: Path, sandbox: Sandbox):
    with pytest.raises(Exception, match="date"):  # a date that is no date: the run fails (bad input)
        await run_on_server(server, "audit", {"date": "the 32nd of Smarch"}, "t-bad")
    (entry,) = runlog.last_runs(str(state))
    assert (entry.graph, entry.outcome, entry.exit_code) == ("audit", "bad_input", 2)


async def test_a_server_audit_is_traced_run_node_tool_and_counted(
    server: Any, state: Path, in_memory: Any, sandbox: Sandbox
):
    spans_exporter, reader = in_memory
    before = sandbox.count()
    audit = await run_on_server(server, "audit", {"date": "yesterday"}, "t-audit-2")
    spans = list(spans_exporter.get_finished_spans())
    (run,) = [s for s in spans if s.name == "run audit"]
    assert run.parent is None and (run.attributes or {})["coviu.outcome"] == "done"
    assert (run.attributes or {})["coviu.sessions"] == len(audit["report"]["sessions"])
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}  # one trace, though each step had a task
    by_id = {s.context.span_id: s for s in spans}
    sent_from = [s for s in spans if any(e.name == "GET sessions" for e in s.events)]
    assert sent_from
    assert parent_chain(sent_from[0], by_id) == ["tool list_all_coviu_sessions", "node list_sessions", "run audit"]
    points = metric_points(reader)
    assert sum(v for _, v in points["coviu_agent.http.requests"]) == sandbox.count() - before
    assert [(a["graph"], a["clinic"], a["outcome"]) for a, _ in points["coviu_agent.runs"]] == [
        ("audit", DEMO_TEAM_ID, "done")
    ]
    assert points["coviu_agent.sessions.audited"] == [
        ({"clinic": DEMO_TEAM_ID, "team": DEMO_TEAM_ID}, len(audit["report"]["sessions"]))
    ]
    assert leaks(exported_texts(spans, points)) == []
    (entry,) = runlog.last_runs(str(state))
    assert entry.thread_id == "t-audit-2"


async def test_the_server_sets_telemetry_up_from_its_settings_and_says_a_wrong_variable(
    server: Any, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The server reads its settings on its first run: the metrics textfile (COVIU_AGENT_METRICS_FILE) and the
    standard OTEL_* variables turn telemetry on as they do for the CLI; a wrong one is logged by name, and the run
    goes on without telemetry."""
    from tools.promfile import read as read_textfile

    textfile = tmp_path / "metrics" / "coviu.prom"
    monkeypatch.setenv("COVIU_AGENT_STATE", str(state))
    monkeypatch.setenv("COVIU_AGENT_METRICS_FILE", str(textfile))
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    monkeypatch.setattr(server, "_settings", None)
    previous = telemetry.current()
    telemetry.install(None)
    try:
        triage = {"messages": [{"role": "user", "content": "A priority patient needs a duty nurse now"}]}
        await run_on_server(server, "triage", {**triage, "patient_name": "Ava"}, "t-2")
        assert telemetry.current() is None
        assert "OTEL_TRACES_SAMPLER='sometimes'" in caplog.text
        monkeypatch.delenv("OTEL_TRACES_SAMPLER")
        monkeypatch.setattr(server, "_settings", None)
        await run_on_server(server, "triage", {**triage, "patient_name": "Ava"}, "t-3")
        configured = telemetry.current()
        assert configured is not None and configured.tracer is not None
        configured.shutdown()
    finally:
        telemetry.install(previous)
    samples = read_textfile(textfile)
    labels = (("clinic", DEMO_TEAM_ID), ("graph", "triage"), ("team", DEMO_TEAM_ID))
    assert samples[("coviu_agent_last_run_exit_code", labels)] == 0
    assert [e.thread_id for e in runlog.last_runs(str(state))] == ["t-3"]


async def test_a_server_run_stopped_for_approval_is_pending_until_answered(
    server: Any, state: Path, services: Services, sandbox: Sandbox
):
    """The assistant on the server stops for approval (an interrupt, which LangGraph ends the run on without an
    error): the run log says exit 4 for its thread, which `status` lists as waiting, until the answer's run."""
    from langgraph.types import Command

    from tests.fakes import ScriptedChatModel
    from tests.test_assistant import cancel_script, demo

    services.model = ScriptedChatModel(script=cancel_script)
    future = demo(sandbox).sessions["future"]
    saver = InMemorySaver()
    ask = {"messages": [{"role": "user", "content": f"The patient for session {future} cancelled: cancel it"}]}
    await run_on_server(server, "assistant", ask, "t-ask", saver)
    (waiting,) = runlog.pending_approvals(str(state))
    assert (waiting.graph, waiting.thread_id, waiting.exit_code, waiting.outcome) == (
        "assistant",
        "t-ask",
        4,
        "needs_approval",
    )
    (pending,) = json.loads(status(state, "--json").stdout)["pending_approvals"]
    assert (pending["thread_id"], pending["runs_on"]) == ("t-ask", "server")
    # the thread is the server's: status's next step answers it there, never from this store
    assert pending["resume"] == "coviu-agent ask --server URL --thread-id t-ask"
    assert pending["approve"] == "coviu-agent ask --server URL --thread-id t-ask --yes"
    # what status said before (`ask --thread-id t-ask --yes`) cannot answer it: this store does not hold the thread
    local = await asyncio.to_thread(cli_ask, state, "--thread-id", "t-ask", "--yes")
    assert local.exit_code == 2 and "no such conversation in this state store" in local.output, local.output
    assert sandbox.store.sessions[future].canceled_time is None
    await run_on_server(server, "assistant", Command(resume={"decisions": [{"type": "approve"}]}), "t-ask", saver)
    assert sandbox.store.sessions[future].canceled_time is not None
    assert runlog.pending_approvals(str(state)) == []
    (entry,) = [e for e in runlog.last_runs(str(state)) if e.runner == "server"]  # and the refused CLI run's row
    assert (entry.thread_id, entry.exit_code) == ("t-ask", 0)


def cli_ask(state: Path, *args: str) -> Any:
    """`coviu-agent ask ARGS` in process (in a worker thread: the CLI runs its own event loop), with a model key set
    so that only the thread can be what is wrong."""
    return cli(state, "ask", *args, OPENAI_API_KEY="sk-test-not-used")


class GraphServer(BaseHTTPRequestHandler):
    """A LangGraph server on loopback as far as `langgraph_sdk` sees it (health, thread, thread state, threads search,
    crons search, `runs/wait`), its threads run by the server's own graph (agent/server.py, a checkpointer of the
    test's) on the test's event loop, as `run_on_server` runs them."""

    graph: ClassVar[Any]
    context: ClassVar[Any]
    loop: ClassVar[asyncio.AbstractEventLoop]
    threads: ClassVar[dict[str, dict[str, Any]]]  # thread id -> metadata (graph_id, assistant_id)
    resumed_with: ClassVar[list[dict[str, Any]]]

    def _send(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o)).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _on_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def _state(self, thread: str) -> Any:
        return self._on_loop(self.graph.aget_state({"configurable": {"thread_id": thread}}))

    def _thread(self, thread: str) -> dict[str, Any]:
        waiting = bool(self._state(thread).interrupts)
        metadata = self.threads[thread]
        return {"thread_id": thread, "status": "interrupted" if waiting else "idle", "metadata": metadata}

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["ok"]:
            self._send({"ok": True})
        elif parts[0] == "threads" and parts[1] not in self.threads:
            self._send({"detail": "Thread not found"}, 404)
        elif parts[0] == "threads" and len(parts) == 2:
            self._send(self._thread(parts[1]))
        elif parts[0] == "threads" and parts[2] == "state":
            snapshot = self._state(parts[1])
            interrupts = [{"value": i.value, "id": i.id} for i in snapshot.interrupts]
            self._send({"values": snapshot.values, "next": list(snapshot.next), "tasks": [], "interrupts": interrupts})
        else:
            self._send({"detail": "not found"}, 404)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["threads", "search"]:
            found = [self._thread(t) for t in self.threads]
            self._send([t for t in found if request.get("status") in (None, t["status"])])
        elif parts == ["runs", "crons", "search"]:
            self._send([])
        elif parts[0] == "threads" and parts[2:] == ["runs", "wait"] and parts[1] in self.threads:
            from langgraph.types import Command

            type(self).resumed_with.append(request)
            config = {"configurable": {"thread_id": parts[1], "graph_id": "assistant"}}
            stream = self.graph.astream(
                Command(resume=request["command"]["resume"]), config, context=self.context, stream_mode="values"
            )
            self._send((self._on_loop(steps(stream)) or [{}])[-1])
        else:
            self._send({"detail": "not found"}, 404)

    def log_message(self, *args: object) -> None:
        return None


@contextmanager
def graph_server(server: Any, saver: InMemorySaver, threads: dict[str, dict[str, Any]]) -> Iterator[str]:
    GraphServer.graph = server.assistant.copy(update={"checkpointer": saver})
    GraphServer.context = server.ServerContext()
    GraphServer.loop = asyncio.get_running_loop()
    GraphServer.threads = threads
    GraphServer.resumed_with = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), GraphServer)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        http.server_close()


async def test_status_names_a_server_threads_answer_and_ask_server_shows_it_then_resumes_it_on_the_server(
    server: Any, state: Path, services: Services, sandbox: Sandbox
):
    """A thread that waits for approval on a LangGraph server: `status --server URL` gives the command that answers
    it there, `ask --server URL --thread-id T` shows the pending request (exit 4) and with --yes resumes the thread
    through langgraph_sdk (`runs.wait`, on the thread's own assistant, with the graph's `{"decisions": [...]}`)."""
    from tests.fakes import ScriptedChatModel
    from tests.test_assistant import cancel_script, demo

    services.model = ScriptedChatModel(script=cancel_script)
    future = demo(sandbox).sessions["future"]
    saver = InMemorySaver()
    ask = {"messages": [{"role": "user", "content": f"The patient for session {future} cancelled: cancel it"}]}
    await run_on_server(server, "assistant", ask, "t-ask", saver)
    metadata = {"graph_id": "assistant", "assistant_id": "a-clinic-a"}
    with graph_server(server, saver, {"t-ask": metadata}) as url:
        shown = json.loads((await asyncio.to_thread(status, state, "--server", url, "--json")).stdout)
        review = f"coviu-agent ask --server {url} --thread-id t-ask"
        (on_server,) = shown["server"]["pending_approvals"]
        assert (on_server["thread_id"], on_server["resume"], on_server["approve"]) == (
            "t-ask",
            review,
            f"{review} --yes",
        )
        (logged,) = shown["pending_approvals"]  # the run log's row of the same thread: the same command
        assert (logged["runs_on"], logged["resume"]) == ("server", review)
        text = (await asyncio.to_thread(status, state, "--server", url)).stdout
        assert f"thread t-ask (assistant): review with `{review}`, then add --yes or --no" in text

        listed = await asyncio.to_thread(cli_ask, state, "--server", url, "--thread-id", "t-ask")
        assert listed.exit_code == 4, listed.output
        request = json.loads(listed.stdout)
        assert [a["name"] for a in request["action_requests"]] == ["delete_a_coviu_session_by_id"]
        assert request["resume"] == f"{review} --yes" and GraphServer.resumed_with == []  # shown, nothing sent
        assert sandbox.store.sessions[future].canceled_time is None

        done = await asyncio.to_thread(cli_ask, state, "--server", url, "--thread-id", "t-ask", "--yes", "--json")
        assert done.exit_code == 0, done.output
        outcomes = json.loads(done.stdout)["outcomes"]
        assert [(o["tool"], o["status"]) for o in outcomes][-1] == ("delete_a_coviu_session_by_id", "done")
        assert sandbox.store.sessions[future].canceled_time is not None
        (sent,) = GraphServer.resumed_with
        assert sent["assistant_id"] == "a-clinic-a" and sent["command"] == {
            "resume": {"decisions": [{"type": "approve"}]}
        }
        assert json.loads((await asyncio.to_thread(status, state, "--json")).stdout)["pending_approvals"] == []

        again = await asyncio.to_thread(cli_ask, state, "--server", url, "--thread-id", "t-ask", "--yes")
        assert again.exit_code == 2 and "not waiting for approval" in again.output  # answered once, never twice
        unknown = await asyncio.to_thread(cli_ask, state, "--server", url, "--thread-id", "t-nope", "--no")
        assert unknown.exit_code == 2 and "no such thread on the LangGraph server" in unknown.output
    assert len(GraphServer.resumed_with) == 1


def test_ask_server_refuses_what_it_cannot_answer_before_sending(state: Path):
    for args in (
        ["--server", "ftp://x", "--thread-id", "t"],
        ["--server", "http://127.0.0.1:9", "book a session", "--thread-id", "t"],
        ["--server", "http://127.0.0.1:9"],
        ["--server", "http://127.0.0.1:9", "--thread-id", "t", "--team-id", "team-1"],
    ):
        refused = cli_ask(state, *args)
        assert refused.exit_code == 2 and "--server" in refused.output, (args, refused.output)
    unreachable = cli_ask(state, "--server", "http://127.0.0.1:9", "--thread-id", "t", "--yes")
    assert unreachable.exit_code == 3 and "cannot reach the LangGraph server" in unreachable.output


async def test_a_server_audits_staff_message_names_the_runs_own_clinic(
    server: Any, services: Services, monkeypatch: pytest.MonkeyPatch
):
    # the server's staff messages named the settings' team whatever team the run's context asked for (issue 27)
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph.runtime import Runtime

    from tests.receivers import webhook

    assert services.team_id == DEMO_TEAM_ID  # the settings' team

    async def provided_for(context: Any) -> Services:
        var_child_runnable_config.set(
            {"configurable": {"graph_id": "audit", "__pregel_runtime": Runtime(context=context)}}
        )
        return await server._provide()

    with webhook() as hook:
        monkeypatch.setitem(server._channels, "sandbox", Settings(COVIU_AGENT_NOTIFY=hook.url).channels())  # type: ignore[call-arg]
        provided = await asyncio.create_task(provided_for(server.ServerContext(team_id="team-other")))
        assert provided.on_audit_failed is not None
        await provided.on_audit_failed({"date": "2026-11-24"}, "RetriesExhaustedError: Truto is down", True)
        default = await asyncio.create_task(provided_for(server.ServerContext()))
        assert default.on_audit_failed is not None
        await default.on_audit_failed({"date": "2026-11-24"}, "RetriesExhaustedError: Truto is down", True)
    titles = [post["title"] for post in hook.posts]
    assert titles == [
        "FAILED end-of-day audit: team team-other",
        f"FAILED end-of-day audit: {services.clinic_name or f'team {DEMO_TEAM_ID}'}",
    ]


async def test_server_runs_of_two_accounts_on_one_team_are_two_clinics_in_the_run_log(
    server: Any, services: Services, state: Path, monkeypatch: pytest.MonkeyPatch
):
    # a server run's clinic is the account its context names (the callbacks saw only the settings' team: every
    # account's runs were one row, the last writer's)
    cfg = Settings(
        _env_file=None,  # type: ignore[call-arg]
        COVIU_AGENT_STATE=str(state),
        TRUTO_API_KEY="key-for-test-only",
        TRUTO_INTEGRATED_ACCOUNT_ID="clinic-a",
    )
    monkeypatch.setattr(server, "_settings", cfg)
    for account in ("clinic-a", "clinic-b"):
        monkeypatch.setitem(server._by_account, account, services)  # the sandbox's data behind both accounts
    for account, thread in (("clinic-b", "t-b"), ("clinic-a", "t-a")):
        graph = server.audit.copy(update={"checkpointer": InMemorySaver()})
        config = {"configurable": {"thread_id": thread, "graph_id": "audit"}}
        context = server.ServerContext(integrated_account_id=account)
        await steps(graph.astream({"date": "yesterday"}, config, context=context, stream_mode=["values", "updates"]))
    rows = [(e.clinic, e.team_id, e.thread_id, e.exit_code) for e in runlog.last_runs(str(state))]
    assert rows == [("clinic-a", DEMO_TEAM_ID, "t-a", 0), ("clinic-b", DEMO_TEAM_ID, "t-b", 0)]


async def test_a_cli_ask_and_a_server_assistant_run_of_one_clinic_are_one_graph_in_status(
    server: Any, state: Path, services: Services, sandbox: Sandbox, tmp_path: Path
):
    """`coviu-agent ask` runs the graph the server serves as `assistant` (langgraph.json, the contract): a CLI run and
    a server run of one clinic are logged under that one name, so `status` shows one row (the later run's) and the
    textfile one series, counting both runs."""
    from langchain_core.messages import AIMessage

    from agent.runs import run_ask
    from tests.fakes import ScriptedChatModel
    from tools.promfile import read as read_textfile

    served = "assistant"  # the graph's id on the server, and in the contract
    assert json.loads(Path("langgraph.json").read_text())["graphs"][served]["path"] == "./agent/server.py:assistant"
    services.model = ScriptedChatModel(script=lambda messages, tools: AIMessage("Nothing to do."))
    textfile = tmp_path / "coviu_agent.prom"
    previous = telemetry.install(telemetry.Telemetry(metrics_file=textfile))
    try:
        cli = await run_ask(server._settings, "Anything waiting?", services=services, thread_id="ask:cli")
        assert not cli.needs_approval
        await run_on_server(server, "assistant", {"messages": [{"role": "user", "content": "Anything?"}]}, "t-server")
    finally:
        telemetry.install(previous)
    with sqlite3.connect(state) as conn:
        logged = conn.execute(f"SELECT graph, clinic, thread_id FROM {runlog.TABLE} ORDER BY finished_at").fetchall()
    assert logged == [(served, DEMO_TEAM_ID, "ask:cli"), (served, DEMO_TEAM_ID, "t-server")]
    shown = json.loads(status(state, "--json").stdout)["last_runs"]
    assert [(r["graph"], r["clinic"], r["thread_id"]) for r in shown] == [(served, DEMO_TEAM_ID, "t-server")]
    samples = read_textfile(textfile).items()
    counted = [(dict(labels), value) for (name, labels), value in samples if name == "coviu_agent_runs_total"]
    assert [(labels["graph"], labels["clinic"], value) for labels, value in counted] == [(served, DEMO_TEAM_ID, 2.0)]
