"""Assembles the collectors a Config asks for, with self-metrics, and serves them from a snapshot.

A refresher thread collects the GPU and host collectors every --collect-interval-seconds and renders the
/metrics body once per format asked for, so a scrape only writes bytes; the engines collector is still
collected on each scrape (exporter/README.md says why) and joined to the cached part. Each collector is
wrapped so that its duration, success and errors appear as exporter_collector_*, and a collector that
raises costs only its own families for that pass or scrape.
"""

from __future__ import annotations

import functools
import gzip
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.config import Config
from exporter.exposition import EOF, render_families
from exporter.http_protocol import HttpStats
from exporter.pacer import Pacer

log = logging.getLogger("exporter")

# Fetched when Prometheus scrapes, never cached (exporter/README.md: "Fetch on scrape").
ON_SCRAPE = frozenset({"engines"})
# The `collector` label of a refresher pass that failed as a whole (e.g. a family that cannot be rendered).
SNAPSHOT = "snapshot"
# What started a refresher pass: the refresher thread (at start, before a foreseen scrape) or a scrape that
# found the snapshot older than the interval (exporter_snapshot_passes_total{trigger}).
PassTrigger = Literal["background", "scrape"]
PASS_TRIGGERS: tuple[PassTrigger, ...] = get_args(PassTrigger)


@runtime_checkable
class ExporterCollector(Protocol):
    """What the exporter asks of each of its collectors: prometheus_client's `collect()`, plus the hooks
    the refresher, the self-metrics and shutdown call (GpuCollector, HostCollector, EnginesCollector)."""

    def collect(self) -> Iterable[Metric]:
        """The families of this pass or scrape; raising costs this collector's families only."""
        ...

    def ready(self) -> bool:
        """True once the first background pass is done (/readyz waits for every collector)."""
        ...

    def error_counts(self) -> Mapping[str, int]:
        """Errors inside the collector by kind, cumulative (exporter_collector_errors_total)."""
        ...

    def close(self) -> None:
        """Stop background threads and release what the collector holds."""
        ...


@functools.cache
def exporter_version() -> str:  # importlib.metadata parses the METADATA file on each call
    try:
        return version("llmobs")
    except PackageNotFoundError:
        return "unknown"


class CollectorStats:
    """What the wrappers learned on the last run (refresher pass or scrape) of each collector."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.duration: dict[str, float] = {}
        self.success: dict[str, bool] = {}
        self.exceptions: Counter[str] = Counter()
        self.passes: Counter[PassTrigger] = Counter()  # refresher passes by what started them


class TimedCollector(Collector):
    def __init__(self, name: str, inner: ExporterCollector, stats: CollectorStats) -> None:
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


class SelfCollector:
    """exporter_* families, built last, so they report on the collectors of the same pass or scrape."""

    def __init__(self, collectors: Mapping[str, ExporterCollector], stats: CollectorStats) -> None:
        self.collectors, self.stats = collectors, stats

    def families(self, snapshot_timestamp: float | None) -> list[Metric]:
        with self.stats.lock:
            durations, successes = dict(self.stats.duration), dict(self.stats.success)
            exceptions, passes = dict(self.stats.exceptions), dict(self.stats.passes)
        duration = GaugeMetricFamily(
            "exporter_collector_duration_seconds",
            "Time the collector took on its last run (refresher pass, or scrape for engines).",
            labels=["collector"],
        )
        success = GaugeMetricFamily(
            "exporter_collector_success",
            "1 when the collector's last run succeeded.",
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
            counts = dict(collector.error_counts())
            if exceptions.get(name):
                counts["exception"] = exceptions[name]
            for kind, count in sorted(counts.items()):
                errors.add_metric([name, kind], count)
        if exceptions.get(SNAPSHOT):
            errors.add_metric([SNAPSHOT, "exception"], exceptions[SNAPSHOT])
        renewed = CounterMetricFamily(
            "exporter_snapshot_passes_total",
            "Refresher passes (GPU and host readings collected, /metrics rendered) by what started them: "
            "the refresher before a foreseen scrape, or a scrape that found the snapshot too old.",
            labels=["trigger"],
        )
        for trigger in PASS_TRIGGERS:
            renewed.add_metric([trigger], passes.get(trigger, 0))
        families: list[Metric] = [_build_info(), duration, success, errors, renewed]
        if snapshot_timestamp is not None:
            families.append(
                GaugeMetricFamily(
                    "exporter_snapshot_timestamp_seconds",
                    "Unix time the served GPU and host readings were collected; age = time() - this.",
                    value=snapshot_timestamp,
                )
            )
        return families


def _build_info() -> GaugeMetricFamily:
    family = GaugeMetricFamily("exporter_build_info", "Exporter version (value 1).", labels=["version"])
    family.add_metric([exporter_version()], 1)
    return family


Body = tuple[bool, bool]  # (OpenMetrics?, gzip?)


class _Rendered:
    """Families rendered at most once per format (text 0.0.4 or OpenMetrics), on first need."""

    def __init__(
        self, families: Iterable[Metric], timestamp: float | None = None, ready: bool = False
    ) -> None:
        self.families, self.timestamp, self.ready = tuple(families), timestamp, ready
        self._parts: dict[bool, bytes] = {}

    def part(self, openmetrics: bool) -> bytes:
        if openmetrics not in self._parts:  # two threads may both render once: same bytes, no harm
            self._parts[openmetrics] = render_families(self.families, openmetrics)
        return self._parts[openmetrics]


class _Snapshot:
    """Whole response bodies for one refresher pass: its families, then the self-metrics taken after it."""

    def __init__(self, data: _Rendered, tail: _Rendered) -> None:
        self.data, self.tail = data, tail
        self._bodies: dict[Body, bytes] = {}

    def body(self, key: Body) -> bytes:
        if key not in self._bodies:
            self._bodies[key] = _finish(self.data.part(key[0]) + self.tail.part(key[0]), *key)
        return self._bodies[key]


def _finish(body: bytes, openmetrics: bool, gzipped: bool) -> bytes:
    body = body + EOF if openmetrics else body
    return gzip.compress(body, compresslevel=1) if gzipped else body


class Exporter:
    """The assembled collectors, served from a snapshot that one refresher thread renews.

    The refresher collects the background collectors (gpu, host) and renders the response once per format
    asked for so far, so a scrape writes cached bytes. It does so shortly before each scrape the Pacer
    foresees, so that a scrape gets readings at most `collect_interval_seconds` old, and not at all while
    nobody scrapes; a scrape that finds the snapshot older than that (one not foreseen) renews it first.
    Collectors in ON_SCRAPE (engines) are still collected on each scrape and joined to the cached part.
    """

    def __init__(
        self,
        collectors: Mapping[str, ExporterCollector],
        collect_interval_seconds: float = 1.0,
        pacer: Pacer | None = None,
    ) -> None:
        self.collectors = collectors
        self.collect_interval_seconds = collect_interval_seconds
        self.pacer = pacer or Pacer(collect_interval_seconds)
        self.stats = CollectorStats()
        timed = {name: TimedCollector(name, c, self.stats) for name, c in collectors.items()}
        self._background = [t for name, t in timed.items() if name not in ON_SCRAPE]
        self._on_scrape = [t for name, t in timed.items() if name in ON_SCRAPE]
        self._self = SelfCollector(collectors, self.stats)
        self._wanted: set[Body] = {(False, False)}
        self._pass_lock = threading.Lock()
        self._data: _Rendered | None = None
        self._snapshot: _Snapshot | None = None
        self._attempted: float | None = None  # monotonic start of the last pass, good or not
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_forever, name="refresher", daemon=True)

    def start(self) -> Exporter:
        self._refresher.start()
        return self

    def refresh(self, trigger: PassTrigger = "background") -> None:
        """One pass: collect, render what scrapes asked for; if it fails, the last good data stays."""
        with self._pass_lock:
            self._pass(trigger)

    def _pass(self, trigger: PassTrigger) -> None:
        self._attempted = time.monotonic()
        with self.stats.lock:
            self.stats.passes[trigger] += 1
        ready = all(c.ready() for c in self.collectors.values())
        try:
            data = _Rendered((f for c in self._background for f in c.collect()), time.time(), ready)
            for openmetrics, _ in tuple(self._wanted):
                data.part(openmetrics)
            self._data = data
        except Exception:
            log.exception("refresher pass failed; serving the previous snapshot")
            with self.stats.lock:
                self.stats.exceptions[SNAPSHOT] += 1
        data = self._data or _Rendered(())
        snapshot = _Snapshot(data, _Rendered(self._self.families(data.timestamp)))
        if not self._on_scrape:
            for key in tuple(self._wanted):
                snapshot.body(key)
        self._snapshot = snapshot

    def scrape(self, openmetrics: bool, gzipped: bool) -> bytes:
        """A whole /metrics body: the cached snapshot (renewed first when older than the interval), plus the
        on-scrape collectors collected now."""
        self._wanted.add((openmetrics, gzipped))
        self.pacer.scraped()
        if self._refresher.is_alive():
            self._renew_if_stale()
        snapshot = self._snapshot or self._first_snapshot()
        if not self._on_scrape:
            return snapshot.body((openmetrics, gzipped))
        tail = render_families(self._live_families(snapshot), openmetrics)
        return _finish(snapshot.data.part(openmetrics) + tail, openmetrics, gzipped)

    def families(self) -> list[Metric]:
        """Everything a scrape serves, as families (for other encoders and for tests)."""
        snapshot = self._snapshot or self._first_snapshot()
        if not self._on_scrape:
            return [*snapshot.data.families, *snapshot.tail.families]
        return [*snapshot.data.families, *self._live_families(snapshot)]

    def collect(self) -> list[Metric]:
        """A refresher pass now, then families()."""
        self.refresh()
        return self.families()

    def ready(self) -> bool:
        """The snapshot served was taken after every collector had finished its first background pass."""
        return self._data is not None and self._data.ready

    def close(self) -> None:
        self._stop.set()
        self.pacer.wake()
        if self._refresher.is_alive():
            self._refresher.join(timeout=5)
        for name, collector in self.collectors.items():
            try:
                collector.close()
            except Exception:
                log.exception("closing collector %s failed", name)

    def _live_families(self, snapshot: _Snapshot) -> list[Metric]:
        live = [f for c in self._on_scrape for f in c.collect()]
        return live + self._self.families(snapshot.data.timestamp)

    def _first_snapshot(self) -> _Snapshot:
        self.refresh()  # only without a refresher thread (tests, tools): a scrape before any pass
        assert self._snapshot is not None
        return self._snapshot

    def _renew_if_stale(self) -> None:
        """A scrape the Pacer did not foresee: renew a snapshot older than the interval before answering,
        unless a pass was tried within the interval (a failing pass is not retried on every scrape)."""
        if not self._stale():
            return
        with self._pass_lock:
            if self._stale():  # a pass may have run while this scrape waited for the lock
                self._pass("scrape")

    def _stale(self) -> bool:
        attempted = self._attempted
        return attempted is None or time.monotonic() - attempted > self.collect_interval_seconds

    def _refresh_forever(self) -> None:
        # Until ready, passes repeat every 0.1 s so /readyz does not wait; then before each foreseen scrape.
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # refresh() keeps its own failures; nothing may end this thread
                log.exception("refresher pass failed")
            if not self.ready():
                self._stop.wait(min(0.1, self.collect_interval_seconds))
                continue
            lead = min(self.collect_interval_seconds / 2, 0.05 + 2 * (time.monotonic() - started))
            self.pacer.wait(self.pacer.due(lead, started), self._stop)


def build_exporter(config: Config, nvml: Any = None, start_threads: bool = True) -> Exporter:
    """Collectors for config; `nvml` replaces the pynvml module (tests inject a fake)."""
    collectors: dict[str, ExporterCollector] = {}
    kubernetes = None
    if config.kubernetes_discovery or config.kubernetes_pod_resources_socket is not None:
        from exporter.discovery.service import KubernetesCollector

        kubernetes = KubernetesCollector(config, start_threads=start_threads)
    process_labels = kubernetes.process_labels if kubernetes is not None else None
    pacer = Pacer(config.collect_interval_seconds)  # background readers read before foreseen scrapes
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
            process_labels=process_labels,
            pacer=pacer,
        )
        collectors["gpu"] = gpu
    if config.collector_host:
        from exporter.collectors.host import HostCollector

        collectors["host"] = HostCollector(
            engine_patterns=config.engine_process_patterns,
            engine_process_limit=config.host_engine_process_limit,
            start_threads=start_threads,
            process_labels=process_labels,
            targets=[(target.name, target.url) for target in config.targets],
            pacer=pacer,
        )
    if kubernetes is not None:
        collectors["kubernetes"] = kubernetes
    collectors["http"] = HttpStats()  # the HTTP server's connections; __main__ hands it to the server
    if config.targets or config.kubernetes_discovery:
        from exporter.engines.collector import EnginesCollector

        gpu_processes = gpu.running_processes if gpu is not None else list
        discovered = kubernetes.engine_targets if kubernetes is not None else None
        collectors["engines"] = EnginesCollector(config, gpu_processes, discovered)
    exporter = Exporter(collectors, config.collect_interval_seconds, pacer)
    return exporter.start() if start_threads else exporter
