"""A small strict parser for the Prometheus text exposition format as engines really serve it.

Why not prometheus_client.parser: it renames counters that lack `_total` on the wire (TGI's
`tgi_request_count` comes back as `tgi_request_count_total`), accepts a payload cut off at a line
boundary and histograms without a `+Inf` bucket, so a truncated scrape would pass as a good one.
This parser keeps wire names exactly, allows colons in names (`vllm:`, `sglang:`, `llamacpp:`),
keeps `le` on families that are not histograms as a plain label, ignores `_created` families only
where the caller asks, and rejects anything it does not understand with ParseError: HTML, JSON, a
last line without its newline, broken label syntax, duplicate series, histograms without `+Inf`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TYPES = {
    "counter",
    "gauge",
    "histogram",
    "summary",
    "untyped",
    "unknown",
    "info",
    "stateset",
    "gaugehistogram",
}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_VALUE = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[Ii]nf|NaN|nan)")
_TIMESTAMP = re.compile(r"-?\d+")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class ParseError(ValueError):
    """The payload is not valid Prometheus text; the message says where and why."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


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
    """Families in payload order, and every sample indexed by its exact wire name."""

    families: dict[str, Family]
    by_sample_name: dict[str, list[Sample]]

    def samples(self, name: str) -> list[Sample]:
        return self.by_sample_name.get(name, [])

    def has(self, name: str) -> bool:
        return name in self.by_sample_name

    def histograms(self, name: str) -> list[HistogramValue]:
        """The histogram family `name` (without suffix), one entry per label set other than `le`."""
        return assemble_histograms(name, self.samples(f"{name}_bucket"), self.samples(f"{name}_sum"),
                                   self.samples(f"{name}_count"))  # fmt: skip


def parse(text: str) -> Exposition:
    text = _unwrap(text)
    families: dict[str, Family] = {}
    by_sample_name: dict[str, list[Sample]] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            if stripped.startswith("#"):
                _parse_comment(stripped, families)
                continue
            sample = _parse_sample(stripped)
        except ParseError as exc:
            raise ParseError(f"line {number}: {exc}: {_shorten(line)!r}") from None
        key = (sample.name, tuple(sorted(sample.labels.items())))
        if key in seen:
            raise ParseError(f"line {number}: duplicate series {_shorten(line)!r}")
        seen.add(key)
        _family_for(sample.name, families).samples.append(sample)
        by_sample_name.setdefault(sample.name, []).append(sample)
    exposition = Exposition(families, by_sample_name)
    for family in families.values():
        if family.type == "histogram" and family.samples:
            exposition.histograms(family.name)  # validates: raises ParseError when inconsistent
    return exposition


def _unwrap(text: str) -> str:
    """Reject what is clearly not exposition text; undo the JSON-quoted payload of some llama.cpp builds."""
    body = text.lstrip()
    if not body:
        raise ParseError("empty payload")
    if body.startswith("<"):
        raise ParseError("payload is HTML/XML, not Prometheus text")
    if body.startswith('"'):
        # llama.cpp builds b7010-b7100 served the whole exposition as one JSON string (issue #17384).
        try:
            decoded = json.loads(body)
        except ValueError:
            raise ParseError("payload starts with a quote but is not a JSON string") from None
        if not isinstance(decoded, str):
            raise ParseError("payload is JSON, not Prometheus text")
        return _unwrap(decoded)
    if body.startswith(("{", "[")):
        raise ParseError("payload is JSON, not Prometheus text")
    if not text.endswith("\n"):
        raise ParseError("payload is truncated: the last line has no newline")
    return text


def _parse_comment(line: str, families: dict[str, Family]) -> None:
    parts = line[1:].strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return  # a plain comment
    keyword, name = parts[0], parts[1]
    if not _NAME.fullmatch(name):
        raise ParseError(f"bad metric name in {keyword} line")
    rest = parts[2] if len(parts) > 2 else ""
    if keyword == "HELP":
        families.setdefault(name, Family(name, "untyped")).help = rest
        return
    kind = rest.strip().lower()
    if kind not in TYPES:
        raise ParseError(f"unknown metric type {rest!r}")
    family = families.get(name)
    if family is not None and family.type != "untyped":
        raise ParseError(f"second TYPE line for {name}")
    if family is not None and family.samples:
        raise ParseError(f"TYPE line for {name} after its samples")
    families.setdefault(name, Family(name, kind)).type = "untyped" if kind == "unknown" else kind


def _family_for(sample_name: str, families: dict[str, Family]) -> Family:
    family = families.get(sample_name)
    if family is not None:
        return family
    for suffix in (*HISTOGRAM_SUFFIXES, "_total", "_created"):
        if sample_name.endswith(suffix):
            base = families.get(sample_name[: -len(suffix)])
            if base is not None and base.type in ("histogram", "summary", "counter", "gaugehistogram"):
                return base
    family = Family(sample_name, "untyped")
    families[sample_name] = family
    return family


def _parse_sample(line: str) -> Sample:
    match = _NAME.match(line)
    if not match:
        raise ParseError("expected a metric name")
    name, position = match.group(), match.end()
    labels: dict[str, str] = {}
    if position < len(line) and line[position] == "{":
        labels, position = _parse_labels(line, position + 1)
    rest = line[position:].split()
    if not rest or len(rest) > 2 or (position < len(line) and not line[position].isspace()):
        raise ParseError("expected `name{labels} value [timestamp]`")
    if not _VALUE.fullmatch(rest[0]):
        raise ParseError(f"bad value {rest[0]!r}")
    if len(rest) == 2 and not _TIMESTAMP.fullmatch(rest[1]):
        raise ParseError(f"bad timestamp {rest[1]!r}")
    return Sample(name, labels, float(rest[0]))


def _parse_labels(line: str, position: int) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    while True:
        while position < len(line) and line[position] in " \t":
            position += 1
        if position < len(line) and line[position] == "}":
            return labels, position + 1
        match = _LABEL_NAME.match(line, position)
        if not match:
            raise ParseError("bad label name")
        label = match.group()
        position = match.end()
        if line[position : position + 2] != '="':
            raise ParseError(f'expected =" after label {label}')
        value, position = _parse_label_value(line, position + 2)
        if label in labels:
            raise ParseError(f"label {label} given twice")
        labels[label] = value
        while position < len(line) and line[position] in " \t":
            position += 1
        if position < len(line) and line[position] == ",":
            position += 1
        elif position >= len(line) or line[position] != "}":
            raise ParseError("expected , or } after a label")


def _parse_label_value(line: str, position: int) -> tuple[str, int]:
    chars: list[str] = []
    while position < len(line):
        char = line[position]
        if char == '"':
            return "".join(chars), position + 1
        if char == "\\":
            escaped = line[position + 1 : position + 2]
            chars.append(_ESCAPES.get(escaped, "\\" + escaped))
            position += 2
            continue
        chars.append(char)
        position += 1
    raise ParseError("unterminated label value")


def assemble_histograms(
    name: str, buckets: Iterable[Sample], sums: Iterable[Sample], counts: Iterable[Sample]
) -> list[HistogramValue]:
    """Group `_bucket/_sum/_count` samples by their labels (without `le`), in any order, and validate."""
    grouped: dict[tuple[tuple[str, str], ...], dict] = {}

    def entry(labels: Mapping[str, str]) -> dict:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        return grouped.setdefault(key, {"buckets": [], "sum": None, "count": None})

    for sample in buckets:
        if "le" not in sample.labels:
            raise ParseError(f"{name}_bucket sample without an le label")
        try:
            bound = float(sample.labels["le"])
        except ValueError:
            raise ParseError(f"{name}_bucket has le={sample.labels['le']!r}") from None
        entry(sample.labels)["buckets"].append((bound, sample.value))
    for sample in sums:
        entry(sample.labels)["sum"] = sample.value
    for sample in counts:
        entry(sample.labels)["count"] = sample.value
    result = []
    for key, parts in grouped.items():
        bucket_list = sorted(parts["buckets"])
        if not bucket_list or bucket_list[-1][0] != math.inf:
            raise ParseError(f"histogram {name}{dict(key)} has no +Inf bucket")
        if parts["count"] is None or parts["sum"] is None:
            raise ParseError(f"histogram {name}{dict(key)} lacks _count or _sum")
        if any(later[1] < earlier[1] for earlier, later in itertools.pairwise(bucket_list)):
            raise ParseError(f"histogram {name}{dict(key)} has decreasing cumulative buckets")
        result.append(HistogramValue(dict(key), tuple(bucket_list), parts["sum"], parts["count"]))
    return result


def _shorten(line: str, limit: int = 120) -> str:
    return line if len(line) <= limit else line[:limit] + "..."
