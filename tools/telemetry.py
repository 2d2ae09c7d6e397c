"""Traces and metrics: OpenTelemetry (OTLP over HTTP) and a Prometheus textfile, both off unless configured.

Off (the default), every call here is a no-op and nothing of OpenTelemetry is imported. On, by the standard
`OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`, ...) and/or
`COVIU_AGENT_METRICS_FILE` (`setup`, called once when the CLI reads its settings):

- traces: a run (`run`) → its graph nodes (a LangChain callback handler, while a run is open) → tool calls
  (`tool_call`, in `graphs/nodes.py`), each HTTP request (`http_request`, in the Truto client) an event on the
  span it was sent from (its method and resource, route, status, latency), retry waits as spans (`waiting`), pacing
  waits, 429s and the budgeted rate-limit waits as events; sampled by the standard `OTEL_TRACES_SAMPLER(_ARG)`
  (`sampler`: by default `parentbased_traceidratio` at 1.0, every run traced whole);
- metrics: requests, 429s, latency by account and resource; wait seconds by kind; tool calls by outcome; sessions
  audited, flags by kind, alerts, runs and their duration by clinic and outcome.

Attributes carry ids, names of tools and resources, counts and outcomes only, never a secret or a patient's name:
every string goes through the redactor and must look like an id (`safe_attributes`), or is withheld.

This module is the recording API (spans, events, runs) and `setup`; what attributes may carry is checked in
`tools/telemetry_attributes.py`, the configuration (instruments, exporters, sampler, providers) is read in
`tools/telemetry_providers.py`; their names are importable from here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tools.telemetry_attributes import (
    WITHHELD,
    AttrValue,
    account_of,
    checked_attributes,
    resource_of,
    route_of,
    safe_attributes,
    safe_text,
)
from tools.telemetry_handles import (
    _NO_SPAN,
    FAN_OUT_EVENTS,
    Run,
    ToolCall,
    _Detached,
    _FanOut,
    _NoSpan,
    _SpanHandle,
)
from tools.telemetry_providers import (
    DEFAULT_SAMPLER,
    EXPORT_TIMEOUT,
    EXPORTERS,
    METRICS,
    SAMPLERS,
    SERVICE_NAME,
    SPAN_EXPORT_DELAY_MS,
    CollectorWatch,
    RunRecord,
    Telemetry,
    collector_of,
    exemplar_filter,
    export_timeout,
    exporter_for,
    sampler,
    span_export_delay,
)

# what attributes may carry (tools/telemetry_attributes.py) and the configuration (tools/telemetry_providers.py):
# importable from here, with the recording API
__all__ = [
    "DEFAULT_SAMPLER",
    "EXPORTERS",
    "EXPORT_TIMEOUT",
    "METRICS",
    "SAMPLERS",
    "SERVICE_NAME",
    "SPAN_EXPORT_DELAY_MS",
    "WITHHELD",
    "AttrValue",
    "Run",
    "RunRecord",
    "Telemetry",
    "ToolCall",
    "account_of",
    "checked_attributes",
    "collector_of",
    "exemplar_filter",
    "export_timeout",
    "exporter_for",
    "resource_of",
    "route_of",
    "safe_attributes",
    "safe_text",
    "sampler",
    "span_export_delay",
]

PACING = "pacing"  # the governor's wait before a send (an event, not a span: `waiting`)
# A run's outcome by its exit code (the CLI's table).
OUTCOMES = {0: "done", 2: "bad_input", 3: "upstream_failure", 4: "needs_approval", 5: "incomplete", 130: "interrupted"}


# --- the state ---------------------------------------------------------------------------------------------------


_CURRENT: Telemetry | None = None
_REQUEST: ContextVar[dict[str, AttrValue] | None] = ContextVar("coviu_telemetry_request", default=None)
_FAN_OUT: ContextVar[_FanOut | None] = ContextVar("coviu_telemetry_fan_out", default=None)


def current() -> Telemetry | None:
    return _CURRENT


def install(telemetry: Telemetry | None) -> Telemetry | None:
    """Make `telemetry` the process's (None: off). Returns the previous one. Tests install in-memory providers."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, telemetry
    return previous


def setup(*, metrics_file: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Telemetry | None:
    """Turn telemetry on as the environment asks (standard `OTEL_*` variables, OTLP over HTTP) and/or with a
    Prometheus textfile; off (None, nothing imported) when neither is asked for. Raises ValueError naming a bad
    variable."""
    env = os.environ if environ is None else environ
    traces = exporter_for("traces", env)
    metrics = exporter_for("metrics", env)
    path = Path(metrics_file).expanduser() if metrics_file else None
    if traces is None and metrics is None and path is None:
        install(None)
        return None
    trace_sampler = sampler(env) if traces is not None else None  # a wrong variable named before anything starts
    span_export_delay(env)
    # a down collector costs a command at most this (each export, retries included; the whole flush at exit)
    timeouts = {signal: export_timeout(signal, env) for signal in ("traces", "metrics")}
    from tools.textsafety import register_secrets

    # a collector's credentials (`key=value,...` headers) are secrets like the rest: never in a log line
    for variable in (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ):
        register_secrets(pair.partition("=")[2].strip() for pair in env.get(variable, "").split(",") if "=" in pair)
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    tracer_provider = None
    if traces is not None:
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        span_exporter: SpanExporter
        if traces == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(timeout=timeouts["traces"])
        else:
            span_exporter = ConsoleSpanExporter()
        # shut down by us at exit, within the deadline (below), not by the SDK's own unbounded atexit hook
        tracer_provider = SdkTracerProvider(resource=resource, sampler=trace_sampler, shutdown_on_exit=False)
        delay = span_export_delay(env)  # ours 30 s, the SDK's 5 s (`SPAN_EXPORT_DELAY_MS`)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, schedule_delay_millis=delay))
    meter_provider = None
    if metrics is not None:
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricExporter,
            PeriodicExportingMetricReader,
        )

        metric_exporter: MetricExporter
        if metrics == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            metric_exporter = OTLPMetricExporter(timeout=timeouts["metrics"])
        else:
            metric_exporter = ConsoleMetricExporter()
        meter_provider = SdkMeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(metric_exporter)],
            exemplar_filter=exemplar_filter(env),
            shutdown_on_exit=False,
        )
    watch = None
    if "otlp" in (traces, metrics):
        watch = CollectorWatch(collector_of(env))
        watch.attach()
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        metrics_file=path,
        deadline=max(timeouts.values()),
        watch=watch,
    )
    if tracer_provider is not None or meter_provider is not None:
        atexit.register(telemetry.shutdown)
    install(telemetry)
    return telemetry


# --- spans -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def span(name: str, **attributes: object) -> Iterator[_NoSpan]:
    """A span named `name` (child of the current one) around the block; an exception marks it failed, by type only
    (an error's message may quote what a server said)."""
    telemetry = _CURRENT
    tracer = telemetry.tracer if telemetry is not None else None
    if tracer is None:
        yield _NO_SPAN
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    nodes = telemetry.node_spans if telemetry is not None else None
    parent = nodes.parent_context(_RUN_SPAN.get()) if nodes is not None else None
    above = trace.get_current_span(parent).get_span_context()
    if above.is_valid and not above.trace_flags.sampled:
        # in a run the sampler left out: every sampler here leaves out its spans' children too (parent-based, or
        # a ratio of the same trace id), so none is started (the SDK's sampling and non-recording span per call)
        yield _NO_SPAN
        return
    # start_span and attach (not start_as_current_span): two context managers fewer on every request's path;
    # the attributes checked only when the span records (the sampler decides on the run's trace id alone)
    current_span = tracer.start_span(name, context=parent, record_exception=False)
    if current_span.is_recording():
        current_span.set_attributes(checked_attributes(attributes))
    token = otel_context.attach(trace.set_span_in_context(current_span, parent))
    try:
        yield _SpanHandle(current_span)
    except BaseException as exc:
        from opentelemetry.trace import Status, StatusCode

        current_span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        current_span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        otel_context.detach(token)
        current_span.end()


def event(name: str, **attributes: object) -> None:
    """An event on the current span."""
    _add_event(name, attributes)


def _add_event(name: str, attributes: Mapping[str, object], timestamp: int | None = None) -> None:
    """An event on the current span (a node's, in a node outside any tool call), at `timestamp` (ns) or now."""
    telemetry = _CURRENT
    if telemetry is None or telemetry.tracer is None:
        return
    from opentelemetry import trace

    current_span = trace.get_current_span()
    nodes = telemetry.node_spans
    if nodes is not None and (current_span is _RUN_SPAN.get() or current_span is trace.INVALID_SPAN):
        current_span = nodes.node_span() or current_span  # in a node, outside any tool call: the node's
    if current_span.is_recording():
        fan_out = _FAN_OUT.get()
        if fan_out is not None and current_span is fan_out.span:  # a fan-out's: the first FAN_OUT_EVENTS listed
            if fan_out.events >= FAN_OUT_EVENTS:
                fan_out.unlisted += 1
                return
            fan_out.events += 1
        current_span.add_event(name, checked_attributes(attributes), timestamp)


# --- the instrumented places ----------------------------------------------------------------------------------


@contextlib.contextmanager
def tool_calls(name: str) -> Iterator[None]:
    """Many calls of one tool at once, in one node step (a fan-out: the audit's summaries, up to 250 a step) traced
    as one span, `tool {name}`, instead of a span a call: its calls by outcome, its requests by status, their
    latency (sum, max) and pacing (count, seconds) as attributes; each request that did not succeed (an error, a
    4xx/5xx, a 429 with its `rate_limited` event) an event on it as on a single call's span, each retry's wait a
    span under it. The metrics count every call and request as before. A span a call, its request an event, is
    most of what tracing costs an audit (bench/README.md); a fan-out's calls differ only by their ids."""
    telemetry = _CURRENT
    if telemetry is None or telemetry.tracer is None:
        yield
        return
    fan_out = _FanOut(name)
    with span(f"tool {name}", **{"coviu.tool": name}) as handle:
        fan_out.span = getattr(handle, "span", None)
        token = _FAN_OUT.set(fan_out)
        try:
            yield
        finally:
            _FAN_OUT.reset(token)
            handle.set(**fan_out.attributes())


@contextlib.contextmanager
def http_request(verb: str, path: str, account: str) -> Iterator[None]:
    """One request to Truto (the Truto client, after pacing): the request count and latency, and an event named
    `{verb} {resource}` on the span it was sent from (a tool call's): one span a request fewer than a span of its
    own, the SDK's span being most of what tracing costs a request."""
    telemetry = _CURRENT
    if telemetry is None:
        yield
        return
    resource = resource_of(path)
    attrs: dict[str, AttrValue] = {"coviu.account": account, "coviu.resource": resource}
    token = _REQUEST.set(attrs)
    started_ns = time.time_ns()
    started = time.perf_counter()
    failed: str | None = None
    try:
        yield
    except BaseException as exc:
        failed = type(exc).__name__  # by type only: an error's message may quote what a server said
        raise
    finally:
        _REQUEST.reset(token)
        seconds = time.perf_counter() - started
        status = attrs.get("http.response.status_code", 0)
        fan_out = _FAN_OUT.get() if telemetry.tracer is not None else None
        if fan_out is not None:  # in a fan-out: added up on its span; an event only for a request that failed
            fan_out.statuses[status] = fan_out.statuses.get(status, 0) + 1
            fan_out.seconds += seconds
            fan_out.slowest = max(fan_out.slowest, seconds)
        if telemetry.tracer is not None and (fan_out is None or failed or not 200 <= int(status) < 400):
            # at the send; the method and resource in its name, the account the run's, the latency a metric's
            sent = {"http.route": route_of(path), "http.response.status_code": status, "error.type": failed}
            _add_event(f"{verb} {resource}", sent, started_ns)
        labels = {"account": account, "resource": resource}
        telemetry.add("coviu_agent.http.request.duration", seconds, labels)
        telemetry.add("coviu_agent.http.requests", 1, {**labels, "method": verb, "status_code": status})


def http_status(status_code: int) -> None:
    """The status of the request in progress (on its event and in its count)."""
    attrs = _REQUEST.get()
    if attrs is not None:
        attrs["http.response.status_code"] = status_code


def rate_limited(key: str) -> None:
    """A 429 for the governor `key` (its account), on the request in progress's resource."""
    telemetry = _CURRENT
    if telemetry is None:
        return
    attrs = _REQUEST.get() or {}
    account = attrs.get("coviu.account") or account_of(key)
    telemetry.add("coviu_agent.rate_limited", 1, {"account": account, "resource": attrs.get("coviu.resource")})
    event("rate_limited", **{"http.response.status_code": 429})


@contextlib.contextmanager
def waiting(seconds: float, kind: str, key: str = "", reason: str = "") -> Iterator[None]:
    """A wait, its seconds counted: a `retry` (in `wait_and_retry`, after a 429 or a failure) is a span around the
    sleep; `pacing` (before nearly every send when the account is busy) is a `wait` event on the current span (the
    tool call's), its seconds an attribute: a span per request more would double what tracing costs."""
    telemetry = _CURRENT
    if telemetry is None or seconds <= 0:
        yield
        return
    why = re.sub(r"[^A-Za-z0-9]+", "_", reason).strip("_")[:60] or None  # e.g. rate_limited_429, upstream_503
    attributes = {"coviu.wait.kind": kind, "coviu.wait.seconds": round(seconds, 3), "coviu.wait.reason": why}
    if kind == PACING:
        fan_out = _FAN_OUT.get()
        if fan_out is None:
            event("wait", **attributes)
        else:  # in a fan-out: added up on its span
            fan_out.paced += 1
            fan_out.paced_seconds += seconds
        yield
    else:
        with span(f"wait {kind}", **attributes):
            yield
    telemetry.add("coviu_agent.wait", seconds, {"account": account_of(key) if key else None, "kind": kind})


def rate_limit_wait(seconds: float, key: str = "") -> None:
    """A wait the server's limits impose (a 429 hold, a quota's reset), booked on the run's budget."""
    telemetry = _CURRENT
    if telemetry is None or seconds <= 0:
        return
    event("rate_limit_wait", **{"coviu.wait.seconds": round(seconds, 3)})
    telemetry.add("coviu_agent.rate_limit.wait", seconds, {"account": account_of(key) if key else None})


@contextlib.contextmanager
def tool_call(name: str) -> Iterator[ToolCall]:
    """One tool call (the one tool-execution path): a span named for the tool, counted by outcome."""
    telemetry = _CURRENT
    if telemetry is None:
        yield ToolCall(_NO_SPAN)
        return
    fan_out = _FAN_OUT.get()
    if fan_out is not None and fan_out.tool == name:  # one of a fan-out's calls: counted on its span, no span
        call = ToolCall(_NO_SPAN)
        try:
            yield call
        finally:
            fan_out.outcomes[call.outcome] = fan_out.outcomes.get(call.outcome, 0) + 1
            telemetry.add("coviu_agent.tool.calls", 1, {"tool": name, "outcome": call.outcome})
        return
    # another tool's call inside a fan-out's (none today): a span of its own under it, its requests its own
    token = _FAN_OUT.set(None) if fan_out is not None else None
    try:
        with span(f"tool {name}", **{"coviu.tool": name}) as handle:
            call = ToolCall(handle)
            try:
                yield call
            finally:
                telemetry.add("coviu_agent.tool.calls", 1, {"tool": name, "outcome": call.outcome})
    finally:
        if token is not None:
            _FAN_OUT.reset(token)


# --- runs ------------------------------------------------------------------------------------------------------


_NODE_HANDLER: ContextVar[Any] = ContextVar("coviu_telemetry_node_spans", default=None)
_RUN_SPAN: ContextVar[Any] = ContextVar("coviu_telemetry_run_span", default=None)


@contextlib.contextmanager
def run(graph: str, clinic: str = "", team: str = "") -> Iterator[Run]:
    """One run of a graph: the root span, the node spans under it, and at its end the run's metrics (and the
    textfile). Call `finish` on the handle; a run left unfinished by an exception counts as an error."""
    telemetry = _CURRENT
    record = RunRecord(graph=graph, clinic=clinic, started=time.time(), team=team)
    if telemetry is None:
        yield Run(record, _NO_SPAN)
        return
    started = time.perf_counter()
    token = _NODE_HANDLER.set(_node_spans(telemetry)) if telemetry.tracer is not None else None
    try:
        with span(f"run {graph}", **{"coviu.graph": graph, "coviu.clinic": clinic, "coviu.team": team}) as handle:
            handle_run = Run(record, handle)
            run_token = _RUN_SPAN.set(getattr(handle, "span", None))
            try:
                yield handle_run
            except BaseException as exc:
                if not handle_run.finished:
                    record.exit_code = exit_code_of(exc)
                    record.outcome = OUTCOMES.get(record.exit_code, "error")
                    handle.set(**{"coviu.outcome": record.outcome, "coviu.exit_code": record.exit_code})
                raise
            finally:
                _RUN_SPAN.reset(run_token)
    finally:
        if token is not None:
            _NODE_HANDLER.reset(token)
        record.duration = time.perf_counter() - started
        _count_run(telemetry, handle_run)
        telemetry.flush()


def begin_run(graph: str, clinic: str = "", team: str = "") -> Run:
    """A run whose start and end are seen apart, in different tasks (a LangGraph Server run, seen by its callbacks):
    its root span is made current nowhere (its nodes' spans find it by their parent run: `NodeSpans.add_run`). End
    it with `end_run`."""
    telemetry = _CURRENT
    record = RunRecord(graph=graph, clinic=clinic, started=time.time(), team=team)
    handle: _NoSpan = _NO_SPAN
    if telemetry is not None and telemetry.tracer is not None:
        from opentelemetry.context import Context

        root = telemetry.tracer.start_span(f"run {graph}", context=Context(), record_exception=False)
        if root.is_recording():
            root.set_attributes(checked_attributes({"coviu.graph": graph, "coviu.clinic": clinic, "coviu.team": team}))
        handle = _SpanHandle(root)
    run_handle = Run(record, handle)
    run_handle.detached = _Detached(time.perf_counter())
    return run_handle


def end_run(handle: Run, error: BaseException | None = None) -> None:
    """End a run `begin_run` started: its span, its metrics and the textfile (`finish` first, unless `error`)."""
    record = handle.record
    if error is not None and not handle.finished:
        record.exit_code = exit_code_of(error)
        record.outcome = OUTCOMES.get(record.exit_code, "error")
        handle.handle.set(**{"coviu.outcome": record.outcome, "coviu.exit_code": record.exit_code})
    started = handle.detached.started if handle.detached is not None else time.perf_counter()
    record.duration = time.perf_counter() - started
    root = getattr(handle.handle, "span", None)
    if root is not None:
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            root.set_status(Status(StatusCode.ERROR, type(error).__name__))
            root.set_attribute("error.type", type(error).__name__)
        root.end()
    telemetry = _CURRENT
    if telemetry is not None:
        _count_run(telemetry, handle)
        telemetry.flush()


def node_spans() -> Any:
    """The handler that opens graph nodes' spans (`tools.telemetry_nodes.NodeSpans`) when tracing is on, else None."""
    telemetry = _CURRENT
    return _node_spans(telemetry) if telemetry is not None and telemetry.tracer is not None else None


def exit_code_of(exc: BaseException) -> int:
    """The exit code a run's exception ends the command with (the CLI's table): 2 bad input, 130 interrupted,
    else 3 (a service failed)."""
    import asyncio

    from tools.errors import is_bad_input

    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return 130
    bad_input = {"BadInput", "ToolArgumentError", "RunInputError"}
    if any(cls.__name__ in bad_input for cls in type(exc).__mro__) or is_bad_input(exc):
        return 2  # as the CLI's `agent.errors.exit_code_for`: an id the account does not know (a 404) too
    return 3


def _count_run(telemetry: Telemetry, handle: Run) -> None:
    record = handle.record
    labels = {"graph": record.graph, "clinic": record.clinic}
    runs = {**labels, "team": record.team, "outcome": record.outcome, "exit_code": record.exit_code}
    telemetry.add("coviu_agent.runs", 1, runs)
    telemetry.add("coviu_agent.run.duration", record.duration, {**labels, "outcome": record.outcome})
    clinic = {"clinic": record.clinic, "team": record.team or None}  # the clinic's team beside it, as on `runs`
    if "sessions" in handle.counts:
        telemetry.add("coviu_agent.sessions.audited", handle.counts["sessions"], clinic)
    if "alerts" in handle.counts:
        telemetry.add("coviu_agent.alerts", handle.counts["alerts"], clinic)
    for kind, number in handle.flags.items():
        telemetry.add("coviu_agent.flags", number, {**clinic, "kind": kind})
    if telemetry.tally is not None:
        with telemetry.tally.lock:
            telemetry.tally.runs.append(record)


def _node_spans(telemetry: Telemetry) -> Any:
    """The LangChain callback handler that opens a span per graph node (made once; hooked into LangChain's
    callback configuration, so every graph run inside `run` gets it without being told)."""
    if telemetry.node_spans is None:
        from tools.telemetry_nodes import NodeSpans, hook

        hook(_NODE_HANDLER)
        telemetry.node_spans = NodeSpans(telemetry.tracer, safe_attributes)
    return telemetry.node_spans
