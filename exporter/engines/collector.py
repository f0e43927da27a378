"""EnginesCollector: scrape every configured engine target on each exporter scrape, publish `llm_*`.

All targets are fetched concurrently on one background event loop, each under its own deadline, so a
slow or dead target costs at most its own timeout and touches only its own `llm_target_*` series.
collect() builds every family from that one round of results: target health, normalized engine
series, the GPU join, and (with --engine-passthrough) the engines' own families renamed.

Targets are the configured ones plus, with Kubernetes discovery, the engine pods of this node (`discovered`,
asked before each round): a pod that appears gets a scraper, one that goes loses it, and every series of a
discovered target carries its extra labels (`namespace`, `pod`, `container`), its passed-through families
too. With discovery on, a configured target's series carry those labels empty: a Prometheus that scrapes
the exporter with honor_labels (the chart's ServiceMonitor) would otherwise give them the exporter pod's
own namespace, pod and container, as if the engine ran in it (an empty label stays absent in Prometheus).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.collectors.host import EngineMatcher
from exporter.collectors.process_labels import POD_LABELS
from exporter.config import Config, TargetConfig
from exporter.engines.gpu_join import GpuJoin, GpuProcessLike, GpuUse, JoinTarget
from exporter.engines.schema import FAMILIES, TARGET_FAMILIES, Spec
from exporter.engines.scraper import MAX_MODELS_PER_TARGET, UNKNOWN_KIND, TargetResult, TargetScraper
from exporter.redact import redact

log = logging.getLogger("exporter.engines")
ROUND_MARGIN_SECONDS = 0.5
_CREATED = "_created"
T = TypeVar("T")
# Engine targets found at run time (Kubernetes pods): each with the labels its series carry.
DiscoveredTargets = Callable[[], Sequence[tuple[TargetConfig, Mapping[str, str]]]]
NO_POD: Mapping[str, str] = dict.fromkeys(POD_LABELS, "")  # a configured target's, with discovery on
MAX_LE_TEXTS = 10_000
_le_texts: dict[float, str] = {}


class EnginesCollector(Collector):
    """The exporter's `engines` collector (registry.ExporterCollector): every target, on each scrape."""

    def __init__(
        self,
        config: Config,
        gpu_processes: Callable[[], Sequence[GpuProcessLike]] = list,
        discovered: DiscoveredTargets | None = None,
    ) -> None:
        self._configured = [TargetScraper(target) for target in config.targets]
        self._discovered_source = discovered
        self._discovered: dict[str, TargetScraper] = {}  # by name; kept while the config stays the same
        self._labels: dict[str, Mapping[str, str]] = {}
        self._scrapers = list(self._configured)
        self._passthrough = config.engine_passthrough
        self._join = GpuJoin(gpu_processes, EngineMatcher(config.engine_process_patterns))
        self._join_lock = threading.Lock()  # scrapes sharing a round still join one at a time
        self._loop = _LoopThread()
        # A scrape that arrives while a round runs waits for that round and shares its results: each round
        # updates the per-target counters once, and no scrape waits for more than one round.
        self._round_lock = threading.Lock()
        self._round: _Round | None = None
        self._overrun: tuple[Future[list[TargetResult]] | None, list[TargetResult]] = (None, [])
        self._overrunning = False

    def describe(self) -> Iterator[Metric]:
        for name, spec in {**TARGET_FAMILIES, **FAMILIES}.items():
            yield _family(name, spec)

    @property
    def deadline_seconds(self) -> float:
        """Every target has its own deadline (at most MAX_TARGET_TIMEOUT_SECONDS); the round ends by the
        longest of them plus a margin, so an exporter scrape stays inside Prometheus's scrape_timeout."""
        return max((s.timeout for s in self._scrapers), default=1.0) + ROUND_MARGIN_SECONDS

    def collect(self) -> Iterator[Metric]:
        round_, results = self._results()
        uses, ambiguous = self._gpu_uses(round_.scrapers, results)
        yield from build_families(results, uses, self._passthrough, ambiguous, round_.labels)

    def _results(self) -> tuple[_Round, list[TargetResult]]:
        with self._round_lock:
            round_ = self._round
            if round_ is None or round_.future.done():
                self._sync_discovered()
                scrapers = list(self._scrapers)
                future = self._loop.submit(self._scrape_all(scrapers))
                round_ = self._round = _Round(future, scrapers, self._labels)
        deadline = max((s.timeout for s in round_.scrapers), default=1.0) + ROUND_MARGIN_SECONDS
        try:
            results = round_.future.result(deadline)
        except (TimeoutError, CancelledError):
            # Only a loop held up by something else gets here (each target has its own deadline inside);
            # a scrape sharing the round sees it cancelled by the first one that gave up on it.
            with self._round_lock:
                if self._overrun[0] is not round_.future:
                    round_.future.cancel()
                    if not self._overrunning:  # logged once per change, not per scrape
                        log.warning("engines round passed its %.1fs deadline", deadline)
                    self._overrunning = True
                    results = [s.round_overrun(deadline) for s in round_.scrapers]
                    self._overrun = (round_.future, results)
                return round_, self._overrun[1]
        if self._overrunning:
            self._overrunning = False
            log.info("engines rounds end within their deadline again")
        return round_, results

    def ready(self) -> bool:
        return True  # nothing to wait for: engines are read when Prometheus scrapes

    def error_counts(self) -> dict[str, int]:
        return {}  # a target's failures are llm_target_errors_total{target, kind}, not collector errors

    def close(self) -> None:
        try:  # the kept connections, on the loop they belong to
            self._loop.submit(_close_all([*self._configured, *self._discovered.values()])).result(5)
        except Exception:
            log.debug("engines: closing the targets' connections did not finish in time")
        self._loop.close()

    def _sync_discovered(self) -> None:
        """Scrapers for the targets discovery names now (between rounds, so a round's list is fixed)."""
        if self._discovered_source is None:
            return
        try:
            found = self._discovered_source()
        except Exception:  # discovery failing costs the discovered targets' changes only
            log.exception("engine target discovery failed; keeping the previous targets")
            return
        configured = {s.target.name for s in self._configured}
        kept: dict[str, TargetScraper] = {}
        labels: dict[str, Mapping[str, str]] = dict.fromkeys(configured, NO_POD)
        for target, extra in found:
            if target.name in configured or target.name in kept:
                continue
            scraper = self._discovered.get(target.name)
            kept[target.name] = scraper if scraper and scraper.target == target else TargetScraper(target)
            labels[target.name] = dict(extra)
        gone = [s for name, s in self._discovered.items() if kept.get(name) is not s]
        if gone:
            self._loop.submit(_close_all(gone))  # their connections; a round still using one reconnects
        self._discovered, self._labels = kept, labels
        self._scrapers = [*self._configured, *kept.values()]

    def _gpu_uses(
        self, scrapers: Sequence[TargetScraper], results: Sequence[TargetResult]
    ) -> tuple[list[GpuUse], set[str]]:
        targets = [
            JoinTarget(
                name=r.name,
                url=r.url,
                engine_kind=None if r.engine_kind == UNKNOWN_KIND else r.engine_kind,
                process=s.target.process,
                peer=r.peer,
                answered=r.up,
            )
            for r, s in zip(results, scrapers, strict=True)
        ]
        try:
            with self._join_lock:
                return self._join.join(targets), set(self._join.ambiguous)
        except Exception:  # a failing GPU side costs the join series only, never the engine series
            log.exception("engine -> GPU join failed")
            return [], set()

    async def _scrape_all(self, scrapers: Sequence[TargetScraper]) -> list[TargetResult]:
        return list(await asyncio.gather(*(s.scrape() for s in scrapers)))


@dataclass(frozen=True)
class _Round:
    """One engines round: its scrapes, the scrapers it ran and the extra labels of their targets."""

    future: Future[list[TargetResult]]
    scrapers: Sequence[TargetScraper]
    labels: Mapping[str, Mapping[str, str]]


def build_families(
    results: Sequence[TargetResult],
    uses: Iterable[GpuUse],
    passthrough: bool,
    ambiguous: Iterable[str] = (),
    target_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Metric]:
    """The families of one round; `target_labels` are extra labels on every series of a target."""
    extra = target_labels or {}
    families: dict[str, Metric] = {}

    def family(name: str) -> Metric:
        if name not in families:
            families[name] = _family(name, {**TARGET_FAMILIES, **FAMILIES}[name])
        return families[name]

    kinds = {r.name: r.engine_kind for r in results}
    for result in results:
        # Health series carry `target` only: discovery (unknown -> kind) or a kind flip must not move
        # the error counts to new series, which increase() would lose. The kind is on llm_target_info.
        target = {"target": result.name, **extra.get(result.name, {})}
        base = {**target, "engine_kind": result.engine_kind}
        family("llm_target_info").add_sample("llm_target_info", base, 1.0)
        family("llm_target_up").add_sample("llm_target_up", target, float(result.up))
        family("llm_target_scrape_duration_seconds").add_sample(
            "llm_target_scrape_duration_seconds", target, result.duration_seconds
        )
        if result.last_success_timestamp is not None:
            family("llm_target_last_success_timestamp_seconds").add_sample(
                "llm_target_last_success_timestamp_seconds", target, result.last_success_timestamp
            )
        for kind, count in result.errors.items():
            family("llm_target_errors_total").add_sample(
                "llm_target_errors_total", {**target, "kind": kind}, count
            )
        for reason, count in result.dropped.items():
            family("llm_target_series_dropped_total").add_sample(
                "llm_target_series_dropped_total", {**target, "reason": reason}, count
            )
        if result.normalized is not None:
            _add_normalized(result, base, family)
        family("llm_engine_gpu_join_ambiguous").add_sample(
            "llm_engine_gpu_join_ambiguous", target, float(result.name in set(ambiguous))
        )
    for use in uses:
        labels = {
            "target": use.target,
            **extra.get(use.target, {}),
            "engine_kind": kinds.get(use.target, ""),
            "gpu": use.gpu,
            "uuid": use.uuid,
        }
        family("llm_engine_gpu_info").add_sample("llm_engine_gpu_info", labels, 1.0)
        if use.memory_bytes is not None:
            family("llm_engine_gpu_memory_used_bytes").add_sample(
                "llm_engine_gpu_memory_used_bytes", labels, float(use.memory_bytes)
            )
    ordered = list(families.values())
    if passthrough:
        ordered.extend(passthrough_families(results, extra))
    return ordered


def _add_normalized(result: TargetResult, base: dict[str, str], family: Callable[[str], Metric]) -> None:
    normalized = result.normalized
    assert normalized is not None
    allowed = _bounded_models(normalized.points, normalized.histograms)
    for point in normalized.points:
        if point.labels.get("model", "") in allowed:
            family(point.family).add_sample(point.family, {**clean(point.labels), **base}, point.value)
    for histogram in normalized.histograms:
        if histogram.labels.get("model", "") not in allowed:
            continue
        labels = {**clean(histogram.labels), **base}
        metric = family(histogram.family)
        for bound, count in histogram.buckets:
            metric.add_sample(f"{histogram.family}_bucket", {**labels, "le": _le(bound)}, count)
        metric.add_sample(f"{histogram.family}_count", labels, histogram.count)
        metric.add_sample(f"{histogram.family}_sum", labels, histogram.sum)


def _le(bound: float) -> str:
    """A bucket bound as its `le` label: engines use a few dozen bounds, written on every scrape."""
    text = _le_texts.get(bound)
    if text is None:
        if len(_le_texts) >= MAX_LE_TEXTS:
            _le_texts.clear()
        text = _le_texts[bound] = floatToGoString(bound)
    return text


def _bounded_models(points, histograms) -> set[str]:
    models = sorted(
        {p.labels.get("model", "") for p in points} | {h.labels.get("model", "") for h in histograms}
    )
    return set(models[:MAX_MODELS_PER_TARGET])  # the scraper logs when a target starts reporting more


def passthrough_families(
    results: Sequence[TargetResult], target_labels: Mapping[str, Mapping[str, str]] | None = None
) -> list[Metric]:
    """The engines' own families, renamed to [a-zA-Z0-9_] and labelled with `target` and the target's extra
    labels (`namespace`, `pod`, `container` of a discovered pod); `_created` dropped.

    What Prometheus would refuse is never published, as one such series fails the whole scrape of the
    exporter: an engine label named `target`, one of the extra labels, or reserved (`__name__`, `__x`)
    becomes `exported_<name>`, and of two series that renaming made one (`vllm:x` and `vllm_x`) the first
    is kept."""
    extra = target_labels or {}
    merged: dict[str, Metric] = {}
    published: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    for result in results:
        if result.exposition is None or result.engine is None:
            continue
        for wire_family in result.exposition.families.values():
            if wire_family.name.endswith(_CREATED) or not wire_family.samples:
                continue
            name = result.engine.passthrough_name(wire_family.name)
            metric_type = _passthrough_type(wire_family.type, name)
            family_name = name[: -len("_total")] if metric_type == "counter" else name
            metric = merged.get(family_name)
            if metric is None:
                metric = merged[family_name] = Metric(
                    family_name, wire_family.help or wire_family.name, metric_type
                )
            elif metric.type != metric_type:
                continue  # two targets disagree on the type: the first one keeps the name
            for sample in wire_family.samples:
                if sample.name.endswith(_CREATED):
                    continue
                ours = {"target": result.name, **extra.get(result.name, {})}
                labels = {_passthrough_label(k, ours): v for k, v in clean(sample.labels).items()}
                labels.update(ours)
                sample_name = result.engine.passthrough_name(sample.name)
                series = (sample_name, frozenset(labels.items()))
                if series not in published:
                    published.add(series)
                    metric.add_sample(sample_name, labels, sample.value)
    return list(merged.values())


def _passthrough_label(name: str, ours: Mapping[str, str]) -> str:
    return f"exported_{name}" if name in ours or name.startswith("__") else name


def clean(labels: Mapping[str, str]) -> dict[str, str]:
    """An engine's label values as they may be published: without credentials (redact.py)."""
    return {name: redact(value) for name, value in labels.items()}


def _passthrough_type(wire_type: str, name: str) -> str:
    if wire_type == "counter":
        # Counters without _total on the wire (TGI, Triton) would be renamed by the writer: keep them untyped.
        return "counter" if name.endswith("_total") else "unknown"
    return wire_type if wire_type in ("gauge", "histogram", "summary") else "unknown"


def _family(name: str, spec: Spec) -> Metric:
    if spec.type == "counter":
        return Metric(name[: -len("_total")], spec.help, "counter")
    return Metric(name, spec.help, spec.type)


class _LoopThread:
    """One asyncio loop on a daemon thread; collect() may be called from any thread, even an event loop's."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engines-scrape", daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def close(self) -> None:
        if self._loop.is_running():
            try:  # let cancelled rounds unwind (close their connections) before the loop stops
                self.submit(_cancel_pending()).result(5)
            except Exception:
                log.debug("engines loop: pending rounds did not unwind in time")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


async def _close_all(scrapers: Sequence[TargetScraper]) -> None:
    await asyncio.gather(*(s.close() for s in scrapers), return_exceptions=True)


async def _cancel_pending() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
