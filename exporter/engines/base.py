"""The one small interface every engine adapter implements, and the table-driven helpers most of them share.

Each adapter's file declares everything the exporter knows about its engine as class attributes:
`kind` (the `engine_kind` label and the `kind=` of a target), `metrics_path` (its default metrics path),
`prefixes` (wire-name prefixes that identify its payloads) and `process_names` (the program names its
processes run as, for the host collector and the GPU join). `engines/registry.py` lists the adapters;
every other list of engines (configuration, host collector, discovery) is derived from it.

An adapter is three steps:
- `scrape(fetch)`: the HTTP reads it needs (usually its metrics path, sometimes a JSON status page);
- `detect(exposition)`: does this payload come from this engine (by its metric-name prefix)?
- `normalize(scraped, model)`: the engine's names onto the `llm_*` schema.

Most engines are described by a `Table`: for each normalized family the engine's wire names in order of
preference (first one present wins, which is how renamed metrics fall back), plus a function that maps
an engine series' labels onto `model` / `engine_index` (or drops the series, e.g. non-zero TP ranks).
Series that map onto the same labels are summed (counters, request counts; histograms with equal bounds)
or, for ratios, the largest is kept.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from exporter.engines.parse import Exposition, HistogramValue
from exporter.engines.schema import (
    FAMILIES,
    ErrorKind,
    Histogram,
    Normalized,
    finish_reason,
    raw_reason_label,
)
from exporter.errors import ExporterError

LabelMap = Callable[[Mapping[str, str]], dict[str, str] | None]
RATIO_FAMILIES = {"llm_kv_cache_usage_ratio"}


class ScrapeError(ExporterError):
    """A failed scrape, with `kind` one of the counted schema.ErrorKind; the message never holds secrets."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class Fetch(Protocol):
    """HTTP reads against one target, with its timeout, auth, TLS and budgets applied; raises ScrapeError."""

    async def metrics(self, default_path: str) -> Exposition:
        """The exposition at the target URL's own path when it has one, else at default_path, parsed as it
        arrives; ParseError when it is not valid exposition text."""
        ...

    async def json(self, path: str) -> Any: ...

    async def static_page(self, path: str, read: Callable[[], Awaitable[Any]]) -> Any:
        """What `read()` returned for `path` at an earlier good scrape of this target, if recent; else
        `read()`'s answer now, remembered (see optional_json's `static`)."""
        ...


@dataclass
class Scraped:
    exposition: Exposition | None = None
    documents: dict[str, Any] = field(default_factory=dict)  # JSON status pages by path


@dataclass(frozen=True)
class Table:
    """Wire names per normalized family, in order of preference, and a histogram unit scale."""

    names: Mapping[str, Sequence[str]]
    labels: LabelMap
    histogram_divisor: Mapping[str, float] = field(default_factory=dict)  # family -> e.g. 1000 for ms


class Engine:
    kind: ClassVar[str]
    metrics_path: ClassVar[str] = "/metrics"
    prefixes: ClassVar[tuple[str, ...]] = ()  # wire-name prefixes that identify this engine
    # A regex matched against the whole program name (executable, or the X of `python [-m] X`); None when
    # the engine's processes have no name of their own (NIM runs a vLLM-derived server).
    process_names: ClassVar[str | None] = None
    # Pass-through keeps names that start with one of these (after `:` -> `_`); others get `<kind>_` in front.
    passthrough_prefixes: ClassVar[tuple[str, ...] | None] = None

    async def scrape(self, fetch: Fetch, exposition: Exposition | None = None) -> Scraped:
        """Read what normalize() needs; `exposition` is the metrics payload when discovery already read it."""
        if exposition is None:
            exposition = await fetch.metrics(self.metrics_path)
        return Scraped(exposition=exposition)

    def detect(self, exposition: Exposition) -> bool:
        return detection_score(exposition, self.prefixes) > 0

    def passthrough_name(self, wire_name: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9_]", "_", wire_name)
        keep = self.passthrough_prefixes if self.passthrough_prefixes is not None else self.prefixes
        keep = tuple(re.sub(r"[^a-zA-Z0-9_]", "_", p) for p in keep)
        return name if keep and name.startswith(keep) else f"{self.kind}_{name}"

    def normalize(self, scraped: Scraped, model: str | None) -> Normalized:
        raise NotImplementedError


async def optional_json(fetch: Fetch, path: str, static: bool = False) -> Any:
    """A JSON page some builds lack: None for an error answer or a non-JSON body; down is still down.

    `static`: a page that changes only when the engine restarts (vLLM's /version, llama.cpp's /props,
    TGI's /info): read at the target's first good scrape, after a failed one and every
    scraper.STATIC_PAGE_SECONDS, not on every scrape (one more HTTP request per scrape otherwise)."""
    if static:
        return await fetch.static_page(path, lambda: optional_json(fetch, path))
    try:
        return await fetch.json(path)
    except ScrapeError as exc:
        if exc.kind in ("http_status", "parse"):
            return None
        raise


def detection_score(exposition: Exposition, prefixes: Sequence[str]) -> int:
    return sum(1 for name in exposition.families if name.startswith(tuple(prefixes)))


def first_present(exposition: Exposition, names: Sequence[str], histogram: bool) -> str | None:
    for name in names:
        if exposition.has(f"{name}_count" if histogram else name):
            return name
    return None


def labels_from_engine(
    model: str | None, model_keys: Sequence[str] = ("model_name",), index_key: str | None = None
) -> Callable[[Mapping[str, str]], dict[str, str]]:
    """Our labels from an engine's: `model` from the first of `model_keys` it carries (else the target's
    configured model), `engine_index` from `index_key` (a data-parallel rank or replica)."""

    def labels(engine_labels: Mapping[str, str]) -> dict[str, str]:
        result = {}
        for key in model_keys:
            if name := engine_labels.get(key):
                result["model"] = name
                break
        else:
            if model:
                result["model"] = model
        if index_key and (index := engine_labels.get(index_key)):
            result["engine_index"] = index
        return result

    return labels


def apply_table(exposition: Exposition, table: Table, out: Normalized) -> None:
    for family, names in table.names.items():
        histogram = FAMILIES[family].type == "histogram"
        name = first_present(exposition, names, histogram)
        if name is None:
            continue  # the engine lacks the concept: absent, never zero
        if histogram:
            divisor = table.histogram_divisor.get(family, 1.0)
            for labels, value in merge_histograms(exposition.histograms(name), table.labels):
                out.add_histogram(in_seconds(family, labels, value, divisor))
        else:
            combine = max if family in RATIO_FAMILIES else sum
            for labels, values in group(exposition.samples(name), table.labels).items():
                out.add(family, combine(values), dict(labels))


def group(samples, label_map: LabelMap) -> dict[tuple[tuple[str, str], ...], list[float]]:
    grouped: dict[tuple[tuple[str, str], ...], list[float]] = {}
    for sample in samples:
        labels = label_map(sample.labels)
        if labels is not None:
            grouped.setdefault(tuple(sorted(labels.items())), []).append(sample.value)
    return grouped


def merge_histograms(values: Sequence[HistogramValue], label_map: LabelMap):
    """Sum histograms that map onto the same labels; ones whose bounds differ from the first are dropped."""
    merged: dict[tuple[tuple[str, str], ...], HistogramValue] = {}
    for value in values:
        labels = label_map(value.labels)
        if labels is None:
            continue
        key = tuple(sorted(labels.items()))
        known = merged.get(key)
        if known is None:
            merged[key] = value
        elif [b for b, _ in known.buckets] == [b for b, _ in value.buckets]:
            buckets = tuple(
                (b, c1 + c2) for (b, c1), (_, c2) in zip(known.buckets, value.buckets, strict=True)
            )
            merged[key] = HistogramValue(
                known.labels, buckets, known.sum + value.sum, known.count + value.count
            )
    return [(dict(key), value) for key, value in merged.items()]


def in_seconds(family: str, labels: Mapping[str, str], value: HistogramValue, divisor: float) -> Histogram:
    """The histogram under a normalized name, bounds and sum divided into seconds (1000 for ms)."""
    if divisor == 1.0:
        return Histogram(family, dict(labels), value.buckets, value.sum, value.count)
    buckets = tuple((bound / divisor, count) for bound, count in value.buckets)
    return Histogram(family, dict(labels), buckets, value.sum / divisor, value.count)


def add_finished(
    exposition: Exposition,
    name: str,
    reason_label: str,
    label_map: LabelMap,
    out: Normalized,
    common: Callable[[str], str] = finish_reason,
) -> None:
    """`llm_requests_finished_total{reason, raw_reason}` from a counter labelled with the engine's reason;
    series that map onto the same labels are summed."""
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in exposition.samples(name):
        labels = label_map(sample.labels)
        if labels is None or reason_label not in sample.labels:
            continue
        raw = sample.labels[reason_label]
        labels = {**labels, "reason": common(raw), "raw_reason": raw_reason_label(raw)}
        key = tuple(sorted(labels.items()))
        totals[key] = totals.get(key, 0.0) + sample.value
    for key, value in totals.items():
        out.add("llm_requests_finished_total", value, dict(key))


def add_counted(
    exposition: Exposition, name: str, reason: str, raw_reason: str, label_map: LabelMap, out: Normalized
) -> None:
    """`llm_requests_finished_total` from a counter without a reason label, under one fixed reason."""
    for labels, values in group(exposition.samples(name), label_map).items():
        out.add(
            "llm_requests_finished_total",
            sum(values),
            {**dict(labels), "reason": reason, "raw_reason": raw_reason},
        )


def add_info(out: Normalized, models: Sequence[str], version: str | None = None) -> None:
    for model in sorted(set(models)):
        labels = {"model": model} if model else {}
        if version:
            labels["version"] = version
        out.add("llm_engine_info", 1, labels)


def models_seen(out: Normalized) -> list[str]:
    return [p.labels["model"] for p in out.points if "model" in p.labels] + [
        h.labels["model"] for h in out.histograms if "model" in h.labels
    ]


def label_values(exposition: Exposition, label: str, prefixes: Sequence[str]) -> list[str]:
    """The distinct values of `label` on the engine's own families (models the schema has no series for)."""
    prefixes = tuple(prefixes)
    found = {
        sample.labels.get(label)
        for name, family in exposition.families.items()
        if name.startswith(prefixes)
        for sample in family.samples
    }
    return sorted(value for value in found if value)


def model_labels(model: str | None) -> dict[str, str]:
    return {"model": model} if model else {}
