"""A small strict parser for the Prometheus text exposition format as engines really serve it.

Why not prometheus_client.parser: it renames counters that lack `_total` on the wire (TGI's
`tgi_request_count` comes back as `tgi_request_count_total`), accepts a payload cut off at a line
boundary and histograms without a `+Inf` bucket, so a truncated scrape would pass as a good one.
This parser keeps wire names exactly, allows colons in names (`vllm:`, `sglang:`, `llamacpp:`),
keeps `le` on families that are not histograms as a plain label, ignores `_created` families only
where the caller asks, and rejects anything it does not understand with ParseError: HTML, JSON, a
last line without its newline, broken label syntax, duplicate series, histograms without `+Inf`.

It reads as the payload arrives (`ExpositionReader.feed`, one chunk at a time), so a payload is never held
whole, its series budget is enforced while it is read (TooManySeries past `max_series`), and a caller can
stop between chunks when its deadline passes. A series with a label value over MAX_LABEL_VALUE_CHARS (or
on a line over MAX_LINE_CHARS) is dropped and counted in `Exposition.dropped`, never kept.

An engine writes the same series in the same words on every scrape; only the values move. A `SeriesHeads`
kept per target remembers each series head (the line up to its value) of the last good payload with its
parsed name and labels, so a line seen before costs a dictionary lookup and a number (measured on vLLM's
dp-2 payload, 954 lines: 4.7 ms to read it the first time, see bench/RESULTS.md for the figure with heads).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from exporter.engines.schema import DropReason
from exporter.errors import ExporterError

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
# Grafana Mimir's default max_label_value_length: longer values are not what engines mean to send.
MAX_LABEL_VALUE_CHARS = 2048
MAX_LINE_CHARS = 64 * 1024
MAX_REMEMBERED_HEADS = 10_000  # per target: a vLLM dp-2 payload has ~800 series; past this, lines parse anew
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_VALUE = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[Ii]nf|NaN|nan)")
_TIMESTAMP = re.compile(r"-?\d+")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# The common shape of a sample line (labels without escapes), read with two regular expressions; any other
# line takes the character-by-character path below, which accepts the same language and names the error.
_PAIR = r'[ \t]*[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"[ \t]*'
_FAST_SAMPLE = re.compile(
    rf"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{((?:{_PAIR},)*(?:{_PAIR})?)\}})?[ \t]+([^ \t]+)(?:[ \t]+([^ \t]+))?"
)
_FAST_PAIRS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"')


class ParseError(ExporterError, ValueError):
    """The payload is not valid Prometheus text; the message says where and why."""


class TooManySeries(ParseError):
    """The payload has more series than the reader's budget (`max_series`)."""


class _LabelTooLong(ParseError):
    """A label value over MAX_LABEL_VALUE_CHARS: the series is dropped, the payload is not refused."""


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


_sample = tuple.__new__  # Sample(...) without the Python frame of NamedTuple's __new__ (a line's hot path)


# A series head as parsed: its name, its labels and its key for duplicate detection.
Head = tuple[str, Mapping[str, str], tuple[str, str]]
Comment = tuple[str, str, str]  # HELP or TYPE, the metric name, the help text or the type


class SeriesHeads:
    """The series heads of one target's last good payload (`head text -> Head`), for the next reader."""

    def __init__(self, limit: int = MAX_REMEMBERED_HEADS) -> None:
        self.limit = limit
        self.known: dict[str, Head] = {}
        self.comments: dict[str, Comment | None] = {}  # HELP and TYPE lines, parsed; None: a plain comment
        # Heads are learned once a payload of this target was good: one that never is (a hostile target,
        # refused on every scrape) costs no learning.
        self.good_payloads = 0


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


def parse(text: str, max_series: int | None = None) -> Exposition:
    """A whole payload at once (ExpositionReader for one that arrives in chunks)."""
    reader = ExpositionReader(max_series)
    reader.feed(text)
    return reader.close()


class ExpositionReader:
    """Parses exposition text chunk by chunk: `feed()` each decoded chunk, then `close()` for the result.

    Raises ParseError as soon as the payload is known to be bad (TooManySeries once it passes
    `max_series`); holds only the parsed samples and the start of the line whose newline has not come.
    """

    def __init__(self, max_series: int | None = None, heads: SeriesHeads | None = None) -> None:
        self.max_series = max_series
        self.series = 0
        self._heads = heads
        self._known: dict[str, Head] = heads.known if heads is not None else {}
        self._learned: dict[str, Head] = {}  # this payload's heads, kept for the next one once it is good
        self._comments_known = heads.comments if heads is not None else {}
        self._comments_learned: dict[str, Comment | None] = {}
        self._learn_limit = heads.limit if heads is not None and heads.good_payloads else 0
        self._families: dict[str, Family] = {}
        self._by_sample_name: dict[str, list[Sample]] = {}
        self._seen: set[tuple[str, object]] = set()  # (name, its labels as written or sorted) per series
        self._sinks: dict[str, tuple[list[Sample], list[Sample], bool]] = {}  # sample name -> _sink()
        self._dropped: Counter[DropReason] = Counter()
        self._started = False  # a non-blank character has been seen
        self._quoted: list[str] | None = None  # llama.cpp's JSON-quoted payload, decoded at the end
        self._pending = ""  # the start of a line whose newline has not arrived yet
        self._skipping: bool | None = None  # inside an over-long line: None no, else "is it a sample"
        self._line = 0

    def feed(self, chunk: str) -> None:
        if not self._started:
            head = (self._pending + chunk).lstrip()
            if not head:
                self._pending += chunk
                return
            self._started = True
            _refuse_non_text(head)
            if head.startswith('"'):
                # llama.cpp builds b7010-b7100 served the whole exposition as one JSON string (#17384).
                self._quoted = [self._pending]
                self._pending = ""
        if self._quoted is not None:
            self._quoted.append(chunk)
            return
        if self._skipping is not None:  # the rest of an over-long line is read past, never kept
            newline = chunk.find("\n")
            if newline < 0:
                return
            self._end_skipped_line()
            chunk = chunk[newline + 1 :]
        lines = (self._pending + chunk).split("\n")
        self._pending = lines.pop()
        known, learned, value_ok = self._known, self._learned, _VALUE.fullmatch
        for line in lines:
            self._line += 1
            if known:
                head, _, value = line.rpartition(" ")
                hit = known.get(head)
                if hit is not None and value_ok(value):  # a series of the last payload, in its words
                    if len(learned) < self._learn_limit:
                        learned[head] = hit
                    self._add(_sample(Sample, (hit[0], hit[1], float(value))), hit[2], line)
                    continue
            if line.startswith("#"):
                self._comment(line)
            else:
                self._parse_line(line)
        if len(self._pending) > MAX_LINE_CHARS:
            self._skipping = not self._pending.lstrip().startswith("#")
            self._pending = ""

    def close(self) -> Exposition:
        if self._quoted is not None:
            try:
                decoded = json.loads("".join(self._quoted))
            except ValueError:
                raise ParseError("payload starts with a quote but is not a JSON string") from None
            if not isinstance(decoded, str):
                raise ParseError("payload is JSON, not Prometheus text")
            return parse(decoded, self.max_series)
        if not self._started:
            raise ParseError("empty payload")
        if self._pending or self._skipping is not None:
            raise ParseError("payload is truncated: the last line has no newline")
        if not all(self._by_sample_name.values()):  # every sample of a name was dropped
            self._by_sample_name = {name: found for name, found in self._by_sample_name.items() if found}
        exposition = Exposition(self._families, self._by_sample_name, self._dropped)
        for family in self._families.values():
            if family.type == "histogram" and family.samples:
                self._drop_bad_counts(family)
                exposition.histograms(family.name)  # validates: raises ParseError when inconsistent
        if self._heads is not None:
            if self._heads.good_payloads:
                self._heads.known, self._heads.comments = self._learned, self._comments_learned
            self._heads.good_payloads += 1
        return exposition

    def _drop_bad_counts(self, family: Family) -> None:
        """Histograms whose bucket counts or count are not finite and non-negative (or whose sum is not
        finite) are left out whole, each counted once: nothing else may pass as a count."""
        bad: dict[tuple[tuple[str, str], ...], DropReason] = {}
        sum_name = family.name + "_sum"
        for sample in family.samples:
            value = sample.value
            if 0 <= value < math.inf:  # every count, and most sums (NaN fails both comparisons)
                continue
            reason = _not_finite(value) if sample.name == sum_name else _not_a_count(value)
            if reason:
                bad.setdefault(_group(sample.labels), reason)
        if not bad:
            return
        self._dropped.update(bad.values())
        family.samples = [s for s in family.samples if _group(s.labels) not in bad]
        for suffix in HISTOGRAM_SUFFIXES:
            name = family.name + suffix
            kept = [s for s in self._by_sample_name.get(name, []) if _group(s.labels) not in bad]
            if kept:
                self._by_sample_name[name] = kept
            else:
                self._by_sample_name.pop(name, None)

    def _end_skipped_line(self) -> None:
        self._line += 1
        if self._skipping:
            self._dropped["label_too_long"] += 1
        self._skipping = None

    def _parse_line(self, line: str) -> None:
        """A line not seen in the last payload (or with an unusual value): parsed in full."""
        try:
            fast = _fast_sample(line)
            if fast is not None:
                sample, key, value = fast
                learned = self._learned
                if value is not None and len(learned) < self._learn_limit:
                    # `<head> <value>` (no timestamp, one space before the value): kept for the next payload
                    cut = len(line) - len(value) - 1
                    if line[cut] == " ":
                        learned[line[:cut]] = (sample.name, sample.labels, key)
            else:
                stripped = line.strip()
                if not stripped:
                    return
                if stripped.startswith("#"):
                    self._comment(stripped)
                    return
                sample = _parse_sample(stripped)
                key = (sample.name, tuple(sorted(sample.labels.items())))  # type: ignore[assignment]
        except _LabelTooLong:
            self._dropped["label_too_long"] += 1
            return
        except ParseError as exc:
            raise ParseError(f"line {self._line}: {exc}: {_shorten(line)!r}") from None
        self._add(sample, key, line)

    def _comment(self, line: str) -> None:
        """HELP and TYPE lines (plain comments are ignored); engines repeat them on every scrape."""
        try:
            if line in self._comments_known:
                parsed = self._comments_known[line]
            else:
                parsed = _parse_comment(line.strip())
            if len(self._comments_learned) < self._learn_limit:
                self._comments_learned[line] = parsed
            if parsed is not None:
                _apply_comment(*parsed, self._families)
        except ParseError as exc:
            raise ParseError(f"line {self._line}: {exc}: {_shorten(line)!r}") from None

    def _add(self, sample: Sample, key: object, line: str) -> None:
        if key in self._seen:
            raise ParseError(f"line {self._line}: duplicate series {_shorten(line)!r}")
        self._seen.add(key)
        self.series += 1
        if self.max_series is not None and self.series > self.max_series:
            raise TooManySeries(f"more than {self.max_series} series (line {self._line})")
        sink = self._sinks.get(sample.name) or self._sink(sample.name)
        if sink[2] and not 0 <= sample.value < math.inf:  # NaN fails both comparisons
            self._dropped[_not_a_count(sample.value) or "not_finite"] += 1
            return
        sink[0].append(sample)
        sink[1].append(sample)

    def _sink(self, name: str) -> tuple[list[Sample], list[Sample], bool]:
        """Where samples of this name go: their family's list and by_sample_name's, and whether each must
        be a count (a counter's own samples)."""
        family = _family_for(name, self._families)
        counts = family.type == "counter" and name in (family.name, family.name + "_total")
        sink = self._sinks[name] = (family.samples, self._by_sample_name.setdefault(name, []), counts)
        return sink


def _not_a_count(value: float) -> DropReason | None:
    return _not_finite(value) or ("negative" if value < 0 else None)


def _not_finite(value: float) -> DropReason | None:
    return None if math.isfinite(value) else "not_finite"


def _group(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return labels.group() if isinstance(labels, Labels) else _without_le(labels)


def _without_le(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def _refuse_non_text(head: str) -> None:
    """Reject what is clearly not exposition text, from its first non-blank character."""
    if head.startswith("<"):
        raise ParseError("payload is HTML/XML, not Prometheus text")
    if head.startswith(("{", "[")):
        raise ParseError("payload is JSON, not Prometheus text")


def _parse_comment(line: str) -> Comment | None:
    """(HELP or TYPE, metric name, help text or type) of a comment line; None for a plain comment."""
    parts = line[1:].strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
        return None
    keyword, name = parts[0], parts[1]
    if not _NAME.fullmatch(name):
        raise ParseError(f"bad metric name in {keyword} line")
    rest = parts[2] if len(parts) > 2 else ""
    if keyword == "HELP":
        return keyword, name, rest
    kind = rest.strip().lower()
    if kind not in TYPES:
        raise ParseError(f"unknown metric type {rest!r}")
    return keyword, name, kind


def _apply_comment(keyword: str, name: str, rest: str, families: dict[str, Family]) -> None:
    if keyword == "HELP":
        families.setdefault(name, Family(name, "untyped")).help = rest
        return
    kind = rest
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


def _fast_sample(line: str) -> tuple[Sample, tuple[str, str], str | None] | None:
    """The common sample line, its series key (its labels as written: engines write one series's labels
    in one order) and its value text when no timestamp follows, or None for anything else (comments,
    escapes, errors: the slow path)."""
    fast = _FAST_SAMPLE.fullmatch(line)
    if fast is None:
        return None
    name, pairs, value, timestamp = fast.groups()
    labels = Labels(_FAST_PAIRS.findall(pairs)) if pairs else Labels()
    if (
        (pairs and len(labels) != pairs.count('="'))
        or not _VALUE.fullmatch(value)
        or (timestamp is not None and not _TIMESTAMP.fullmatch(timestamp))
    ):
        return None
    if len(pairs or "") > MAX_LABEL_VALUE_CHARS and max(map(len, labels.values())) > MAX_LABEL_VALUE_CHARS:
        raise _LabelTooLong()
    return Sample(name, labels, float(value)), (name, pairs or ""), value if timestamp is None else None


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
        if len(value) > MAX_LABEL_VALUE_CHARS:
            raise _LabelTooLong()
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
            key = _group(sample.labels)
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


def _shorten(line: str, limit: int = 120) -> str:
    return line if len(line) <= limit else line[:limit] + "..."
