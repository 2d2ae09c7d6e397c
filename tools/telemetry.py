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
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.textsafety import REDACTOR

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

log = logging.getLogger(__name__)

SERVICE_NAME = "coviu-agent"
EXPORTERS = ("otlp", "console", "none")
WITHHELD = "(withheld)"
# What a string attribute may look like: an id, a tool or resource name, a path of ids, an outcome.
_SAFE = re.compile(r"[A-Za-z0-9._:/#@+={}-]{0,200}")

AttrValue = str | bool | int | float
PACING = "pacing"  # the governor's wait before a send (an event, not a span: `waiting`)
# A run's outcome by its exit code (the CLI's table).
OUTCOMES = {0: "done", 2: "bad_input", 3: "upstream_failure", 4: "needs_approval", 5: "incomplete", 130: "interrupted"}

# OpenTelemetry instrument -> (Prometheus textfile name, kind, description). Counters end `_total` in the file.
METRICS: dict[str, tuple[str, str, str]] = {
    "coviu_agent.http.requests": ("coviu_agent_http_requests", "counter", "Truto requests by account and resource"),
    "coviu_agent.http.request.duration": (
        "coviu_agent_http_request_duration_seconds",
        "summary",
        "Truto request latency (send to last byte), seconds",
    ),
    "coviu_agent.rate_limited": ("coviu_agent_rate_limited", "counter", "429 answers by account and resource"),
    "coviu_agent.wait": ("coviu_agent_wait_seconds", "counter", "seconds slept, by kind (pacing before a send, retry)"),
    "coviu_agent.rate_limit.wait": (
        "coviu_agent_rate_limit_wait_seconds",
        "counter",
        "seconds of waits the server's limits imposed (429 holds, quota resets), booked on runs' budgets",
    ),
    "coviu_agent.tool.calls": ("coviu_agent_tool_calls", "counter", "tool calls by tool and outcome"),
    "coviu_agent.sessions.audited": ("coviu_agent_sessions_audited", "counter", "sessions in audit reports"),
    "coviu_agent.flags": ("coviu_agent_flags", "counter", "audit flags by clinic and kind"),
    "coviu_agent.alerts": ("coviu_agent_alerts", "counter", "queue alerts raised by triage"),
    "coviu_agent.runs": ("coviu_agent_runs", "counter", "runs by graph, clinic and outcome"),
    "coviu_agent.run.duration": ("coviu_agent_run_duration_seconds", "summary", "run wall time, seconds"),
}


# The checked form of each string seen (most repeat: accounts, resources, tools, outcomes), while the redactor's
# secrets stay the same (its `generation`); bounded, emptied when full.
_CHECKED: dict[str, str] = {}
_CHECKED_GENERATION = -1
_CHECKED_MAX = 4096


def safe_text(value: str) -> str:
    """`value` when, redacted, it is unchanged and looks like an id; else `(withheld)` (or its redacted form
    when that still looks like an id). Remembered per value while the redactor's secrets stay the same."""
    global _CHECKED_GENERATION
    generation = REDACTOR.generation
    if generation != _CHECKED_GENERATION or len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
        _CHECKED_GENERATION = generation
    checked = _CHECKED.get(value)
    if checked is None:
        text = REDACTOR.text(value)
        checked = _CHECKED[value] = text if _SAFE.fullmatch(text) else WITHHELD
    return checked


def safe_attributes(attributes: Mapping[str, object]) -> dict[str, AttrValue]:
    """Numbers and booleans as they are; a string only when, redacted, it still looks like an id; None dropped."""
    out: dict[str, AttrValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = safe_text(value)
        elif isinstance(value, bool | int):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        else:
            out[key] = safe_text(str(value))
    return out


_CHECKED_ATTRIBUTES: dict[tuple[Any, ...], dict[str, AttrValue]] = {}


def checked_attributes(attributes: Mapping[str, object]) -> dict[str, AttrValue]:
    """`safe_attributes`, remembered per set of attributes while the redactor's secrets stay the same (most spans and
    events repeat a few: a tool's name, a route and a status). The dict returned is shared: do not change it."""
    key = (REDACTOR.generation, *attributes.items())
    try:
        checked = _CHECKED_ATTRIBUTES.get(key)
    except TypeError:  # a value that cannot be a key
        return safe_attributes(attributes)
    if checked is None:
        if len(_CHECKED_ATTRIBUTES) >= _CHECKED_MAX:
            _CHECKED_ATTRIBUTES.clear()
        checked = _CHECKED_ATTRIBUTES[key] = safe_attributes(attributes)
    return checked


def account_of(key: str) -> str:
    """The integrated account in a governor key (`base_url#account`, or the account alone)."""
    return key.rpartition("#")[2]


def resource_of(path: str) -> str:
    """The Truto resource a request path is for (`/proxy/{resource}/...`), else `tools` (the catalog)."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "proxy":
        return parts[2]
    return "tools" if path.endswith("/tools") else "other"


def route_of(path: str) -> str:
    """A request path with its ids as `{id}` (`/proxy/sessions/{id}`): few distinct values, no id to check."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "proxy":
        return "/".join([*parts[:3], *("{id}" for _ in parts[3:])])
    return "/tools" if path.endswith("/tools") else "other"


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_SAMPLER = "parentbased_traceidratio"


def sampler(environ: Mapping[str, str]) -> Any:
    """The trace sampler the standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` ask for; by default
    `parentbased_traceidratio` at `OTEL_TRACES_SAMPLER_ARG` (default 1.0: every run traced whole; 0.1: one run in
    ten, its spans all or none; the metrics always). Raises ValueError naming the variable that is wrong."""
    from opentelemetry.sdk.trace import sampling

    name = (environ.get("OTEL_TRACES_SAMPLER") or DEFAULT_SAMPLER).strip().lower()
    if name not in SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r}: expected one of {', '.join(SAMPLERS)}")
    if name.endswith("traceidratio"):
        text = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
        try:
            ratio = float(text)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={text!r}: expected a ratio from 0 to 1 (e.g. 0.1)")
        ratio_sampler = sampling.TraceIdRatioBased(ratio)
        return sampling.ParentBased(ratio_sampler) if name.startswith("parentbased") else ratio_sampler
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_on": sampling.DEFAULT_ON,
        "parentbased_always_off": sampling.DEFAULT_OFF,
    }[name]


def exporter_for(signal: str, environ: Mapping[str, str]) -> str | None:
    """`otlp`, `console` or None (off) for `traces`/`metrics`, by the standard variables. Raises ValueError naming
    the variable when it asks for an exporter this app does not ship."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = [n.strip().lower() for n in environ.get(variable, "").split(",") if n.strip()]
    for name in names:
        if name not in EXPORTERS:
            raise ValueError(f"{variable}={name!r}: expected one of {', '.join(EXPORTERS)} (OTLP is sent over HTTP)")
    if names:
        return None if names[0] == "none" else names[0]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return "otlp"
    return None


# --- the state ---------------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One run as the textfile (and `coviu-agent status`) keeps it."""

    graph: str
    clinic: str
    started: float  # Unix time
    duration: float = 0.0
    outcome: str = "error"
    exit_code: int = 3


@dataclass
class _Tally:
    """This process's counts since the textfile was last written (added to the file's own on each write)."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, value: float, labels: Mapping[str, AttrValue]) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + value

    def take(self) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], list[RunRecord]]:
        with self.lock:
            values, runs = self.values, self.runs
            self.values, self.runs = {}, []
            return values, runs


class Telemetry:
    """The configured providers and instruments (built by `setup`). Use the module's functions, not this."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        metrics_file: Path | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer(SERVICE_NAME) if tracer_provider is not None else None
        self.instruments: dict[str, Any] = {}
        # Counters are summed here and read by observable counters when the reader collects (every 60 s and at
        # shutdown): a dict update per request instead of the SDK's measurement path. Histograms record as usual.
        self.sums: dict[str, dict[tuple[tuple[str, AttrValue], ...], float]] = {}
        self.sums_lock = threading.Lock()
        self.labels: dict[tuple[Any, ...], tuple[dict[str, AttrValue], tuple[tuple[str, AttrValue], ...]]] = {}
        if meter_provider is not None:
            meter = meter_provider.get_meter(SERVICE_NAME)
            for name, (_, kind, description) in METRICS.items():
                unit = "s" if "wait" in name or "duration" in name else "1"
                if kind == "summary":
                    self.instruments[name] = meter.create_histogram(name, unit=unit, description=description)
                else:
                    self.sums[name] = {}
                    self.instruments[name] = meter.create_observable_counter(
                        name, callbacks=[self._observe(name)], unit=unit, description=description
                    )
        self.metrics_file = metrics_file
        self.tally = _Tally() if metrics_file is not None else None
        self.node_spans: Any = None  # the LangChain handler, made on first use

    def _observe(self, name: str) -> Any:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> list[Any]:
            with self.sums_lock:
                return [Observation(value, dict(labels)) for labels, value in self.sums[name].items()]

        return observe

    def add(self, name: str, value: float, attributes: Mapping[str, object]) -> None:
        # the checked labels of each (instrument, attributes) seen: a few dozen a run, most requests repeat one
        key = (name, REDACTOR.generation, *attributes.items())
        try:
            known = self.labels.get(key)
            hashable = True
        except TypeError:  # a value that cannot be a key: checked each time
            known, hashable = None, False
        if known is None:
            if len(self.labels) >= _CHECKED_MAX:
                self.labels.clear()
            attrs = safe_attributes(attributes)
            known = (attrs, tuple(sorted(attrs.items())))
            if hashable:
                self.labels[key] = known
        attrs, labels = known
        sums = self.sums.get(name)
        if sums is not None:
            with self.sums_lock:
                sums[labels] = sums.get(labels, 0) + value  # counts stay integers
        else:
            instrument = self.instruments.get(name)
            if instrument is not None:
                instrument.record(value, attrs)
        if self.tally is not None:
            prom, kind, _ = METRICS[name]
            if kind == "summary":
                self.tally.add(f"{prom}_sum", value, attrs)
                self.tally.add(f"{prom}_count", 1, attrs)
            else:
                self.tally.add(f"{prom}_total", value, attrs)

    def shutdown(self) -> None:
        """Export what the providers hold and stop them (the SDK also does this when the process exits)."""
        providers: list[Any] = [self.tracer_provider, self.meter_provider]
        for provider in providers:
            if provider is not None:
                provider.shutdown()

    def flush(self) -> None:
        """Write the textfile (when configured) and push what the exporters hold."""
        if self.tally is not None and self.metrics_file is not None:
            from tools.promfile import merge_into

            values, runs = self.tally.take()
            try:
                families = {prom: (kind, description) for prom, kind, description in METRICS.values()}
                merge_into(self.metrics_file, values, runs, families)
            except OSError as exc:
                log.warning("could not write the metrics file %s: %s", self.metrics_file, type(exc).__name__)


_CURRENT: Telemetry | None = None
_REQUEST: ContextVar[dict[str, AttrValue] | None] = ContextVar("coviu_telemetry_request", default=None)


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

            span_exporter = OTLPSpanExporter()
        else:
            span_exporter = ConsoleSpanExporter()
        tracer_provider = SdkTracerProvider(resource=resource, sampler=trace_sampler)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
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

            metric_exporter = OTLPMetricExporter()
        else:
            metric_exporter = ConsoleMetricExporter()
        meter_provider = SdkMeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(metric_exporter)],
            exemplar_filter=exemplar_filter(env),
        )
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider, metrics_file=path)
    install(telemetry)
    return telemetry


def exemplar_filter(environ: Mapping[str, str]) -> Any:
    """No exemplars unless `OTEL_METRICS_EXEMPLAR_FILTER` asks (then None: the SDK reads it). The SDK's default,
    `trace_based`, samples one for every latency recorded inside a span: most of a traced request's metric cost."""
    if environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
        return None
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return AlwaysOffExemplarFilter()


# --- spans -------------------------------------------------------------------------------------------------------


class _NoSpan:
    """What a span handle is when tracing is off."""

    def set(self, **attributes: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class _SpanHandle(_NoSpan):
    def __init__(self, span: Span) -> None:
        self.span = span

    def set(self, **attributes: object) -> None:
        if self.span.is_recording():  # a run the sampler left out: nothing to check or keep
            self.span.set_attributes(checked_attributes(attributes))


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
        current_span.add_event(name, checked_attributes(attributes), timestamp)


# --- the instrumented places ----------------------------------------------------------------------------------


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
        if telemetry.tracer is not None:
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
        event("wait", **attributes)
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


class ToolCall:
    """The handle `tool_call` yields: say how the call ended."""

    def __init__(self, handle: _NoSpan) -> None:
        self.handle = handle
        self.outcome = "error"

    def done(self, outcome: str) -> None:
        self.outcome = outcome
        self.handle.set(**{"coviu.tool.outcome": outcome})


@contextlib.contextmanager
def tool_call(name: str) -> Iterator[ToolCall]:
    """One tool call (the one tool-execution path): a span named for the tool, counted by outcome."""
    telemetry = _CURRENT
    if telemetry is None:
        yield ToolCall(_NO_SPAN)
        return
    with span(f"tool {name}", **{"coviu.tool": name}) as handle:
        call = ToolCall(handle)
        try:
            yield call
        finally:
            telemetry.add("coviu_agent.tool.calls", 1, {"tool": name, "outcome": call.outcome})


# --- runs ------------------------------------------------------------------------------------------------------


class Run:
    """The handle `run` yields: what the run was for, and how it ended."""

    def __init__(self, record: RunRecord, handle: _NoSpan) -> None:
        self.record = record
        self.handle = handle
        self.counts: dict[str, float] = {}
        self.flags: dict[str, int] = {}
        self.finished = False
        self.detached: _Detached | None = None  # a run `begin_run` started

    def finish(
        self,
        outcome: str,
        exit_code: int,
        *,
        clinic: str | None = None,
        sessions: int | None = None,
        flags: Mapping[str, int] | None = None,
        alerts: int | None = None,
    ) -> None:
        self.record.outcome, self.record.exit_code = outcome, exit_code
        self.finished = True
        if clinic:
            self.record.clinic = clinic
        if sessions is not None:
            self.counts["sessions"] = sessions
        if alerts is not None:
            self.counts["alerts"] = alerts
        self.flags = dict(flags or {})
        self.handle.set(
            **{
                "coviu.clinic": self.record.clinic,
                "coviu.outcome": outcome,
                "coviu.exit_code": exit_code,
                "coviu.sessions": sessions,
                "coviu.alerts": alerts,
            }
        )


_NODE_HANDLER: ContextVar[Any] = ContextVar("coviu_telemetry_node_spans", default=None)
_RUN_SPAN: ContextVar[Any] = ContextVar("coviu_telemetry_run_span", default=None)


@contextlib.contextmanager
def run(graph: str, clinic: str = "") -> Iterator[Run]:
    """One run of a graph: the root span, the node spans under it, and at its end the run's metrics (and the
    textfile). Call `finish` on the handle; a run left unfinished by an exception counts as an error."""
    telemetry = _CURRENT
    record = RunRecord(graph=graph, clinic=clinic, started=time.time())
    if telemetry is None:
        yield Run(record, _NO_SPAN)
        return
    started = time.perf_counter()
    token = _NODE_HANDLER.set(_node_spans(telemetry)) if telemetry.tracer is not None else None
    try:
        with span(f"run {graph}", **{"coviu.graph": graph, "coviu.clinic": clinic}) as handle:
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


class _Detached:
    """What `begin_run` keeps of a run for `end_run`."""

    def __init__(self, started: float) -> None:
        self.started = started


def begin_run(graph: str, clinic: str = "") -> Run:
    """A run whose start and end are seen apart, in different tasks (a LangGraph Server run, seen by its callbacks):
    its root span is made current nowhere (its nodes' spans find it by their parent run: `NodeSpans.add_run`). End
    it with `end_run`."""
    telemetry = _CURRENT
    record = RunRecord(graph=graph, clinic=clinic, started=time.time())
    handle: _NoSpan = _NO_SPAN
    if telemetry is not None and telemetry.tracer is not None:
        from opentelemetry.context import Context

        root = telemetry.tracer.start_span(f"run {graph}", context=Context(), record_exception=False)
        if root.is_recording():
            root.set_attributes(checked_attributes({"coviu.graph": graph, "coviu.clinic": clinic}))
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
    telemetry.add("coviu_agent.runs", 1, {**labels, "outcome": record.outcome, "exit_code": record.exit_code})
    telemetry.add("coviu_agent.run.duration", record.duration, {**labels, "outcome": record.outcome})
    if "sessions" in handle.counts:
        telemetry.add("coviu_agent.sessions.audited", handle.counts["sessions"], {"clinic": record.clinic})
    if "alerts" in handle.counts:
        telemetry.add("coviu_agent.alerts", handle.counts["alerts"], {"clinic": record.clinic})
    for kind, number in handle.flags.items():
        telemetry.add("coviu_agent.flags", number, {"clinic": record.clinic, "kind": kind})
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
