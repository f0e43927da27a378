"""Assembles the collectors a Config asks for into one prometheus_client registry, with self-metrics.

Each collector is wrapped so that its duration, success and errors appear as exporter_collector_* and a
collector that raises costs its own families for that scrape, never the whole scrape.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.config import Config

log = logging.getLogger("exporter")


@functools.cache
def exporter_version() -> str:  # importlib.metadata parses the METADATA file on each call
    try:
        return version("llmobs")
    except PackageNotFoundError:
        return "unknown"


class CollectorStats:
    """What the wrappers learned on the last scrape of each collector."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.duration: dict[str, float] = {}
        self.success: dict[str, bool] = {}
        self.exceptions: Counter[str] = Counter()


class TimedCollector(Collector):
    def __init__(self, name: str, inner: Any, stats: CollectorStats) -> None:
        self.name, self.inner, self.stats = name, inner, stats

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            families = list(self.inner.collect())
            ok = True
        except Exception:
            log.exception("collector %s failed", self.name)
            families, ok = [], False
        with self.stats.lock:
            self.stats.duration[self.name] = time.perf_counter() - started
            self.stats.success[self.name] = ok
            if not ok:
                self.stats.exceptions[self.name] += 1
        yield from families


class SelfCollector(Collector):
    """exporter_* families; registered last, so it reports on the collectors of the same scrape."""

    def __init__(self, collectors: dict[str, Any], stats: CollectorStats) -> None:
        self.collectors, self.stats = collectors, stats

    def collect(self) -> Iterator[Metric]:
        yield _build_info()
        with self.stats.lock:
            durations, successes = dict(self.stats.duration), dict(self.stats.success)
            exceptions = dict(self.stats.exceptions)
        duration = GaugeMetricFamily(
            "exporter_collector_duration_seconds",
            "Time the collector took on the last scrape.",
            labels=["collector"],
        )
        success = GaugeMetricFamily(
            "exporter_collector_success",
            "1 when the collector's last scrape succeeded.",
            labels=["collector"],
        )
        for name in self.collectors:
            if name in durations:
                duration.add_metric([name], durations[name])
                success.add_metric([name], float(successes[name]))
        errors = CounterMetricFamily(
            "exporter_collector_errors_total",
            "Errors inside collectors, by kind.",
            labels=["collector", "kind"],
        )
        for name, collector in self.collectors.items():
            counts = dict(getattr(collector, "error_counts", dict)())
            if exceptions.get(name):
                counts["exception"] = exceptions[name]
            for kind, count in sorted(counts.items()):
                errors.add_metric([name, kind], count)
        yield from (duration, success, errors)


def _build_info() -> GaugeMetricFamily:
    family = GaugeMetricFamily("exporter_build_info", "Exporter version (value 1).", labels=["version"])
    family.add_metric([exporter_version()], 1)
    return family


class Exporter:
    """The assembled collectors: a registry to serve, readiness, and one close() for all threads."""

    def __init__(self, collectors: dict[str, Any]) -> None:
        self.collectors = collectors
        self.stats = CollectorStats()
        self.registry = CollectorRegistry()
        for name, collector in collectors.items():
            self.registry.register(TimedCollector(name, collector, self.stats))
        self.registry.register(SelfCollector(collectors, self.stats))

    def ready(self) -> bool:
        """Every collector that can tell has finished its first background pass."""
        return all(getattr(c, "ready", lambda: True)() for c in self.collectors.values())

    def close(self) -> None:
        for name, collector in self.collectors.items():
            try:
                collector.close()
            except Exception:
                log.exception("closing collector %s failed", name)


def build_exporter(config: Config, nvml: Any = None, start_threads: bool = True) -> Exporter:
    """Collectors for config; `nvml` replaces the pynvml module (tests inject a fake)."""
    collectors: dict[str, Any] = {}
    gpu = None
    if config.collector_gpu:
        import pynvml

        from exporter.collectors.gpu import GpuCollector

        gpu = GpuCollector(
            nvml=pynvml if nvml is None else nvml,
            sampler_interval_seconds=config.gpu_sampler_interval_seconds,
            retry_seconds=config.nvml_retry_seconds,
            process_limit=config.gpu_process_limit,
            start_threads=start_threads,
        )
        collectors["gpu"] = gpu
    if config.collector_host:
        from exporter.collectors.host import HostCollector

        collectors["host"] = HostCollector(
            engine_patterns=config.engine_process_patterns,
            engine_process_limit=config.host_engine_process_limit,
            start_threads=start_threads,
        )
    if config.targets:
        from exporter.engines.collector import EnginesCollector

        gpu_processes = gpu.running_processes if gpu is not None else list
        collectors["engines"] = EnginesCollector(config, gpu_processes=gpu_processes)
    return Exporter(collectors)
