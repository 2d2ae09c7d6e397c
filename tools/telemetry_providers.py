"""Telemetry's configuration: the instruments this app records (and their Prometheus textfile names), the exporters
and the trace sampler the standard `OTEL_*` variables ask for, and the configured providers with this process's
textfile tally (`Telemetry`).

Built by `tools.telemetry.setup`, which makes it the process's; the recording API (spans, events, runs) is in
`tools/telemetry.py`, which re-exports these names.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.telemetry_attributes import _CHECKED_MAX, AttrValue, safe_attributes
from tools.textsafety import REDACTOR

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

# telemetry's logger: a metrics file that cannot be written is said under the same name as the rest of it
log = logging.getLogger("tools.telemetry")

SERVICE_NAME = "coviu-agent"
EXPORTERS = ("otlp", "console", "none")
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


# One OTLP export's whole time, its retries included, and the whole flush at exit: a down collector costs a command
# this at most, never the SDK's 10 s of retries. The standard `OTEL_EXPORTER_OTLP(_TRACES|_METRICS)_TIMEOUT`
# (seconds, as the Python SDK reads it) overrides it.
EXPORT_TIMEOUT = 2.0
# the OTLP exporters' loggers: their retry lines name the URL (which may carry credentials); said once, by us
# (a filter applies on the logger a record is made on, not its parents: each module's own)
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)


def positive_number(environ: Mapping[str, str], variable: str, unit: str) -> float | None:
    """The variable's value when set (None when not); raises ValueError naming it when it is not a positive number
    (of `unit`, as the message says)."""
    raw = environ.get(variable, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{variable}={raw!r}: expected a positive number of {unit}")
    return value


def export_timeout(signal: str, environ: Mapping[str, str]) -> float:
    """Seconds one export of `traces`/`metrics` may take (retries included). Raises ValueError naming the variable
    when it is not a positive number."""
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = positive_number(environ, variable, "seconds")
        if value is not None:
            return value
    return EXPORT_TIMEOUT


# Spans are sent every this many milliseconds unless `OTEL_BSP_SCHEDULE_DELAY` says (the SDK's default is 5 s: each
# export costs ~0.6 ms of CPU, and a 190 s nightly audit sent 27 of them), when 512 wait, and at exit.
SPAN_EXPORT_DELAY_MS = 30_000


def span_export_delay(environ: Mapping[str, str]) -> float:
    """Milliseconds between span exports: `OTEL_BSP_SCHEDULE_DELAY` when set, else `SPAN_EXPORT_DELAY_MS`. Raises
    ValueError naming the variable when it is not a positive number."""
    value = positive_number(environ, "OTEL_BSP_SCHEDULE_DELAY", "milliseconds (e.g. 5000)")
    return SPAN_EXPORT_DELAY_MS if value is None else value


def collector_of(environ: Mapping[str, str]) -> str:
    """The OTLP collector's `host:port` (never its path, user or password), for a log line."""
    from urllib.parse import urlsplit

    raw = (
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        or "http://localhost:4318"
    )
    try:
        parts = urlsplit(raw.strip())
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname or '?'}:{port}"
    except ValueError:
        return "?"


class CollectorWatch(logging.Filter):
    """On the OTLP exporters' loggers: their first failure becomes one WARNING of ours naming the collector's
    host:port; theirs (which name the whole URL, per retry) are dropped."""

    def __init__(self, collector: str) -> None:
        super().__init__()
        self.collector = collector
        self.unreachable = False
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.failed()
        return False

    def failed(self) -> None:
        with self._lock:
            first, self.unreachable = not self.unreachable, True
        if first:
            log.warning(
                "telemetry: the OTLP collector at %s could not be reached; spans and metrics are dropped "
                "(the command goes on)",
                self.collector,
            )

    def attach(self) -> None:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(self)

    def detach(self) -> None:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).removeFilter(self)


@dataclass
class RunRecord:
    """One run as the textfile (and `coviu-agent status`) keeps it."""

    graph: str
    clinic: str  # the clinic's integrated account id (its team id when no account is configured)
    started: float  # Unix time
    duration: float = 0.0
    outcome: str = "error"
    exit_code: int = 3
    team: str = ""  # the clinic's Coviu team id (clinics of a fleet may share one)


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
        deadline: float = EXPORT_TIMEOUT,
        watch: CollectorWatch | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.deadline = deadline  # seconds the flush at exit may take in all
        self.watch = watch
        self.stopped = False
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

    def shutdown(self, deadline: float | None = None) -> bool:
        """Export what the providers hold and stop them, within `deadline` seconds in all (default: `self.deadline`;
        `setup` calls this at exit). False (and one WARNING naming the collector) when not all was exported in time:
        what is left is dropped, the process goes on."""
        if self.stopped:
            return True
        self.stopped = True
        budget = self.deadline if deadline is None else deadline
        done = threading.Event()
        exported: list[bool] = []

        tracer_provider: Any = self.tracer_provider  # the SDK's, with force_flush and shutdown
        meter_provider: Any = self.meter_provider

        def flush_and_stop() -> None:
            ends = time.monotonic() + budget

            def left_ms() -> float:
                return max(ends - time.monotonic(), 0.0) * 1000

            try:
                if tracer_provider is not None:
                    exported.append(bool(tracer_provider.force_flush(timeout_millis=left_ms())))
                    tracer_provider.shutdown()
                if meter_provider is not None:
                    # its shutdown collects and exports one last time (a failure is the exporter's WARNING, which
                    # `watch` turns into ours): a force_flush first would send every metric twice
                    meter_provider.shutdown(timeout_millis=left_ms())
                    # which gives up waiting at the deadline while the export goes on (a collector that never
                    # answers): not exported, as a flush that timed out
                    exported.append(not _still_exporting(meter_provider))
            except Exception:  # telemetry never fails the command
                exported.append(False)
            finally:
                done.set()

        # a daemon thread: if the exporters outlast the deadline, the process exits without them
        threading.Thread(target=flush_and_stop, name="telemetry-shutdown", daemon=True).start()
        finished = done.wait(budget + 0.5)  # the exporters' own timeouts are `budget`; a little slack for the stop
        ok = finished and all(exported)
        if not ok and self.watch is not None:
            self.watch.failed()
        if self.watch is not None:
            self.watch.detach()
        return ok

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


def _still_exporting(meter_provider: Any) -> bool:
    """Whether a reader of `meter_provider` is still exporting after the provider's shutdown returned: the SDK's
    periodic reader makes its last export in its own thread and stops waiting for it at the deadline, saying
    nothing. (The SDK's attributes, read defensively: a provider without them counts as done.)"""
    readers = getattr(meter_provider, "_metric_readers", ())
    threads = (getattr(reader, "_daemon_thread", None) for reader in readers)
    return any(thread is not None and thread.is_alive() for thread in threads)


def exemplar_filter(environ: Mapping[str, str]) -> Any:
    """No exemplars unless `OTEL_METRICS_EXEMPLAR_FILTER` asks (then None: the SDK reads it). The SDK's default,
    `trace_based`, samples one for every latency recorded inside a span: most of a traced request's metric cost."""
    if environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
        return None
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return AlwaysOffExemplarFilter()
