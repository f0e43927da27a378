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
parsed name and labels, so a line seen before costs a dictionary lookup and a number, and the template of
that payload (template.py), so a payload of the same lines in the same order is read by its values alone
(measured on vLLM's dp-2 payload, 954 lines: 4.7 ms to read it the first time; bench/RESULTS.md has the
figures with heads and with the template). The parsed payload's types live in payload.py.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping

from exporter.engines.payload import (
    HISTOGRAM_SUFFIXES,
    NUMBER_CHARS,
    VALUE,
    Exposition,
    Family,
    HistogramValue,
    Labels,
    ParseError,
    Sample,
    assemble_histograms,
    group_of,
    new_sample,
)
from exporter.engines.schema import DropReason
from exporter.engines.template import Template, make_template

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
MAX_TEMPLATE_CHARS = 4 * 1024 * 1024  # a longer payload gets no template (its lines are kept to make one)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TIMESTAMP = re.compile(r"-?\d+")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
# The common shape of a sample line (labels without escapes), read with two regular expressions; any other
# line takes the character-by-character path below, which accepts the same language and names the error.
_PAIR = r'[ \t]*[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"[ \t]*'
_FAST_SAMPLE = re.compile(
    rf"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{((?:{_PAIR},)*(?:{_PAIR})?)\}})?[ \t]+([^ \t]+)(?:[ \t]+([^ \t]+))?"
)
_FAST_PAIRS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"')


class TooManySeries(ParseError):
    """The payload has more series than the reader's budget (`max_series`)."""


class _LabelTooLong(ParseError):
    """A label value over MAX_LABEL_VALUE_CHARS: the series is dropped, the payload is not refused."""


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
        self.template: Template | None = None  # the last good payload's shape (template.py), if regular


def parse(text: str, max_series: int | None = None) -> Exposition:
    """A whole payload at once (ExpositionReader for one that arrives in chunks)."""
    reader = ExpositionReader(max_series)
    reader.feed(text)
    return reader.close()


class ExpositionReader:
    """Parses exposition text chunk by chunk: `feed()` each decoded chunk, then `close()` for the result.

    Raises ParseError as soon as the payload is known to be bad (TooManySeries once it passes
    `max_series`); holds the parsed samples and the start of the line whose newline has not come, and
    with `heads`: while the payload matches the target's template, its lines so far (no more than the
    last good payload's), else up to MAX_TEMPLATE_CHARS of its lines to make the next template from.
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
        template = heads.template if heads is not None else None
        if template is not None and max_series is not None and len(template.names) > max_series:
            template = None
        self._template = template  # while the payload matches it: its lines and values so far
        self._matched: list[str] = []
        self._values: list[str] = []
        self._kept: list[str] | None = [] if self._learn_limit else None  # lines for the next template
        self._kept_chars = 0

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
        if self._template is not None:
            values = self._template.match(lines, len(self._matched))
            if values is None:
                lines = self._leave_template(lines)
            else:
                self._matched += lines
                self._values += values
                self.series = len(self._values)
                lines = []
        self._parse_lines(lines)
        if len(self._pending) > MAX_LINE_CHARS:
            if self._template is not None:
                self._parse_lines(self._leave_template([]))
            self._skipping = not self._pending.lstrip().startswith("#")
            self._pending = ""

    def _leave_template(self, lines: list[str]) -> list[str]:
        """The payload does not match the template: its lines so far, then `lines`, to be parsed anew."""
        matched, self._matched, self._values, self._template = self._matched, [], [], None
        self.series = 0
        return matched + lines

    def _parse_lines(self, lines: list[str]) -> None:
        if self._kept is not None and lines:
            self._kept_chars += sum(map(len, lines))
            if self._kept_chars > MAX_TEMPLATE_CHARS:
                self._kept = None
            else:
                self._kept += lines
        if self._known:
            self._feed_known(lines)
        else:
            for line in lines:
                self._line += 1
                self._parse_any(line)

    def _feed_known(self, lines: list[str]) -> None:
        """Lines of a target whose last payload's series heads are known: a line seen before costs a lookup,
        its value's check and a number. What `_add` does is written out here: this loop is most of what an
        engine target costs the exporter (bench/RESULTS.md)."""
        known, learned, seen, sinks = self._known, self._learned, self._seen, self._sinks
        value_ok, learn, numeric = VALUE.fullmatch, self._learn_limit, NUMBER_CHARS
        limit = self.max_series if self.max_series is not None else math.inf
        number, series, inf = self._line, self.series, math.inf
        for line in lines:
            number += 1
            head, _, value = line.rpartition(" ")
            hit = known.get(head)
            # float() alone checks a value of digits, '.', 'e' and signs; the regex any other (Inf, NaN)
            plain = hit is not None and (value_ok(value) if value.strip(numeric) else value)
            if plain:
                try:
                    number_value = float(value)
                except ValueError:  # '1.2.3', '1e', '+-1': VALUE refuses them too
                    plain = False
            if not plain:  # not a series of the last payload in its words: parsed in full
                self._line, self.series = number, series
                self._parse_any(line)
                series = self.series
                continue
            before = len(seen)
            seen.add(hit[2])
            if len(seen) == before:
                self._line = number
                raise ParseError(f"line {number}: duplicate series {_shorten(line)!r}")
            series += 1
            if series > limit:
                raise TooManySeries(f"more than {self.max_series} series (line {number})")
            if len(learned) < learn:
                learned[head] = hit
            name = hit[0]
            sink = sinks.get(name) or self._sink(name)
            if sink[2] and not 0 <= number_value < inf:  # NaN fails both comparisons
                self._dropped[_not_a_count(number_value) or "not_finite"] += 1
                continue
            sample = new_sample(Sample, (name, hit[1], number_value))
            sink[0].append(sample)
            sink[1].append(sample)
        self._line, self.series = number, series

    def _parse_any(self, line: str) -> None:
        if line.startswith("#"):
            self._comment(line)
        else:
            self._parse_line(line)

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
        if self._template is not None:
            exposition = self._from_template()
            if exposition is not None:
                return exposition
            self._parse_lines(self._leave_template([]))
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
                kept = self._kept
                self._heads.template = make_template(kept, self._learned, exposition) if kept else None
            self._heads.good_payloads += 1
        return exposition

    def _from_template(self) -> Exposition | None:
        """The payload read by the template, when every line matched and every value is good."""
        template, heads = self._template, self._heads
        assert template is not None and heads is not None
        if self._pending or self._skipping is not None or len(self._matched) != template.lines:
            return None
        exposition = template.build(self._values)
        if exposition is not None:
            heads.good_payloads += 1
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
                bad.setdefault(group_of(sample.labels), reason)
        if not bad:
            return
        self._dropped.update(bad.values())
        family.samples = [s for s in family.samples if group_of(s.labels) not in bad]
        for suffix in HISTOGRAM_SUFFIXES:
            name = family.name + suffix
            kept = [s for s in self._by_sample_name.get(name, []) if group_of(s.labels) not in bad]
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
    family = families.get(name)
    if family is None:
        family = families[name] = Family(name, "untyped")
    elif keyword == "TYPE" and family.type != "untyped":
        raise ParseError(f"second TYPE line for {name}")
    elif keyword == "TYPE" and family.samples:
        raise ParseError(f"TYPE line for {name} after its samples")
    if keyword == "HELP":
        family.help = rest
    else:
        family.type = "untyped" if rest == "unknown" else rest


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
        or not VALUE.fullmatch(value)
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
    if not VALUE.fullmatch(rest[0]):
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


def _shorten(line: str, limit: int = 120) -> str:
    return line if len(line) <= limit else line[:limit] + "..."


__all__ = [  # the parsed payload's types live in payload.py; importers take them from here too
    "Exposition",
    "ExpositionReader",
    "Family",
    "HistogramValue",
    "Labels",
    "ParseError",
    "Sample",
    "SeriesHeads",
    "TooManySeries",
    "assemble_histograms",
    "parse",
]
