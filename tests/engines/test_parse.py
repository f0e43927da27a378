"""The strict exposition parser on real and constructed engine payloads, and on every kind of bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.engines.parse import (
    MAX_LABEL_VALUE_CHARS,
    MAX_LINE_CHARS,
    Exposition,
    ExpositionReader,
    ParseError,
    SeriesHeads,
    TooManySeries,
    parse,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"
EXPOSITIONS = sorted(p for p in FIXTURES.rglob("*.txt"))
# Quoted with elided lines (vLLM docs; the reference's 0.33 shape sample): some histograms lack +Inf/_sum,
# exactly like a payload cut short, so the strict parser must refuse them.
TRIMMED = {"vllm/docs-v1-model-name-only.txt", "vllm/constructed-0.33-single-engine.txt"}


def fixture_id(path: Path) -> str:
    return str(path.relative_to(FIXTURES))


@pytest.mark.parametrize("path", EXPOSITIONS, ids=fixture_id)
def test_every_fixture_parses_or_is_a_known_trimmed_quote(path: Path) -> None:
    text = path.read_text()
    if fixture_id(path) in TRIMMED:
        with pytest.raises(ParseError, match=r"no \+Inf bucket"):
            parse(text)
        return
    exposition = parse(text)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert sum(len(s) for s in exposition.by_sample_name.values()) == len(lines)


def comparable(value: float) -> float | str:
    """NaN (SGLang's idle fwd_occupancy) is not equal to itself; prometheus_client returns ints."""
    return "NaN" if math.isnan(value) else float(value)


@pytest.mark.parametrize("path", [p for p in EXPOSITIONS if fixture_id(p) not in TRIMMED], ids=fixture_id)
def test_agrees_with_prometheus_client_on_every_value(path: Path) -> None:
    """Same samples and values as prometheus_client's parser, modulo its renaming of counters."""
    ours = {
        (s.name, tuple(sorted(s.labels.items())), comparable(s.value))
        for samples in parse(path.read_text()).by_sample_name.values()
        for s in samples
    }
    theirs = set()
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            theirs.add((s.name, tuple(sorted(s.labels.items())), comparable(s.value)))
    renamed = {(n, labels, v) for n, labels, v in theirs if (n, labels, v) not in ours}
    # The only disagreement allowed: prometheus_client appends _total to counters that lack it on the wire.
    assert all(n.endswith("_total") and (n[: -len("_total")], labels, v) in ours for n, labels, v in renamed)
    assert len(theirs) == len(ours)


def test_prometheus_client_parser_is_not_strict_enough() -> None:
    """Why parse.py exists: these are accepted (or renamed) by prometheus_client, rejected here."""
    tgi = "# TYPE tgi_request_count counter\ntgi_request_count 5\n"
    renamed = [s.name for f in text_string_to_metric_families(tgi) for s in f.samples]
    assert renamed == ["tgi_request_count_total"]
    assert parse(tgi).samples("tgi_request_count")[0].value == 5
    cut = '# TYPE h histogram\nh_bucket{le="1"} 2\nh_count 2\nh_sum 1\n'
    list(text_string_to_metric_families(cut))  # no complaint
    with pytest.raises(ParseError, match=r"\+Inf"):
        parse(cut)


def test_colons_counters_without_total_and_le_on_a_gauge() -> None:
    text = (
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 12\n'
        "# TYPE llamacpp:n_tokens_max counter\n"
        "llamacpp:n_tokens_max 49\n"
        "# TYPE sglang:per_stage gauge\n"
        'sglang:per_stage{le="0.5",stage="prefill"} 3\n'
    )
    exposition = parse(text)
    assert exposition.families["vllm:prompt_tokens_total"].type == "counter"
    assert exposition.samples("llamacpp:n_tokens_max")[0].value == 49
    assert exposition.families["sglang:per_stage"].type == "gauge"
    assert exposition.samples("sglang:per_stage")[0].labels == {"le": "0.5", "stage": "prefill"}


def test_histogram_samples_in_any_order_and_special_values() -> None:
    text = (
        "# TYPE x histogram\n"
        'x_sum{a="1"} 2.5\n'
        'x_bucket{a="1",le="+Inf"} 3\n'
        'x_count{a="1"} 3\n'
        'x_bucket{a="1",le="0.5"} 1\n'
        "y NaN\n"
        "z -Inf 1700000000000\n"
    )
    exposition = parse(text)
    [histogram] = exposition.histograms("x")
    assert histogram.buckets == ((0.5, 1.0), (math.inf, 3.0))
    assert histogram.sum == 2.5 and histogram.count == 3 and histogram.labels == {"a": "1"}
    assert math.isnan(exposition.samples("y")[0].value)
    assert exposition.samples("z")[0].value == -math.inf
    assert exposition.families["x"].type == "histogram"


def test_label_escapes() -> None:
    exposition = parse('m{path="C:\\\\x",quote="say \\"hi\\"",nl="a\\nb",} 1\n')
    assert exposition.samples("m")[0].labels == {"path": "C:\\x", "quote": 'say "hi"', "nl": "a\nb"}


def test_json_quoted_exposition_of_some_llama_cpp_builds_is_unwrapped() -> None:
    inner = "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n"
    assert parse(json.dumps(inner)).samples("llamacpp:requests_processing")[0].value == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("", "empty"),
        ("<!DOCTYPE html><html><body>Bad Gateway</body></html>\n", "HTML"),
        ('{"error": "not found"}', "JSON"),
        ('"just a quoted string without newline', "JSON string"),
        ("# TYPE a counter\na_total 1", "truncated"),
        ('# TYPE a counter\na_total{x="1', "truncated"),
        ('a_total{x="1\n', "unterminated label value"),
        ("hello world this is not metrics\n", "expected"),
        ("a 1 2 3\n", "expected"),
        ('a{1x="y"} 1\n', "bad label name"),
        ('a{x="1" y="2"} 1\n', "expected , or }"),
        ('a{x="1",x="2"} 1\n', "given twice"),
        ("a 1\na 2\n", "duplicate series"),
        ("a 0x1F\n", "bad value"),
        ("a 1_000\n", "bad value"),
        ("# TYPE a sparkline\n", "unknown metric type"),
        ("# TYPE a gauge\n# TYPE a counter\n", "second TYPE"),
        ('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n', "decreasing"),
        ('# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', "lacks _count or _sum"),
        ('# TYPE h histogram\nh_bucket{le="abc"} 1\n', "le="),
        ("\x00\x01\x02garbage\n", "expected a metric name"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(payload)


def test_error_names_the_line() -> None:
    with pytest.raises(ParseError, match=r"line 3: bad value"):
        parse("a 1\nb 2\nc three\n")


# --- Reading as the payload arrives, budgets and hostile values --------------------------------------------


@pytest.mark.parametrize("path", EXPOSITIONS[:6], ids=fixture_id)
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_payload_fed_in_pieces_reads_as_the_whole(path: Path, size: int) -> None:
    text = path.read_text()
    if fixture_id(path) in TRIMMED:
        return
    reader = ExpositionReader()
    for start in range(0, len(text), size):
        reader.feed(text[start : start + size])
    pieces, whole = reader.close(), parse(text)
    assert pieces.by_sample_name == whole.by_sample_name
    assert [(f.name, f.type, f.help) for f in pieces.families.values()] == [
        (f.name, f.type, f.help) for f in whole.families.values()
    ]


def test_the_series_budget_stops_the_reading_at_once() -> None:
    reader = ExpositionReader(max_series=3)
    reader.feed("# TYPE a gauge\na 1\nb 2\nc 3\n")
    with pytest.raises(TooManySeries, match="more than 3 series"):
        reader.feed("d 4\n" + "e 5\n" * 1000)
    assert reader.series == 4  # nothing after the first series over the budget was parsed


def test_long_label_values_and_long_lines_drop_their_series_only() -> None:
    long_value = "x" * (MAX_LABEL_VALUE_CHARS + 1)
    reader = ExpositionReader()
    reader.feed(f'# TYPE a gauge\na{{model="{long_value}"}} 1\na{{model="ok"}} 2\n')
    reader.feed('a{path="C:\\\\' + long_value + '"} 3\n')  # the escaped (slow) path
    reader.feed('a{model="' + "y" * MAX_LINE_CHARS)  # a line longer than any that is kept...
    reader.feed("y" * MAX_LINE_CHARS)
    reader.feed('"} 4\nb 5\n# HELP c ' + "z" * (2 * MAX_LINE_CHARS) + "\nc 6\n")  # ...and a long comment
    exposition = reader.close()
    assert [s.labels for s in exposition.samples("a")] == [{"model": "ok"}]
    assert exposition.samples("b")[0].value == 5 and exposition.samples("c")[0].value == 6
    assert exposition.dropped == {"label_too_long": 3}


def test_counters_that_are_not_finite_and_non_negative_are_dropped_gauges_kept() -> None:
    exposition = parse(
        "# TYPE good counter\ngood_total 5\n"
        "# TYPE nan counter\nnan_total NaN\n"
        "# TYPE inf counter\ninf_total +Inf\n"
        "# TYPE neg counter\nneg_total -3\n"
        "# TYPE g gauge\ng NaN\nh -Inf\n"
    )
    assert exposition.samples("good_total")[0].value == 5
    assert (
        not exposition.has("nan_total")
        and not exposition.has("inf_total")
        and not exposition.has("neg_total")
    )
    assert math.isnan(exposition.samples("g")[0].value) and exposition.samples("h")[0].value == -math.inf
    assert exposition.dropped == {"not_finite": 2, "negative": 1}


def test_a_histogram_with_a_bad_count_is_dropped_whole() -> None:
    exposition = parse(
        "# TYPE h histogram\n"
        'h_bucket{m="bad",le="1"} NaN\nh_bucket{m="bad",le="+Inf"} 2\nh_count{m="bad"} 2\nh_sum{m="bad"} 1\n'
        'h_bucket{m="neg",le="+Inf"} -2\nh_count{m="neg"} -2\nh_sum{m="neg"} 1\n'
        'h_bucket{m="sum",le="+Inf"} 2\nh_count{m="sum"} 2\nh_sum{m="sum"} +Inf\n'
        'h_bucket{m="ok",le="+Inf"} 2\nh_count{m="ok"} 2\nh_sum{m="ok"} 1\n'
    )
    assert [h.labels for h in exposition.histograms("h")] == [{"m": "ok"}]
    assert exposition.dropped == {"not_finite": 2, "negative": 1}


# --- Series heads remembered from one payload of a target to the next ---------------------------------------


def read(text: str, heads: SeriesHeads, max_series: int | None = None) -> Exposition:
    reader = ExpositionReader(max_series, heads)
    for start in range(0, len(text), 4096):
        reader.feed(text[start : start + 4096])
    return reader.close()


def test_remembered_heads_read_each_payload_as_a_fresh_parse_would() -> None:
    text = (FIXTURES / "vllm" / "v0.33.0-dp2-load.txt").read_text()
    heads = SeriesHeads()
    for step in range(4):  # learned from the second good payload on, used from the third
        moved = "".join(
            line if line.startswith("#") or not line.strip() else f"{line.rpartition(' ')[0]} {step}.5\n"
            for line in text.splitlines(keepends=True)
        )
        ours, fresh = read(moved, heads), parse(moved)
        assert ours.by_sample_name == fresh.by_sample_name
        assert [(f.name, f.type, f.help) for f in ours.families.values()] == [
            (f.name, f.type, f.help) for f in fresh.families.values()
        ]
        assert ours.histograms("vllm:e2e_request_latency_seconds") == fresh.histograms(
            "vllm:e2e_request_latency_seconds"
        )
    assert 0 < len(heads.known) <= sum(map(len, fresh.by_sample_name.values()))


def test_a_remembered_head_never_takes_a_timestamp_for_a_value() -> None:
    heads = SeriesHeads()
    for _ in range(3):
        read("a 1\nb 2 1700000000000\n", heads)
    assert "a" in heads.known and not any(head.startswith("b") for head in heads.known)
    exposition = read("a 1 1700000000000\nb 2 1700000000001\n", heads)
    assert [s.value for s in exposition.samples("a")] == [1]
    assert [s.value for s in exposition.samples("b")] == [2]


def test_remembered_heads_keep_every_check() -> None:
    heads = SeriesHeads()
    for _ in range(3):
        read('# TYPE c counter\nc_total{x="1"} 1\ng 2\n', heads)
    with pytest.raises(ParseError, match="line 3: bad value"):
        read('# TYPE c counter\nc_total{x="1"} 1\ng 1_000\n', heads)
    with pytest.raises(ParseError, match="duplicate series"):
        read('# TYPE c counter\nc_total{x="1"} 1\nc_total{x="1"} 2\n', heads)
    with pytest.raises(TooManySeries):
        read('# TYPE c counter\nc_total{x="1"} 1\ng 2\n', heads, max_series=1)
    exposition = read('# TYPE c counter\nc_total{x="1"} -1\ng NaN\n', heads)
    assert not exposition.has("c_total") and exposition.dropped == {"negative": 1}


@pytest.mark.parametrize(
    "value",
    ["7", "-0.5", "+3", ".5", "5.", "1e3", "1E-3", "Inf", "+Inf", "-Inf", "NaN", "nan", "\u0661\u0662",
     "1.2.3", "1e", "+-1", "e3", ".", "-", "1_000", "inf", "infinity", "0x10", "1\t", ""],
)  # fmt: skip
def test_a_remembered_head_takes_the_values_a_fresh_parse_takes(value: str) -> None:
    """A known series' value is checked by float() alone when it is digits, '.', 'e' and signs, by the
    value pattern otherwise: both must accept and refuse exactly what a fresh parse does."""
    heads = SeriesHeads()
    for _ in range(3):
        read("# TYPE g gauge\ng 2\nh 3\n", heads)
    text = f"# TYPE g gauge\ng {value}\nh 3\n"
    try:
        fresh = parse(text)
    except ParseError as exc:
        with pytest.raises(ParseError, match=re.escape(str(exc))):
            read(text, heads)
        return
    ours = read(text, heads)
    assert repr(ours.samples("g")) == repr(fresh.samples("g"))  # NaN == NaN through repr
    assert ours.dropped == fresh.dropped


def test_heads_are_learned_only_from_good_payloads_and_bounded() -> None:
    heads = SeriesHeads(limit=2)
    read("a 1\nb 2\nc 3\n", heads)
    assert heads.known == {}  # the first good payload: nothing learned yet
    read("a 1\nb 2\nc 3\n", heads)
    assert sorted(heads.known) == ["a", "b"]
    with pytest.raises(ParseError):
        read("x 1\ny 2\nz", heads)  # a truncated payload changes nothing
    assert sorted(heads.known) == ["a", "b"]
    read("x 1\ny 2\nz 3\n", heads)
    assert sorted(heads.known) == ["x", "y"]  # a good payload replaces the heads
