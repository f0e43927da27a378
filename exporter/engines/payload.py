"""A parsed exposition payload: its samples, families and histograms (what parse.py reads, and what a
target's template rebuilds without reading, template.py)."""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from exporter.engines.schema import DropReason
from exporter.errors import ExporterError

# A sample's value as the exposition format writes it.
VALUE = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[Ii]nf|NaN|nan)")
# A value made of these alone is valid exactly when float() takes it (no '_', no letters, no spaces).
NUMBER_CHARS = "0123456789.eE+-"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class ParseError(ExporterError, ValueError):
    """The payload is not valid Prometheus text; the message says where and why."""


class Labels(dict[str, str]):
    """A sample's labels, which remember their histogram grouping key (and `le` bound) once asked for: the
    same Labels serve a series in every payload of its target (SeriesHeads), so each is computed once."""

    __slots__ = ("_bucket", "_group")

    def group(self) -> tuple[tuple[str, str], ...]:
        """The labels other than `le`, sorted: what a histogram's `_bucket`, `_sum` and `_count` share."""
        try:
            return self._group
        except AttributeError:
            self._group = _without_le(self)
            return self._group

    def bucket(self, name: str) -> tuple[tuple[tuple[str, str], ...], float]:
        """(group, upper bound) of a `<name>_bucket` sample; ParseError without a valid `le`."""
        try:
            return self._bucket
        except AttributeError:
            self._bucket = (self.group(), _bound(self, name))
            return self._bucket


class Sample(NamedTuple):  # a tuple: a payload has tens of thousands, made at a few microseconds each
    name: str
    labels: Mapping[str, str]  # shared by the samples of one series across payloads: never modified
    value: float


new_sample = tuple.__new__  # Sample(...) without the Python frame of NamedTuple's __new__ (a line's hot path)


@dataclass(frozen=True)
class HistogramValue:
    """One labelled histogram: cumulative buckets (upper bound, count) ascending, +Inf last."""

    labels: Mapping[str, str]
    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float


@dataclass
class Family:
    name: str
    type: str
    help: str = ""
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Exposition:
    """Families in payload order, every sample indexed by its exact wire name, and the series dropped."""

    families: dict[str, Family]
    by_sample_name: dict[str, list[Sample]]
    dropped: Counter[DropReason] = field(default_factory=Counter)
    # assembled once (the reader validates every histogram; adapters read some again)
    _histograms: dict[str, list[HistogramValue]] = field(default_factory=dict, repr=False, compare=False)

    def samples(self, name: str) -> list[Sample]:
        return self.by_sample_name.get(name, [])

    def has(self, name: str) -> bool:
        return name in self.by_sample_name

    def histograms(self, name: str) -> list[HistogramValue]:
        """The histogram family `name` (without suffix), one entry per label set other than `le`."""
        if name not in self._histograms:
            self._histograms[name] = assemble_histograms(name, self.samples(f"{name}_bucket"),
                                                         self.samples(f"{name}_sum"),
                                                         self.samples(f"{name}_count"))  # fmt: skip
        return self._histograms[name]


def group_of(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return labels.group() if isinstance(labels, Labels) else _without_le(labels)


def _without_le(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def assemble_histograms(
    name: str, buckets: Iterable[Sample], sums: Iterable[Sample], counts: Iterable[Sample]
) -> list[HistogramValue]:
    """Group `_bucket/_sum/_count` samples by their labels (without `le`), in any order, and validate."""
    grouped: dict[tuple[tuple[str, str], ...], list] = {}  # group -> [buckets, sum, count]
    for sample in buckets:
        labels = sample.labels
        if isinstance(labels, Labels):
            key, bound = labels.bucket(name)
        else:
            key, bound = _without_le(labels), _bound(labels, name)
        parts = grouped.get(key)
        if parts is None:
            parts = grouped[key] = [[], None, None]
        parts[0].append((bound, sample.value))
    for index, samples in ((1, sums), (2, counts)):
        for sample in samples:
            key = group_of(sample.labels)
            parts = grouped.get(key)
            if parts is None:
                parts = grouped[key] = [[], None, None]
            parts[index] = sample.value
    result = []
    for key, (bucket_list, total, count) in grouped.items():
        bucket_list.sort()  # engines write them in order: a linear pass
        if not bucket_list or bucket_list[-1][0] != math.inf:
            raise ParseError(f"histogram {name}{dict(key)} has no +Inf bucket")
        if count is None or total is None:
            raise ParseError(f"histogram {name}{dict(key)} lacks _count or _sum")
        values = [value for _, value in bucket_list]
        if any(map(operator.lt, values[1:], values)):
            raise ParseError(f"histogram {name}{dict(key)} has decreasing cumulative buckets")
        result.append(HistogramValue(dict(key), tuple(bucket_list), total, count))
    return result


def _bound(labels: Mapping[str, str], name: str) -> float:
    if "le" not in labels:
        raise ParseError(f"{name}_bucket sample without an le label")
    try:
        return float(labels["le"])
    except ValueError:
        raise ParseError(f"{name}_bucket has le={labels['le']!r}") from None
