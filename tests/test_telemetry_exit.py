"""A down OTLP collector never holds a command hostage: each export and the flush at exit are bounded by a short
deadline (`OTEL_EXPORTER_OTLP_TIMEOUT` if set), and ops are told once, by host:port, never by headers or URL
credentials. No timing here (bench/ measures): the configured deadlines and the shutdown path are asserted."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools import telemetry
from tools.telemetry_providers import EXPORT_TIMEOUT, CollectorWatch, Telemetry

SECRET = "collector-token-5c1e7"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed once the with ends: nothing listens there


@pytest.fixture
def restore_telemetry() -> Any:
    previous = telemetry.current()
    yield
    configured = telemetry.current()
    telemetry.install(previous)
    if configured is not None and configured is not previous:
        configured.shutdown(deadline=0.1)


def exporter_timeouts(configured: Telemetry) -> tuple[float, float]:
    assert configured.tracer_provider is not None and configured.meter_provider is not None
    span_exporter = configured.tracer_provider._active_span_processor._span_processors[0].span_exporter  # type: ignore[attr-defined]
    reader = configured.meter_provider._metric_readers[0]  # type: ignore[attr-defined]
    return span_exporter._client._timeout, reader._exporter._client._timeout


def test_exports_and_the_exit_flush_are_bounded_by_a_short_deadline(restore_telemetry: Any) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    configured = telemetry.setup(environ=env)
    assert configured is not None
    # the SDK's default is 10 s per export (retries included) plus an unbounded shutdown at exit
    assert exporter_timeouts(configured) == (EXPORT_TIMEOUT, EXPORT_TIMEOUT) and EXPORT_TIMEOUT <= 3
    assert configured.deadline == EXPORT_TIMEOUT
    # the SDK's own atexit hooks (which wait on the exporters unbounded) are off: ours, with the deadline, runs
    assert configured.tracer_provider._atexit_handler is None  # type: ignore[union-attr]
    assert configured.meter_provider._atexit_handler is None  # type: ignore[union-attr]


def test_the_standard_timeout_variable_sets_the_deadline(restore_telemetry: Any) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "OTEL_EXPORTER_OTLP_TIMEOUT": "0.7"}
    configured = telemetry.setup(environ={**env, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "1.5"})
    assert configured is not None
    assert exporter_timeouts(configured) == (0.7, 1.5) and configured.deadline == 1.5
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TIMEOUT='soon'"):
        telemetry.setup(environ={**env, "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"})


class Provider:
    """A provider whose exporter cannot reach its collector; records the deadline it was given."""

    def __init__(self) -> None:
        self.flushed_with: list[float] = []
        self.stopped = 0

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        self.flushed_with.append(timeout_millis)
        return False

    def shutdown(self, timeout_millis: float | None = None) -> None:
        self.stopped += 1
        if timeout_millis is not None:
            self.flushed_with.append(timeout_millis)  # a meter provider's shutdown is its last export


def test_shutdown_passes_the_deadline_and_says_once_the_collector_is_down(caplog: pytest.LogCaptureFixture) -> None:
    tracer, meter = Provider(), Provider()
    watch = CollectorWatch("127.0.0.1:9")
    configured = Telemetry(tracer_provider=None, meter_provider=None, deadline=1.5, watch=watch)
    configured.tracer_provider, configured.meter_provider = tracer, meter  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="tools.telemetry"):
        assert configured.shutdown() is False
        assert configured.shutdown() is True  # once: the atexit hook after an explicit shutdown does nothing
    assert len(tracer.flushed_with) == 1 and 0 < tracer.flushed_with[0] <= 1500
    assert len(meter.flushed_with) == 1 and 0 <= meter.flushed_with[0] <= 1500  # its shutdown, no force_flush
    assert tracer.stopped == meter.stopped == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0]


def test_a_down_collector_is_one_warning_naming_host_and_port_only(tmp_path: Path) -> None:
    port = closed_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://ops:{SECRET}@127.0.0.1:{port}/otlp",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {SECRET}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",
        "COVIU_AGENT_SANDBOX": "1",
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "agent", "tools"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "collector" in line]
    assert len(said) == 1 and f"127.0.0.1:{port}" in said[0] and "WARNING" in said[0]
    assert SECRET not in done.stderr + done.stdout
    assert "opentelemetry.exporter" not in done.stderr  # the SDK's per-retry lines (whole URL) are not shown


def test_the_metrics_are_exported_once_at_exit_not_twice() -> None:
    """The meter provider's shutdown collects and exports one last time; a force_flush before it sent it all twice."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )

    class Counting(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self.exports: list[int] = []

        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            self.exports.append(len(metrics_data.resource_metrics))
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    exporter = Counting()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    configured = Telemetry(meter_provider=MeterProvider([reader], shutdown_on_exit=False))
    configured.add("coviu_agent.runs", 1, {"graph": "audit", "clinic": "acct-1", "outcome": "done"})
    assert configured.shutdown() is True
    assert exporter.exports == [1]


def test_a_metrics_export_that_outlives_the_deadline_is_one_warning_and_a_false_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A collector that accepts and never answers: the meter provider's shutdown gives up on its last export at the
    deadline (the export goes on in the reader's thread). Shutdown says False, and ops are told once; before, the
    shutdown returned in time, so it was said to have exported everything and nothing was said."""
    import threading

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData, PeriodicExportingMetricReader

    release = threading.Event()

    class Hanging(MetricExporter):
        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            release.wait(30)  # a collector that never answers
            raise ConnectionError("no answer")

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    reader = PeriodicExportingMetricReader(Hanging(), export_interval_millis=3_600_000)
    watch = CollectorWatch("127.0.0.1:9")
    configured = Telemetry(meter_provider=MeterProvider([reader], shutdown_on_exit=False), deadline=0.3, watch=watch)
    configured.add("coviu_agent.runs", 1, {"graph": "audit", "clinic": "acct-1", "outcome": "done"})
    try:
        with caplog.at_level(logging.WARNING, logger="tools.telemetry"):
            assert configured.shutdown() is False
    finally:
        release.set()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0]


def span_export_delay(configured: Telemetry) -> float:
    processor = configured.tracer_provider._active_span_processor._span_processors[0]  # type: ignore[union-attr]
    return float(processor._batch_processor._schedule_delay_millis)


def test_spans_are_sent_every_30_s_unless_the_standard_variable_says(restore_telemetry: Any) -> None:
    """Each export costs CPU (~0.6 ms): a nightly audit's 190 s sent 27 batches at the SDK's 5 s."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    configured = telemetry.setup(environ=env)
    assert configured is not None and span_export_delay(configured) == 30_000
    configured.shutdown(0.1)
    configured = telemetry.setup(environ={**env, "OTEL_BSP_SCHEDULE_DELAY": "2000"})
    assert configured is not None and span_export_delay(configured) == 2000
    configured.shutdown(0.1)
    with pytest.raises(ValueError, match="OTEL_BSP_SCHEDULE_DELAY='soon'"):
        telemetry.setup(environ={**env, "OTEL_BSP_SCHEDULE_DELAY": "soon"})
