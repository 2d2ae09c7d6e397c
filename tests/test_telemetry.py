"""Operations telemetry (tools/telemetry.py): traces and metrics of real runs through real exporter paths.

The SDK's in-memory exporters receive an audit's spans and metrics; one OTLP/HTTP round trip goes to a receiver on
loopback started here. No attribute, span name or event carries a secret or a demo patient's name.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.errors import EXIT_OK, BadInput
from agent.runs import AuditArgs, TriageArgs, run_audit, run_triage
from agent.settings import Settings
from graphs.context import Services
from sandbox import DEMO_ACCOUNT_ID, DEMO_TEAM_ID, FaultConfig, Sandbox
from sandbox import demo as sandbox_demo
from tools import telemetry
from tools.promfile import read as read_textfile
from tools.ratelimit import RateLimitBudget

pytestmark = pytest.mark.profiles("default")

SECRET = "sk-test-SECRET-token-0123456789abcdef"


def patient_names() -> set[str]:
    """Every name the sandbox gives a patient: the demo day's and the synthetic days' first and last names."""
    names = set(sandbox_demo._FIRST_NAMES) | set(sandbox_demo._LAST_NAMES)
    source = Path(sandbox_demo.__file__).read_text(encoding="utf-8")
    for first, last in re.findall(r'_Visit\("[a-z_]+", "[^"]*", "[^"]*", "(\w+) (\w+)"', source):
        names |= {first, last}
    assert {"Ava", "Jenkins", "Zoe", "Martin"} <= names  # the scan knows the demo patients
    return names


def leaks(texts: list[str]) -> list[str]:
    """The texts that carry a secret or a patient's name (as a word)."""
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, patient_names()))) + r")\b")
    return [t for t in texts if SECRET in t or "sandbox-key" in t or pattern.search(t)]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_MCP_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "state.db"))  # type: ignore[call-arg]


@pytest.fixture
def in_memory() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader, telemetry.Telemetry]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    installed = telemetry.Telemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]))
    previous = telemetry.install(installed)
    yield spans, reader, installed
    telemetry.install(previous)


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """name -> [(attributes, value or histogram sum)] of what the reader collected."""
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    out.setdefault(metric.name, []).append(
                        (dict(point.attributes or {}), float(value if value is not None else point.sum))  # type: ignore[attr-defined]
                    )
    return out


def exported_texts(spans: list[ReadableSpan], points: dict[str, list[tuple[dict[str, Any], float]]]) -> list[str]:
    texts: list[str] = []
    for span in spans:
        texts.append(span.name)
        texts += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            texts.append(event.name)
            texts += [f"{k}={v}" for k, v in (event.attributes or {}).items()]
        if span.status.description:
            texts.append(span.status.description)
    for name, rows in points.items():
        texts += [f"{name} {k}={v}" for attrs, _ in rows for k, v in attrs.items()]
    return texts


def parent_chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    chain = []
    current: ReadableSpan | None = span
    while current is not None:
        chain.append(current.name)
        parent = current.parent
        current = by_id.get(parent.span_id) if parent is not None else None
    return chain


async def test_an_audit_is_traced_run_node_tool_request_and_counted(
    settings: Settings, services: Services, sandbox: Sandbox, in_memory: Any
):
    spans_exporter, reader, _ = in_memory
    before = sandbox.count()
    sandbox.set_faults(FaultConfig(seed=11, rate_limit_storm=0.3))
    services.toolbox.client.budget = RateLimitBudget(1800)
    result = await run_audit(settings, AuditArgs(day="yesterday"), services=services, checkpointer=InMemorySaver())
    assert result.exit_code == EXIT_OK
    spans = list(spans_exporter.get_finished_spans())
    by_id = {s.context.span_id: s for s in spans}
    runs = [s for s in spans if s.name == "run audit"]
    assert len(runs) == 1
    run = runs[0]
    assert run.attributes is not None
    assert run.attributes["coviu.clinic"] == DEMO_TEAM_ID and run.attributes["coviu.outcome"] == "done"
    assert run.attributes["coviu.sessions"] == len(result.report["sessions"])  # type: ignore[index]
    # a request is an event on its tool call's span, under a graph node, under the run (one span a request fewer)
    assert not any(s.name.startswith(("GET ", "POST ")) for s in spans)
    sent_from = [s for s in spans if any(e.name == "GET sessions" for e in s.events)]
    assert sent_from, sorted({s.name for s in spans})
    chain = parent_chain(sent_from[0], by_id)
    assert chain[:2] == ["tool list_all_coviu_sessions", "node list_sessions"] and chain[-1] == "run audit"
    request = next(e for e in sent_from[0].events if e.name == "GET sessions")
    assert dict(request.attributes or {}).keys() >= {"http.route", "http.response.status_code"}
    events = [e for s in spans for e in s.events]
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}  # one trace
    # the storm's 429s: on their requests' events and a `rate_limited` event beside them; the waits as spans
    requests = [e for e in events if e.name.startswith(("GET ", "POST ", "PATCH "))]
    # the summaries' fan-out (a batch of one tool's calls in one node step) is one span: its calls and requests
    # counted on it, only the requests that failed events; every other request an event on its call's span
    fan_outs = [s for s in spans if "coviu.tool.calls" in (s.attributes or {})]
    assert [s.name for s in fan_outs] == ["tool get_single_coviu_session_summary_by_id"] * len(fan_outs) != []
    assert all(parent_chain(s, by_id)[1] == "node fetch_summaries" for s in fan_outs)
    assert not any(s.name == "tool get_single_coviu_session_summary_by_id" and s not in fan_outs for s in spans)
    fan_out_attributes = [dict(s.attributes or {}) for s in fan_outs]
    in_fan_outs = sum(int(a["coviu.http.requests"]) for a in fan_out_attributes)  # type: ignore[call-overload]
    failed_in_fan_outs = [e for s in fan_outs for e in s.events if e.name.startswith("GET ")]
    singles = [e for e in requests if e not in failed_in_fan_outs]
    assert len(singles) + in_fan_outs == sandbox.count() - before
    statuses: dict[str, int] = {}
    for attributes in fan_out_attributes:
        for key, value in attributes.items():
            if key.startswith("coviu.http.status."):
                statuses[key] = statuses.get(key, 0) + int(value)  # type: ignore[call-overload]
    assert statuses.get("coviu.http.status.200", 0) > 0
    assert len(failed_in_fan_outs) == sum(v for k, v in statuses.items() if k != "coviu.http.status.200")
    calls = sum(int(a["coviu.tool.calls"]) for a in fan_out_attributes)  # type: ignore[call-overload]
    outcomes = sum(int(v) for a in fan_out_attributes for k, v in a.items() if k.startswith("coviu.tool.outcome."))  # type: ignore[call-overload]
    assert calls == outcomes > 0
    routes = {str((e.attributes or {})["http.route"]) for e in requests}  # ids as {id}: a few routes, no id to check
    assert "/proxy/session_summaries/{id}" in routes and all(p == "{id}" for r in routes for p in r.split("/")[3:])
    limited = [s for s in spans if any((e.attributes or {}).get("http.response.status_code") == 429 for e in s.events)]
    assert limited and all(any(e.name == "rate_limited" for e in s.events) for s in limited)
    assert any(s.name == "wait retry" for s in spans)
    refused = [e for e in requests if (e.attributes or {}).get("http.response.status_code") == 429]
    assert sandbox.count(status=429) == len(refused)
    assert {(e.attributes or {}).get("error.type") for e in refused} == {"RateLimitedError"}  # its type, no message

    points = metric_points(reader)
    requests_by_status = {
        (a["resource"], a["status_code"]): v for a, v in points["coviu_agent.http.requests"] if a["account"]
    }
    assert sum(requests_by_status.values()) == sandbox.count() - before
    assert sum(v for a, v in points["coviu_agent.rate_limited"]) == sandbox.count(status=429)
    assert all(a["account"] == DEMO_ACCOUNT_ID for a, _ in points["coviu_agent.rate_limited"])
    assert sum(v for a, v in points["coviu_agent.wait"] if a["kind"] == "retry") > 0
    assert points["coviu_agent.sessions.audited"] == [
        ({"clinic": DEMO_TEAM_ID, "team": DEMO_TEAM_ID}, len(result.report["sessions"]))
    ]  # type: ignore[index]
    flags = {a["kind"]: v for a, v in points["coviu_agent.flags"]}
    assert flags["overrun"] == result.report["totals"]["overruns"]  # type: ignore[index]
    assert flags["missing_form"] == result.report["totals"]["missing_forms"]  # type: ignore[index]
    runs_counted = points["coviu_agent.runs"]
    assert [(a["graph"], a["clinic"], a["outcome"], a["exit_code"]) for a, _ in runs_counted] == [
        ("audit", DEMO_TEAM_ID, "done", 0)
    ]
    assert points["coviu_agent.run.duration"][0][1] > 0

    assert leaks(exported_texts(spans, points)) == []


async def test_triage_with_a_patient_name_exports_ids_and_counts_only(
    settings: Settings, services: Services, in_memory: Any
):
    spans_exporter, reader, _ = in_memory
    args = TriageArgs(request="Ava Jenkins needs a duty nurse now", patient_name="Ava Jenkins")
    result = await run_triage(settings, args, services=services, checkpointer=InMemorySaver())
    assert result.exit_code == EXIT_OK
    spans = list(spans_exporter.get_finished_spans())
    assert any(s.name == "tool create_a_coviu_participant" for s in spans)
    assert any(e.name == "POST sessions" for s in spans for e in s.events)
    assert leaks(exported_texts(spans, metric_points(reader))) == []


def test_attributes_are_ids_or_withheld():
    safe = telemetry.safe_attributes(
        {"id": "sess_123-abc", "name": "Ava Jenkins", "n": 3, "gone": None, "key": f"Bearer {SECRET}", "ok": True}
    )
    assert safe == {"id": "sess_123-abc", "name": telemetry.WITHHELD, "n": 3, "key": telemetry.WITHHELD, "ok": True}


def test_a_value_checked_before_its_secret_was_registered_is_withheld_after():
    """Checked strings are remembered (most repeat on every request), but not past a change of the secrets."""
    from tools.textsafety import REDACTOR, register_secrets

    token = "acct-7Hq2x9Lm4Pz8"  # looks like an id until it is known to be a secret
    try:
        assert telemetry.safe_attributes({"coviu.account": token}) == {"coviu.account": token}
        register_secrets([token])
        assert telemetry.safe_attributes({"coviu.account": token}) == {"coviu.account": telemetry.WITHHELD}
        assert telemetry.safe_text(token) == telemetry.WITHHELD
    finally:
        REDACTOR.forget()
    assert telemetry.safe_text(token) == token


def test_a_pacing_wait_is_an_event_on_the_tool_call_and_a_retry_wait_a_span(in_memory: Any):
    spans_exporter, reader, _ = in_memory
    with telemetry.run("audit", "team-1"), telemetry.tool_call("get_single_coviu_session_summary_by_id") as call:
        with telemetry.waiting(0.2, telemetry.PACING, "http://x#acct-1"):
            pass
        with telemetry.waiting(10.0, "retry", "http://x#acct-1", "rate limited (429)"):
            pass
        call.done("ok")
    spans = {s.name: s for s in spans_exporter.get_finished_spans()}
    assert "wait pacing" not in spans and "wait retry" in spans
    tool = spans["tool get_single_coviu_session_summary_by_id"]
    (pacing,) = [e for e in tool.events if e.name == "wait"]
    assert dict(pacing.attributes or {}) == {"coviu.wait.kind": "pacing", "coviu.wait.seconds": 0.2}
    assert spans["wait retry"].parent is not None and spans["wait retry"].parent.span_id == tool.context.span_id
    assert (spans["wait retry"].attributes or {})["coviu.wait.reason"] == "rate_limited_429"
    waits = {a["kind"]: v for a, v in metric_points(reader)["coviu_agent.wait"]}
    assert waits == {"pacing": 0.2, "retry": 10.0}


def test_a_fan_out_of_one_tool_is_one_span_counting_its_calls_with_an_event_per_failed_request(in_memory: Any):
    """The audit's summaries (250 calls a step): one span for the batch, not one a call; what failed stays visible
    one by one, the metrics count every call and request."""
    spans_exporter, reader, _ = in_memory
    tool = "get_single_coviu_session_summary_by_id"
    with telemetry.run("audit", "team-1"), telemetry.tool_calls(tool):
        for i, status in enumerate([200, 200, 429, 200, 502]):
            with telemetry.tool_call(tool) as call:
                with telemetry.waiting(0.25, telemetry.PACING, "http://x#acct-1"):
                    pass
                with telemetry.http_request("GET", f"/proxy/session_summaries/s-{i}", "acct-1"):
                    telemetry.http_status(status)
                    if status == 429:
                        telemetry.rate_limited("http://x#acct-1")
                        with telemetry.waiting(3.0, "retry", "http://x#acct-1", "rate limited (429)"):
                            pass
                call.done("ok" if status == 200 else "transient")
    spans = list(spans_exporter.get_finished_spans())
    assert sorted(s.name for s in spans) == ["run audit", f"tool {tool}", "wait retry"]
    (fan_out,) = [s for s in spans if s.name == f"tool {tool}"]
    attributes = dict(fan_out.attributes or {})
    assert {k: v for k, v in attributes.items() if not k.startswith("coviu.http.seconds")} == {
        "coviu.tool": tool,
        "coviu.tool.calls": 5,
        "coviu.tool.outcome": "mixed",
        "coviu.tool.outcome.ok": 3,
        "coviu.tool.outcome.transient": 2,
        "coviu.http.requests": 5,
        "coviu.http.status.200": 3,
        "coviu.http.status.429": 1,
        "coviu.http.status.502": 1,
        "coviu.wait.pacing.count": 5,
        "coviu.wait.pacing.seconds": 1.25,
    }
    assert 0 <= attributes["coviu.http.seconds.max"] <= attributes["coviu.http.seconds.sum"]  # type: ignore[operator]
    # the failed requests (and the 429's own event) one by one, in order; the successes only in the counts
    assert [(e.name, (e.attributes or {}).get("http.response.status_code")) for e in fan_out.events] == [
        ("rate_limited", 429),
        ("GET session_summaries", 429),
        ("GET session_summaries", 502),
    ]
    (retry,) = [s for s in spans if s.name == "wait retry"]
    assert retry.parent is not None and retry.parent.span_id == fan_out.context.span_id
    points = metric_points(reader)
    assert sum(v for _, v in points["coviu_agent.http.requests"]) == 5
    assert {a["outcome"]: v for a, v in points["coviu_agent.tool.calls"]} == {"ok": 3, "transient": 2}
    assert {a["kind"]: v for a, v in points["coviu_agent.wait"]} == {"pacing": 1.25, "retry": 3.0}


def test_a_fan_out_whose_calls_all_succeed_says_their_outcome(in_memory: Any):
    spans_exporter, _, _ = in_memory
    with telemetry.run("audit", "team-1"), telemetry.tool_calls("t"):
        for _ in range(3):
            with telemetry.tool_call("t") as call, telemetry.http_request("GET", "/proxy/x/1", "acct-1"):
                telemetry.http_status(200)
                call.done("ok")
    (fan_out,) = [s for s in spans_exporter.get_finished_spans() if s.name == "tool t"]
    assert (fan_out.attributes or {})["coviu.tool.outcome"] == "ok" and not fan_out.events


def test_counters_add_up_across_collections_as_integers(in_memory: Any):
    """Counters are summed in-process and observed at each collection: cumulative, one point per label set."""
    _, reader, installed = in_memory
    installed.add("coviu_agent.http.requests", 1, {"account": "a-1", "resource": "sessions", "status_code": 200})
    installed.add("coviu_agent.http.requests", 1, {"status_code": 200, "resource": "sessions", "account": "a-1"})
    assert metric_points(reader)["coviu_agent.http.requests"] == [
        ({"account": "a-1", "resource": "sessions", "status_code": 200}, 2)
    ]
    installed.add("coviu_agent.http.requests", 1, {"account": "a-1", "resource": "sessions", "status_code": 200})
    installed.add("coviu_agent.http.requests", 1, {"account": "a-1", "resource": "sessions", "status_code": 429})
    points = sorted(metric_points(reader)["coviu_agent.http.requests"], key=lambda p: str(p[0]["status_code"]))
    assert [(a["status_code"], v) for a, v in points] == [(200, 3), (429, 1)]
    data = reader.get_metrics_data()
    assert data is not None
    sums = [m.data for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert all(s.is_monotonic and all(isinstance(p.value, int) for p in s.data_points) for s in sums)  # type: ignore[union-attr]


def test_no_exemplars_unless_the_standard_variable_asks():
    """The SDK's default samples an exemplar for each latency recorded inside a span; here none, unless asked."""
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    assert isinstance(telemetry.exemplar_filter({}), AlwaysOffExemplarFilter)
    assert telemetry.exemplar_filter({"OTEL_METRICS_EXEMPLAR_FILTER": "trace_based"}) is None  # the SDK reads it
    previous = telemetry.current()
    configured = telemetry.setup(environ={"OTEL_METRICS_EXPORTER": "console"})
    try:
        assert configured is not None and configured.meter_provider is not None
        config = configured.meter_provider._sdk_config  # type: ignore[attr-defined]
        assert isinstance(config.exemplar_filter, AlwaysOffExemplarFilter)
    finally:
        telemetry.install(previous)
        if configured is not None:
            configured.shutdown()


def test_off_unless_configured_and_a_wrong_exporter_is_named():
    assert telemetry.exporter_for("traces", {}) is None
    assert telemetry.exporter_for("traces", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == "otlp"
    assert telemetry.exporter_for("metrics", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"}) is None
    off = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    assert telemetry.exporter_for("traces", off) is None
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}
    assert telemetry.exporter_for("traces", on) is None
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        telemetry.exporter_for("traces", {"OTEL_TRACES_EXPORTER": "zipkin"})
    previous = telemetry.current()
    try:
        assert telemetry.setup(environ={}) is None and telemetry.current() is None
    finally:
        telemetry.install(previous)


def test_nothing_of_opentelemetry_is_imported_when_not_configured(tmp_path: Path):
    """A command on the embedded sandbox with no OTEL_* variable imports no OpenTelemetry module."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from agent.cli import app\n"
        "result = CliRunner().invoke(app, ['tools', '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus_client'))))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "COVIU_AGENT_SANDBOX": "1",
        "COVIU_AGENT_STATE": str(tmp_path / "s.db"),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).received.append((self.path, body, self.headers.get("content-type", "")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes, str]]]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.received
    server.shutdown()
    server.server_close()


async def test_one_otlp_http_round_trip_to_a_loopback_receiver(
    settings: Settings, services: Services, receiver: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    url, received = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "coviu-agent-test")
    previous = telemetry.current()
    configured = None
    try:
        configured = telemetry.setup()
        assert configured is not None and configured.tracer_provider is not None
        result = await run_audit(settings, AuditArgs(day="yesterday"), services=services, checkpointer=InMemorySaver())
        assert result.exit_code == EXIT_OK
    finally:
        telemetry.install(previous)
        if configured is not None:
            configured.shutdown()  # exports what is left, and stops the periodic reader
    traces = [body for path, body, kind in received if path == "/v1/traces"]
    metrics = [body for path, body, kind in received if path == "/v1/metrics"]
    assert traces and metrics
    assert all(kind == "application/x-protobuf" for _, _, kind in received)
    names: list[str] = []
    texts: list[str] = []
    for body in traces:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            assert service == "coviu-agent-test"
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    names.append(span.name)
                    texts += [span.name, *(f"{a.key}={a.value}" for a in span.attributes)]
                    for event in span.events:
                        names.append(event.name)
                        texts += [event.name, *(f"{a.key}={a.value}" for a in event.attributes)]
    assert "run audit" in names and "node fetch_summaries" in names and "GET sessions" in names
    metric_names = {
        m.name
        for body in metrics
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {"coviu_agent.http.requests", "coviu_agent.runs", "coviu_agent.sessions.audited"} <= metric_names
    assert leaks(texts) == []


async def test_the_textfile_keeps_each_clinics_last_run_and_adds_up_counters(
    settings: Settings, services: Services, tmp_path: Path
):
    path = tmp_path / "textfile" / "coviu_agent.prom"
    previous = telemetry.install(telemetry.Telemetry(metrics_file=path))
    try:
        first = await run_audit(settings, AuditArgs(day="yesterday"), services=services, checkpointer=InMemorySaver())
        after_one = read_textfile(path)
        second = await run_audit(
            settings, AuditArgs(day="yesterday", refresh=True), services=services, checkpointer=InMemorySaver()
        )
        with pytest.raises(BadInput):
            await run_audit(settings, AuditArgs(day="not-a-day"), services=services, checkpointer=InMemorySaver())
    finally:
        telemetry.install(previous)
    assert first.exit_code == second.exit_code == EXIT_OK
    samples = read_textfile(path)
    labels = (("clinic", DEMO_TEAM_ID), ("graph", "audit"), ("team", DEMO_TEAM_ID))  # no account: its team
    assert samples[("coviu_agent_last_run_exit_code", labels)] == 2  # the last run was refused: bad input
    assert samples[("coviu_agent_last_run_success", labels)] == 0
    refused = (
        ("clinic", DEMO_TEAM_ID),
        ("exit_code", "2"),
        ("graph", "audit"),
        ("outcome", "bad_input"),
        ("team", DEMO_TEAM_ID),
    )
    assert samples[("coviu_agent_runs_total", refused)] == 1
    assert (
        samples[("coviu_agent_last_run_timestamp_seconds", labels)]
        >= after_one[("coviu_agent_last_run_timestamp_seconds", labels)]
    )
    assert after_one[("coviu_agent_last_run_duration_seconds", labels)] > 0
    runs = (
        ("clinic", DEMO_TEAM_ID),
        ("exit_code", "0"),
        ("graph", "audit"),
        ("outcome", "done"),
        ("team", DEMO_TEAM_ID),
    )
    assert after_one[("coviu_agent_runs_total", runs)] == 1 and samples[("coviu_agent_runs_total", runs)] == 2
    sessions = len(second.report["sessions"])  # type: ignore[index]
    assert (
        samples[("coviu_agent_sessions_audited_total", (("clinic", DEMO_TEAM_ID), ("team", DEMO_TEAM_ID)))]
        == 2 * sessions
    )
    requests = sum(v for (name, _), v in samples.items() if name == "coviu_agent_http_requests_total")
    assert requests > after_one[next(k for k in after_one if k[0] == "coviu_agent_http_requests_total")]
    assert sorted(p.name for p in path.parent.iterdir()) == ["coviu_agent.prom", "coviu_agent.prom.lock"]
    text = path.read_text()
    assert "# TYPE coviu_agent_last_run_success gauge" in text and "# TYPE coviu_agent_runs_total counter" in text
    assert leaks(text.splitlines()) == []


async def test_a_corrupt_textfile_is_replaced_and_the_run_keeps_its_outcome(
    settings: Settings, services: Services, tmp_path: Path
):
    # a half-written file from another exporter, a disk that filled up, a person's edit: the audit's report is
    # written, so its exit code is its own (0), and the file is rewritten from this run's counts
    path = tmp_path / "coviu_agent.prom"
    path.write_text('garbage{{{ not a metric\ncoviu_agent_runs_total{clinic="x" 1\n', encoding="utf-8")
    previous = telemetry.install(telemetry.Telemetry(metrics_file=path))
    try:
        result = await run_audit(settings, AuditArgs(day="yesterday"), services=services, checkpointer=InMemorySaver())
    finally:
        telemetry.install(previous)
    assert result.exit_code == EXIT_OK
    samples = read_textfile(path)
    labels = (("clinic", DEMO_TEAM_ID), ("graph", "audit"), ("team", DEMO_TEAM_ID))
    assert samples[("coviu_agent_last_run_exit_code", labels)] == 0
    assert "garbage" not in path.read_text(encoding="utf-8")


def test_the_sampler_is_the_standard_variables_parent_based_ratio_by_default():
    from opentelemetry.sdk.trace import sampling

    default = telemetry.sampler({})
    assert isinstance(default, sampling.ParentBased) and "TraceIdRatioBased{1.0}" in default.get_description()
    tenth = telemetry.sampler({"OTEL_TRACES_SAMPLER_ARG": "0.1"})
    assert "TraceIdRatioBased{0.1}" in tenth.get_description()
    assert telemetry.sampler({"OTEL_TRACES_SAMPLER": "always_off"}) is sampling.ALWAYS_OFF
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER='sometimes'"):
        telemetry.sampler({"OTEL_TRACES_SAMPLER": "sometimes"})
    with pytest.raises(ValueError, match=r"OTEL_TRACES_SAMPLER_ARG='1\.5': expected a ratio from 0 to 1"):
        telemetry.sampler({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"})
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG='often'"):
        telemetry.setup(environ={"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER_ARG": "often"})
    previous = telemetry.current()
    configured = telemetry.setup(environ={"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    try:
        assert configured is not None and configured.tracer_provider is not None
        assert "TraceIdRatioBased{0.25}" in configured.tracer_provider.sampler.get_description()  # type: ignore[attr-defined]
    finally:
        telemetry.install(previous)
        if configured is not None:
            configured.shutdown()


async def test_a_run_the_sampler_leaves_out_exports_no_span_and_is_still_counted(
    settings: Settings, services: Services, sandbox: Sandbox
):
    from opentelemetry.sdk.trace import sampling

    class Asked(sampling.ParentBased):
        """The default sampler, recording which spans it was asked about."""

        names: ClassVar[list[str]] = []

        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            return super().should_sample(parent_context, trace_id, name, *args, **kwargs)

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=Asked(sampling.TraceIdRatioBased(0.0)))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    previous = telemetry.install(
        telemetry.Telemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]))
    )
    before = sandbox.count()
    try:
        result = await run_audit(settings, AuditArgs(day="yesterday"), services=services, checkpointer=InMemorySaver())
    finally:
        telemetry.install(previous)
    assert result.exit_code == EXIT_OK
    assert spans.get_finished_spans() == ()  # the run's children follow its decision: none recorded
    # and none of the tool calls' spans is even started (the sampler asked once a call): the run's and its nodes' only
    assert "run audit" in Asked.names and not [n for n in Asked.names if not n.startswith(("run ", "node "))]
    points = metric_points(reader)
    assert sum(v for _, v in points["coviu_agent.http.requests"]) == sandbox.count() - before
    assert [a["outcome"] for a, _ in points["coviu_agent.runs"]] == ["done"]
