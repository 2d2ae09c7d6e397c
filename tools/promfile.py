"""The Prometheus textfile (node_exporter's textfile collector): runs and counters, merged across processes.

Each write reads the file, adds this process's counts to its counters, replaces the last-run gauges of the
(graph, clinic) pairs that ran (a clinic is its integrated account, its team id a label), and replaces the file
atomically (`prometheus_client.write_to_textfile`: a temporary file, then a rename), under a lock file so that
concurrent runs (a fleet, two cron jobs) add up.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

# Prometheus name -> (kind: counter | summary, description): what `tools.telemetry` counts (it passes its table).
Families = Mapping[str, tuple[str, str]]

Key = tuple[str, tuple[tuple[str, str], ...]]
log = logging.getLogger(__name__)
LAST_RUN = {
    "coviu_agent_last_run_timestamp_seconds": "when the last run of this graph for this clinic started (Unix time)",
    "coviu_agent_last_run_duration_seconds": "how long the last run took, seconds",
    "coviu_agent_last_run_exit_code": "the last run's exit code (0 done, 2 bad input, 3 upstream, 4 approval, 5 "
    "incomplete, 130 interrupted)",
    "coviu_agent_last_run_success": "1 when the last run's exit code was 0, else 0",
}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read(path: Path) -> dict[Key, float]:
    """Every sample in the file, by name and labels (empty when there is no file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class LastRun(Protocol):
    """A finished run, as the last-run gauges keep it (tools/telemetry_providers.py's RunRecord is one)."""

    @property
    def graph(self) -> str: ...
    @property
    def clinic(self) -> str: ...
    @property
    def team(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def exit_code(self) -> int: ...


def merge_into(path: Path, counts: Mapping[Key, float], runs: Iterable[LastRun], families: Families) -> None:
    """Add `counts` to the file's counters and put `runs` in its last-run gauges, atomically."""
    with _locked(path):
        try:
            samples = read(path)
        except ValueError as exc:  # not a textfile (a partial write by another tool, an edit): start it again
            log.warning("the metrics file %s could not be read (%s); its counters start again", path, exc)
            samples = {}
        for key, value in counts.items():
            samples[key] = samples.get(key, 0.0) + value
        for record in runs:
            # one series per clinic (its integrated account: clinics of a fleet may share a team) and graph; its
            # team is a label, and a series of the same clinic under another team (an older one) is replaced
            for name, labels in [key for key in samples if key[0] in LAST_RUN]:
                kept = dict(labels)
                if kept.get("clinic") == record.clinic and kept.get("graph") == record.graph:
                    del samples[(name, labels)]
            labels = (("clinic", record.clinic), ("graph", record.graph), ("team", record.team))
            samples[("coviu_agent_last_run_timestamp_seconds", labels)] = record.started
            samples[("coviu_agent_last_run_duration_seconds", labels)] = round(record.duration, 3)
            samples[("coviu_agent_last_run_exit_code", labels)] = record.exit_code
            samples[("coviu_agent_last_run_success", labels)] = 1.0 if record.exit_code == 0 else 0.0
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Samples(samples, families))
        write_to_textfile(str(path), registry)


class _Samples:
    """A collector serving fixed samples as their families (counters, summaries, gauges)."""

    def __init__(self, samples: Mapping[Key, float], families: Families) -> None:
        self.samples = samples
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for prom, (kind, description) in self.families.items():
            if kind == "counter":
                yield from self._family(CounterMetricFamily(prom, description, labels=()), f"{prom}_total")
            else:
                summary = SummaryMetricFamily(prom, description, labels=())
                for name in (f"{prom}_count", f"{prom}_sum"):
                    for (sample, labels), value in sorted(self.samples.items()):
                        if sample == name:
                            summary.samples.append(_sample(name, dict(labels), value))
                if summary.samples:
                    yield summary
        for name, description in LAST_RUN.items():
            yield from self._family(GaugeMetricFamily(name, description, labels=()), name)

    def _family(self, family: Metric, name: str) -> Iterator[Metric]:
        for (sample, labels), value in sorted(self.samples.items()):
            if sample == name:
                family.samples.append(_sample(name, dict(labels), value))
        if family.samples:
            yield family


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    return Sample(name, labels, value)
