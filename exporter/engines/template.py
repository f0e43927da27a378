"""The shape of a target's last good payload, so that the next payload of that shape is read by its values.

An engine writes the same lines in the same order on every scrape; only the sample values move. A
`Template` is made from a good payload whose every line is a comment or a `head value` sample line with a
head the reader had learned (parse.SeriesHeads), with nothing dropped. The next payload is held against it
chunk by chunk as it arrives (`match`): each line's text before its last space must be the template's, in
order, and each comment line must be the template's whole. Such a payload is its sample values alone, and
`build` makes from them the Exposition a full parse would make (the same families, samples in the same
order, histograms; tests/engines/test_template.py compares both), provided every value is a valid sample
value and no count is negative or not finite. Anything else and the reader parses the payload line by line
as before, the lines it had matched first (parse.ExpositionReader).

Why: the comparisons and conversions here run over whole chunks in C (`map`, `compress`, list equality),
where a line-by-line read costs a few Python operations per line; bench/RESULTS.md has the figures.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, islice, repeat

from exporter.engines.payload import (
    NUMBER_CHARS,
    VALUE,
    Exposition,
    Family,
    HistogramValue,
    Sample,
    group_of,
    new_sample,
)

_NOT_A_NUMBER_CHAR = str.maketrans("", "", NUMBER_CHARS)
_head, _tail = operator.itemgetter(0), operator.itemgetter(2)
_at_least_zero, _below_infinity = (0.0).__le__, math.inf.__gt__  # NaN fails both


@dataclass(frozen=True)
class _Histogram:
    """One labelled histogram of a histogram family: where its buckets, sum and count are in the payload."""

    key: tuple[tuple[str, str], ...]  # its labels without `le`, sorted (parse's grouping key)
    bounds: tuple[float, ...]
    buckets: tuple[int, ...]  # sample positions, in the order of `bounds`
    sum: int
    count: int


@dataclass(frozen=True)
class Template:
    heads: list[str]  # per line: the text before its last space
    is_sample: list[bool]  # per line
    comments: list[str]  # the comment lines, whole, in order
    comments_before: list[int]  # per line index: how many comment lines come before it
    names: list[str]  # per sample line: its sample name and labels
    labels: list[Mapping[str, str]]
    families: list[tuple[str, str, str, list[int]]]  # name, type, help, sample positions, as parsed
    by_sample_name: list[tuple[str, list[int]]]
    counts: list[int]  # positions of samples that must be counts (0 <= value < inf)
    sums: list[int]  # histogram sums: finite
    histograms: list[tuple[str, list[_Histogram]]]  # by histogram family, as parse assembled them

    @property
    def lines(self) -> int:
        return len(self.heads)

    def match(self, lines: list[str], start: int) -> list[str] | None:
        """The sample values of `lines` when they are the template's lines from line `start` on, else None."""
        end = start + len(lines)
        if end > len(self.heads):
            return None
        parts = list(map(str.rpartition, lines, repeat(" ")))
        if list(map(_head, parts)) != self.heads[start:end]:
            return None
        samples = self.is_sample[start:end]
        if (
            list(compress(lines, map(operator.not_, samples)))
            != self.comments[self.comments_before[start] : self.comments_before[end]]
        ):
            return None
        return list(compress(map(_tail, parts), samples))

    def build(self, values: Sequence[str]) -> Exposition | None:
        """The payload whose sample values these are, as parse would read it; None when a value is no valid
        sample value or a count is negative or not finite (parse then says which, or drops and counts)."""
        if len(values) != len(self.names):
            return None
        odd = "".join(values).translate(_NOT_A_NUMBER_CHAR)  # Inf, NaN, or what float() must not take
        if odd and not all(VALUE.fullmatch(v) for v in values if v.strip(NUMBER_CHARS)):
            return None
        try:
            floats = list(map(float, values))
        except ValueError:  # '1.2.3', '+-1', '': not sample values either
            return None
        value_at = floats.__getitem__
        counts = list(map(value_at, self.counts))
        if not all(map(_at_least_zero, counts)) or not all(map(_below_infinity, counts)):
            return None
        if not all(map(math.isfinite, map(value_at, self.sums))):
            return None
        samples = list(map(new_sample, repeat(Sample), zip(self.names, self.labels, floats, strict=True)))
        sample_at = samples.__getitem__
        families = {name: Family(name, kind, text, list(map(sample_at, at)))
                    for name, kind, text, at in self.families}  # fmt: skip
        by_name = {name: list(map(sample_at, at)) for name, at in self.by_sample_name}
        exposition = Exposition(families, by_name, Counter())
        for name, histograms in self.histograms:
            built = [_histogram(h, value_at) for h in histograms]
            if any(value is None for value in built):
                return None  # decreasing buckets: parse says where
            exposition._histograms[name] = built  # type: ignore[assignment]
        return exposition


def _histogram(histogram: _Histogram, value_at) -> HistogramValue | None:
    counts = list(map(value_at, histogram.buckets))
    if not all(map(operator.le, counts, islice(counts, 1, None))):
        return None
    return HistogramValue(
        dict(histogram.key),
        tuple(zip(histogram.bounds, counts, strict=True)),
        value_at(histogram.sum),
        value_at(histogram.count),
    )


def make_template(lines: Sequence[str], heads, exposition: Exposition) -> Template | None:
    """The template of a good payload (its lines, its heads as the reader learned them `head -> (name,
    labels, key)`, and what parse made of it), or None when it is not made only of comment lines and
    learned `head value` sample lines, or parse dropped anything."""
    if exposition.dropped:
        return None
    template_heads, is_sample, comments, comments_before = [], [], [], []
    names, labels = [], []
    for line in lines:
        comments_before.append(len(comments))
        head, _, value = line.rpartition(" ")
        template_heads.append(head)
        sample = not line.startswith("#")
        is_sample.append(sample)
        if not sample:
            comments.append(line)
            continue
        known = heads.get(head)
        if known is None or not value or (value.strip(NUMBER_CHARS) and not VALUE.fullmatch(value)):
            return None
        names.append(known[0])
        labels.append(known[1])
    comments_before.append(len(comments))
    positions = _positions(names, labels, exposition)
    if positions is None:
        return None
    families, by_sample_name, counts, sums = positions
    histograms = _histograms(names, labels, exposition)
    if histograms is None:
        return None
    return Template(template_heads, is_sample, comments, comments_before, names, labels, families,
                    by_sample_name, counts, sums, histograms)  # fmt: skip


def _positions(names: list[str], labels: list[Mapping[str, str]], exposition: Exposition):
    """Where each family's and each sample name's samples are among the sample lines, checked against
    what parse made; and which must be counts (a counter's own samples, a histogram's but its sum) or
    finite (a histogram's sum)."""
    by_name: dict[str, list[int]] = {}
    for position, name in enumerate(names):
        by_name.setdefault(name, []).append(position)
    if list(by_name) != list(exposition.by_sample_name):
        return None
    families, counts, sums = [], [], []
    taken = 0
    for family in exposition.families.values():
        at = [p for name in dict.fromkeys(s.name for s in family.samples) for p in by_name[name]]
        at.sort()
        if [(names[p], labels[p]) for p in at] != [(s.name, s.labels) for s in family.samples]:
            return None
        families.append((family.name, family.type, family.help, at))
        taken += len(at)
        for p in at:
            if family.type == "counter" and names[p] in (family.name, family.name + "_total"):
                counts.append(p)
            elif family.type == "histogram":
                (sums if names[p] == family.name + "_sum" else counts).append(p)
    if taken != len(names):
        return None
    return families, list(by_name.items()), counts, sums


def _histograms(names: list[str], labels: list[Mapping[str, str]], exposition: Exposition):
    """Each histogram family's histograms as parse assembled them, by the positions of their samples."""
    found = []
    for family in exposition.families.values():
        if family.type != "histogram" or not family.samples:
            continue
        buckets: dict[tuple[tuple[tuple[str, str], ...], float], int] = {}
        ends: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for position, name in enumerate(names):
            if name == family.name + "_bucket":
                key = group_of(labels[position])
                buckets[(key, float(labels[position]["le"]))] = position
            elif name in (family.name + "_sum", family.name + "_count"):
                ends[(name, group_of(labels[position]))] = position
        histograms = []
        for value in exposition.histograms(family.name):
            key = tuple(sorted(value.labels.items()))
            bounds = tuple(bound for bound, _ in value.buckets)
            try:
                histograms.append(_Histogram(key, bounds, tuple(buckets[(key, b)] for b in bounds),
                                             ends[(family.name + "_sum", key)],
                                             ends[(family.name + "_count", key)]))  # fmt: skip
            except KeyError:
                return None
        found.append((family.name, histograms))
    return found


__all__ = ["Template", "make_template"]
