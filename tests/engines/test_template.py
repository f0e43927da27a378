"""A target's payload read through the template of its last good one (engines/template.py) is what a full
parse of it gives, and every payload that differs, however little, is parsed in full as before."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from exporter.engines import parse as parse_module
from exporter.engines.parse import Exposition, ExpositionReader, ParseError, SeriesHeads, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"


def _good(path: Path) -> bool:
    try:
        parse(path.read_text())
    except ParseError:  # fixtures of what engines get wrong
        return False
    return not path.read_text().lstrip().startswith('"')  # llama.cpp's JSON-quoted one has no lines


PAYLOADS = sorted(filter(_good, FIXTURES.glob("*/*.txt")))  # every engine's good payloads, real and made


def moved(text: str, step: int) -> str:
    """The payload with every sample value changed as a live engine's change (counts stay counts)."""
    out = []
    for line in text.splitlines(keepends=True):
        head, _, value = line.rstrip("\n").rpartition(" ")
        number = _number(value)
        timestamped = " " in head.rpartition("}")[2]
        if line.startswith("#") or not head or timestamped or number is None or not math.isfinite(number):
            out.append(line)
        else:
            out.append(f"{head} {number * (1 + step / 7)!r}\n")
    return "".join(out)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def read(text: str, heads: SeriesHeads, chunk: int = 4096, max_series: int | None = None) -> Exposition:
    reader = ExpositionReader(max_series, heads)
    for start in range(0, len(text), chunk):
        reader.feed(text[start : start + chunk])
    exposition = reader.close()
    read.templated = reader._template is not None  # type: ignore[attr-defined]
    return exposition


def same(ours: Exposition, fresh: Exposition) -> None:
    assert repr(ours.by_sample_name) == repr(fresh.by_sample_name)  # repr: NaN equals NaN
    assert [(f.name, f.type, f.help, repr(f.samples)) for f in ours.families.values()] == [
        (f.name, f.type, f.help, repr(f.samples)) for f in fresh.families.values()
    ]
    assert ours.dropped == fresh.dropped
    for name, family in fresh.families.items():
        if family.type == "histogram" and family.samples:
            assert repr(ours.histograms(name)) == repr(fresh.histograms(name)), name


def learned(text: str) -> SeriesHeads:
    """Heads and template of a target that served `text` (and values moved) three times."""
    heads = SeriesHeads()
    for step in range(3):
        read(moved(text, step), heads)
    return heads


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_payload_of_the_same_shape_reads_as_a_full_parse(path: Path) -> None:
    text = path.read_text()
    heads = learned(text)
    for step in (3, 4):
        payload = moved(text, step)
        same(read(payload, heads, chunk=1000 + step), parse(payload))
    if heads.template is not None:
        assert read.templated  # type: ignore[attr-defined]


def test_the_vllm_payload_is_read_by_its_template() -> None:
    heads = learned((FIXTURES / "vllm" / "v0.33.0-dp2-load.txt").read_text())
    assert heads.template is not None and heads.template.lines == 954
    read(moved((FIXTURES / "vllm" / "v0.33.0-dp2-load.txt").read_text(), 5), heads)
    assert read.templated  # type: ignore[attr-defined]


BASE = (
    "# HELP c_total Requests.\n# TYPE c_total counter\n"
    'c_total{m="a"} 1\nc_total{m="b"} 2\n'
    "# TYPE h histogram\n"
    'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1.5\nh_count 2\n'
    "# TYPE g gauge\ng 3\n"
)


@pytest.mark.parametrize(
    "changed",
    [
        BASE.replace('c_total{m="b"} 2', 'c_total{m="b"} 1_000'),  # a bad value
        BASE.replace('c_total{m="b"} 2', 'c_total{m="b"} 1.2.3'),
        BASE.replace('c_total{m="b"} 2', 'c_total{m="b"} '),
        BASE.replace('c_total{m="b"} 2', 'c_total{m="b"} -2'),  # a count that is none: dropped
        BASE.replace('c_total{m="b"} 2', 'c_total{m="b"} NaN'),
        BASE.replace("h_count 2", "h_count +Inf"),
        BASE.replace("h_sum 1.5", "h_sum NaN"),
        BASE.replace("h_sum 1.5", "h_sum -1.5"),  # a negative sum is a sum
        BASE.replace('h_bucket{le="+Inf"} 2', 'h_bucket{le="+Inf"} 0'),  # decreasing buckets
        BASE.replace("g 3", "g NaN"),  # a gauge may be anything
        BASE.replace("g 3", "g -Inf"),
        BASE.replace("g 3", "g 3 1700000000000"),  # a timestamp
        BASE.replace("g 3", "g  3"),
        BASE.replace("# HELP c_total Requests.", "# HELP c_total Requests, renamed."),
        BASE.replace('c_total{m="b"} 2\n', 'c_total{m="b"} 2\nc_total{m="c"} 2\n'),  # a new series
        BASE.replace('c_total{m="b"} 2\n', ""),  # one gone
        BASE.replace('c_total{m="b"} 2\n', 'c_total{m="a"} 2\n'),  # a duplicate
        BASE + "g2 1\n",  # more lines than the template
        BASE.replace("g 3\n", ""),  # fewer
        BASE.replace("g 3\n", "g 3"),  # truncated
        BASE.replace("g 3\n", "g 3\n\n"),  # a blank line
        BASE.replace("# TYPE g gauge\n", "# TYPE g counter\n"),
    ],
)
def test_a_payload_that_differs_is_parsed_in_full(changed: str) -> None:
    heads = learned(BASE)
    assert heads.template is not None
    for chunk in (1, 7, 4096):
        heads_now = learned(BASE)
        try:
            fresh = parse(changed)
        except ParseError as exc:
            with pytest.raises(ParseError, match=re.escape(str(exc))):
                read(changed, heads_now, chunk=chunk)
            assert heads_now.template is not None  # a bad payload changes nothing
            continue
        same(read(changed, heads_now, chunk=chunk), fresh)
        same(read(changed, heads_now, chunk=chunk), fresh)  # by a template made from it, where one can be


def test_no_template_from_a_payload_with_lines_it_cannot_match() -> None:
    for text in (
        BASE.replace("g 3", "g 3 1700000000000"),  # a timestamp: its head is never learned
        BASE.replace("g 3", 'g{x="a\\"b"} 3'),  # escapes: parsed in full, never learned
        BASE.replace('c_total{m="b"} 2', 'c_total{m="b"} -2'),  # something dropped
        BASE + "\n",  # a blank line
    ):
        assert learned(text).template is None, text


def test_a_template_beyond_the_series_budget_is_not_used() -> None:
    heads = learned(BASE)
    with pytest.raises(parse_module.TooManySeries):
        read(BASE, heads, max_series=3)


def test_no_template_from_a_payload_longer_than_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_module, "MAX_TEMPLATE_CHARS", len(BASE) - 10)
    assert learned(BASE).template is None
    monkeypatch.setattr(parse_module, "MAX_TEMPLATE_CHARS", 10 * len(BASE))
    assert learned(BASE).template is not None
