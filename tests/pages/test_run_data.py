"""Reading a run's files for the pages, and comparing runs, without a browser: budgets on hostile JSONL,
windows and samples, the gate grammar and a seeded bootstrap."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from loadgen.html import data as run_data
from loadgen.html.compare import Gate, GateError, compare
from loadgen.html.data import ReportDataError, load_report, read_run
from loadgen.html.figures import cdf_figure


def report(phases: list[tuple[str, float]]) -> dict:
    return {
        "run_id": "r",
        "phases": [
            {
                "phase": name,
                "duration_s": duration,
                "requests": {"sent": 3, "finished": 3, "succeeded": 3, "failed": 0},
                "throughput": {"requests_per_s": 1.0, "output_tokens_per_s": 10.0},
                "latency_s": {"ttft": {"count": 3, "mean": 0.2, "median": 0.2, "p95": 0.3}},
            }
            for name, duration in phases
        ],
    }


def record(phase: str, sent_s: float, e2e: float, ttft: float, outcome: str = "success") -> dict:
    ns = 10**9
    return {
        "phase": phase,
        "outcome": outcome,
        "sent_ns": int(1000 * ns + sent_s * ns),
        "end_ns": int(1000 * ns + (sent_s + e2e) * ns),
        "ttft_s": ttft,
        "tpot_s": 0.01,
        "e2e_s": e2e,
        "itl_s": [0.01, 0.02],
        "output_tokens": 10,
    }


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return path


def test_records_fold_into_windows_and_samples(tmp_path: Path) -> None:
    # completion order: the request sent first ends last
    lines = [
        record("a", 1.0, 0.5, 0.1),
        record("a", 2.0, 0.5, 0.2),
        record("a", 0.0, 5.0, 0.3),
        record("a", 3.0, 0.1, 0.1, outcome="timeout"),
    ]
    data = read_run(report([("a", 200.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    assert data.records == 4 and data.window_s == 10
    assert data.offset_s == -1.0  # the axis starts at the earliest send, not the first line's
    assert data.sample("a", "ttft") == [0.1, 0.2, 0.3] and data.sample_count("a", "itl") == 6
    # windows count from the first line's send; the earlier send lands in the window before
    assert sorted(data.windows) == [-1, 0]
    windows = data.windows.values()
    assert sum(w.sent for w in windows) == 4 and sum(w.succeeded for w in windows) == 3
    assert data.windows[0].errors == {"timeout": 1}
    assert sum(w.busy_s for w in windows) == pytest.approx(0.5 + 0.5 + 5.0 + 0.1)
    assert sum(w.output_tokens for w in windows) == 30


def test_hostile_jsonl_is_counted_not_believed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_data, "MAX_LINE_BYTES", 1000)
    lines = [
        b"not json",
        b"[1, 2]",
        {"phase": "a"},
        b"x" * 5000,
        record("a", 0, 0.1, 0.05),
        {**record("a", 0, 0.1, 0.05), "ttft_s": "NaN"},
        {**record("a", 0, 0.1, 0.05), "sent_ns": -5},
    ]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    assert data.records == 2 and data.skipped_lines == 5
    assert data.sample("a", "ttft") == [0.05]  # the "NaN" string is no number


def test_samples_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_data, "CDF_SAMPLE", 50)
    lines = [record("a", i * 0.01, 0.1, 0.05 + i * 1e-4) for i in range(500)]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    assert len(data.sample("a", "ttft")) == 50 and data.sample_count("a", "ttft") == 500


def test_window_widens_for_long_runs_and_narrows_for_short_ones() -> None:
    assert run_data._window_width(report([("a", 600.0)])) == 10
    assert run_data._window_width(report([("a", 30.0)])) == 2  # at least 20 windows
    assert run_data._window_width(report([("a", 86400.0)])) == 60  # at most 2,000 windows


def test_reports_that_are_not(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]")
    with pytest.raises(ReportDataError, match="not a load-generator report"):
        load_report(tmp_path / "a.json")
    with pytest.raises(ReportDataError, match="cannot read"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # was a RecursionError traceback
    with pytest.raises(ReportDataError, match="is not a JSON report"):
        load_report(tmp_path / "deep.json")


def test_gate_grammar() -> None:
    assert Gate.parse("ttft_p95 > +10%").mode == "relative"
    gate = Gate.parse("e2e_p99 >= +200ms")
    assert (gate.mode, gate.threshold) == ("absolute", pytest.approx(0.2))
    assert Gate.parse("error_ratio > 0.01").mode == "value"
    assert Gate.parse("requests_per_s < -5%").threshold == pytest.approx(-0.05)
    for bad, message in [
        ("ttft_p95 >> 1", "FIGURE OP THRESHOLD"),
        ("latency_p95 > 1", "no figure"),
        ("requests_per_s > +5ms", "not a time"),
    ]:
        with pytest.raises(GateError, match=message):
            Gate.parse(bad)


def test_comparison_is_seeded_and_gates_fire(tmp_path: Path) -> None:
    slow = [record("a", i * 0.1, 0.5, 0.4 + (i % 7) * 0.01) for i in range(60)]
    fast = [record("a", i * 0.1, 0.5, 0.2 + (i % 7) * 0.01) for i in range(60)]
    runs = []
    for name, lines in (("fast", fast), ("slow", slow)):
        doc = report([("a", 10.0)])
        values = sorted(r["ttft_s"] for r in lines)
        doc["phases"][0]["latency_s"]["ttft"].update(p95=values[56], mean=sum(values) / 60)
        runs.append((name, read_run(doc, name, write_jsonl(tmp_path / f"{name}.jsonl", lines))))
    first, again = compare(runs, resamples=200, seed=3), compare(runs, resamples=200, seed=3)
    row = first.row(0, "ttft_p95")
    assert row == again.row(0, "ttft_p95")
    low, high = row.intervals[1]
    assert low <= row.changes[1] <= high and low > 0.5  # about +90 %, clearly above
    assert Gate.parse("ttft_p95 > +10%").check(first)
    assert not Gate.parse("ttft_p95 > +500%").check(first)
    assert not Gate.parse("requests_per_s < -5%").check(first)


def test_a_time_far_outside_the_run_is_counted_not_drawn(tmp_path: Path) -> None:
    """One record ending 31 years later once made ~10^8 windows (minutes, gigabytes): now it is left out."""
    far = {**record("a", 1.0, 0.5, 0.1), "end_ns": 10**18}
    early = {**record("a", 1.0, 0.5, 0.1), "sent_ns": 10**16, "end_ns": 10**16 + 1}
    flags = {**record("a", 1.0, 0.5, 0.1), "sent_ns": True, "end_ns": True}
    late_token = {**record("a", 2.0, 0.5, 0.1), "ttft_s": 1e300}
    lines = [record("a", 0.0, 0.5, 0.1), far, early, flags, late_token]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    assert (data.records, data.outside_run, data.skipped_lines) == (2, 2, 1)
    assert max(data.windows) - min(data.windows) < run_data.MAX_WINDOWS
    assert sum(len(w.ttft.values) for w in data.windows.values()) == 1  # 1e300 s is no first-token time


def test_a_long_request_is_in_flight_in_every_window_it_spans(tmp_path: Path) -> None:
    # 10 s windows from the first send; one request 95.5 s long, one 10 s long from 32.5 s
    lines = [record("a", 0.0, 95.5, 0.1), record("a", 32.5, 10.0, 0.1)]
    data = read_run(report([("a", 200.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    busy = {i: w.busy_s for i, w in data.windows.items()}
    assert sorted(busy) == list(range(10)) and busy[9] == pytest.approx(5.5)
    assert all(busy[i] == pytest.approx(10.0) for i in (0, 1, 2, 5, 6, 7, 8))
    assert busy[3] == pytest.approx(17.5) and busy[4] == pytest.approx(12.5)
    assert sum(busy.values()) == pytest.approx(95.5 + 10.0)


def test_warm_up_records_are_left_out_and_counted(tmp_path: Path) -> None:
    lines = [record("warmup", 0.0, 0.5, 0.1)] * 3 + [record("a", 1.0, 0.5, 0.2)]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    assert data.records == 1 and data.other_phases == {"warmup": 3}
    assert sum(w.sent for w in data.windows.values()) == 1 and data.offset_s == 0.0


def test_error_classes_are_bounded(tmp_path: Path) -> None:
    lines = [record("a", i * 0.01, 0.1, 0.05, outcome=f"weird-{i}") for i in range(100)]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    classes = {o for w in data.windows.values() for o in w.errors}
    assert len(classes) == run_data.MAX_OUTCOMES + 1 and "other" in classes
    assert sum(sum(w.errors.values()) for w in data.windows.values()) == 100


def test_a_gate_that_cannot_be_judged_fails(tmp_path: Path) -> None:
    """A candidate whose every request failed has no TTFT: `ttft_p95 > +10%` once passed it (exit 0)."""
    good = report([("a", 10.0)])
    broken = report([("a", 10.0)])
    broken["phases"][0]["latency_s"] = {}
    broken["phases"][0]["requests"].update(succeeded=0, failed=3)
    runs = [("good", read_run(good, "good")), ("broken", read_run(broken, "broken"))]
    comparison = compare(runs, resamples=0)
    (failure,) = Gate.parse("ttft_p95 > +10%").check(comparison)
    assert "cannot be judged for broken against good" in failure and "no ttft_p95 in broken" in failure
    assert Gate.parse("errors > +10%").check(comparison)  # 0 -> 3 errors: +inf, not "no change"
    assert Gate.parse("error_ratio > 0.5").check(comparison)
    assert not Gate.parse("requests_per_s < -5%").check(comparison)  # both 1.0 req/s in this stub
    same = compare([("a", read_run(good, "a")), ("b", read_run(good, "b"))], resamples=0)
    assert not Gate.parse("errors > +10%").check(same)  # 0 -> 0 is no change


def test_the_page_says_why_it_got_slow_overload_and_warm_up(tmp_path: Path) -> None:
    """The diagnosis, an open loop's overload and the warm-up were in the JSON but not on the page."""
    pytest.importorskip("plotly")
    from loadgen.html.report import report_page

    doc = report([("rate=40", 10.0)])
    doc["diagnosis"] = "Why it got slow at 40 requests/s: the engine's queue."
    doc["phases"][0]["overload"] = {"since_s": 3.0, "achieved_rate": 11.5, "offered_rate": 40.0}
    doc["warmup"] = {"sent": 10, "succeeded": 9, "failed": 1, "duration_s": 0.9}
    lines = [record("warmup", 0.0, 0.5, 0.1), record("rate=40", 1.0, 0.5, 0.2)]
    page, _ = report_page(read_run(doc, "r.json", write_jsonl(tmp_path / "r.jsonl", lines)))
    text = page.render()
    assert "Why it got slow at 40 requests/s" in text
    assert "rate=40: overloaded from 3 s on, completing 11.50 of 40.00 requests/s offered (29%)" in text
    assert "Warm-up: 10 requests (9 succeeded) in 900 ms" in text
    assert "are not drawn either: warmup 1." in text
    assert "Output tokens/s per stream" not in text  # a row only where the report has the figure


def test_legends_sit_below_the_axis_title_and_empty_figures_say_so(tmp_path: Path) -> None:
    """A legend of three error classes ran into "seconds since the first request" on one line; a run
    with no success drew empty TTFT and TPOT frames."""
    from loadgen.html.figures import time_figures

    lines = [
        record("a", i * 0.5, 0.2, 0.1, outcome=o) for i, o in enumerate(["http_5xx", "timeout", "connect"])
    ]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    figures = {title: (what, figure) for title, what, figure in time_figures(data)}
    errors = figures["Errors by class"][1]
    assert len(errors["data"]) == 3 and errors["layout"]["xaxis"]["title"]["text"]
    assert errors["layout"]["legend"]["yref"] == "container" and errors["layout"]["legend"]["y"] == 0
    for title in ("TTFT percentiles", "TPOT percentiles"):
        assert figures[title] == ("No values: no request of the run has this figure.", None)


def test_prometheus_window_never_reaches_past_now() -> None:
    """Queried right after a run, the window's last 30 s were in the future, where Prometheus repeats its
    last sample: a finished run's in-flight line ran on at its last value."""
    from loadgen.html.report import run_window

    doc = report([("a", 10.0)])
    doc["phases"][0].update(started_unix_s=1000.0, ended_unix_s=1010.0)
    assert run_window(read_run(doc, "r"), now=1012.0) == (970.0, 1012.0)
    assert run_window(read_run(doc, "r"), now=5000.0) == (970.0, 1040.0)
    with pytest.raises(ReportDataError, match="no start time"):
        run_window(read_run(report([("a", 10.0)]), "r"), now=5000.0)


HTML = ["--output-html", "{tmp}/r.html"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prometheus", "http://127.0.0.1:9"], "give --output-html FILE too"),
        ([*HTML, "--prometheus", "http://127.0.0.1:9"], "cannot reach Prometheus"),
        ([*HTML, "--prometheus", "http://h:99999"], "not a usable URL"),
        ([*HTML, "--prometheus", "http://h:9", "--scrape-interval", "0s"], "above 0"),
    ],
)
def test_run_checks_its_prometheus_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    from loadgen.cli import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code = main(["run", "--url", "http://127.0.0.1:9", "--requests", "1", "--metrics-address", "none", *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_run_without_plotly_says_so_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image leaves the html extra out: --output-html there is a one-line error, not a traceback."""
    from loadgen.cli import main

    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly... raises ImportError
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    html = str(tmp_path / "r.html")
    code = main(["run", "--url", "http://127.0.0.1:9", "--requests", "1", "--metrics-address", "none",
                 "--output-html", html])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "llmobs-loadgen: HTML pages need the plotly package" in err, err
    assert "Traceback" not in err and "pip install 'llmobs[html]'" in err
    assert not (tmp_path / "r.html").exists()


def spec_record(phase: str, sent_s: float, gaps: list[float], event_tokens: list[int] | None) -> dict:
    """A request whose events carried several tokens (speculative decoding): `itl_s[i]` is seconds per
    token of the gap before event i + 1, which carried `event_tokens[i + 1]` tokens."""
    return {**record(phase, sent_s, 0.5, 0.1), "itl_s": gaps, "event_tokens": event_tokens}


def test_itl_is_weighed_by_the_tokens_each_value_stands_for(tmp_path: Path) -> None:
    """The JSON report counts ITL per token; the page's CDF and compare's intervals must too. Each request:
    a 9-token event 1 ms per token apart, then two one-token events 100 ms apart: 11 token gaps, 9 of
    them 1 ms (median 1 ms), though two of the three values are 100 ms (an unweighted median of 100 ms)."""
    spec = [spec_record("a", i * 0.1, [0.001, 0.1, 0.1], [1, 9, 1, 1]) for i in range(60)]
    plain = [spec_record("a", i * 0.1, [0.01, 0.01, 0.01], None) for i in range(60)]
    data = read_run(report([("a", 10.0)]), "spec", write_jsonl(tmp_path / "spec.jsonl", spec))
    values, weights = data.weighted("a", "itl")
    assert len(values) == 180 and sum(weights or []) == 60 * 11
    figure, _ = cdf_figure([("", data)], "itl")
    trace = figure["data"][0]
    # at 1 ms, 9 of each request's 11 tokens (82 %), not 1 of its 3 values
    at_1ms = max(y for x, y in zip(trace["x"], trace["y"], strict=True) if x == trace["x"][0])
    assert trace["x"][0] == pytest.approx(1.0) and at_1ms == pytest.approx(9 / 11, abs=1e-3)
    runs = []
    for name, lines, median in (("plain", plain, 0.01), ("spec", spec, 0.001)):
        doc = report([("a", 10.0)])
        doc["phases"][0]["latency_s"]["itl"] = {"count": 660, "median": median}
        runs.append((name, read_run(doc, name, write_jsonl(tmp_path / f"{name}.jsonl", lines))))
    row = compare(runs, resamples=100, seed=1).row(0, "itl_median")
    low, high = row.intervals[1]
    assert row.changes[1] == pytest.approx(-0.9) and low <= -0.89 and high <= -0.89  # unweighted: +900 %


def test_malformed_event_tokens_weigh_one_each(tmp_path: Path) -> None:
    lines = [
        spec_record("a", 0, [0.01, 0.02], [1, 2]),  # one count short
        spec_record("a", 1, [0.01, 0.02], [1, "2", 3]),
        spec_record("a", 2, [0.01, 0.02], [1, 0, 3]),
        spec_record("a", 3, [0.01, 0.02], [1, True, 3]),
    ]
    data = read_run(report([("a", 10.0)]), "r.json", write_jsonl(tmp_path / "r.jsonl", lines))
    assert data.weighted("a", "itl") == ([0.01] * 4 + [0.02] * 4, None)


def test_slo_figures_are_titled_and_scaled_in_their_units() -> None:
    """'SLO ttft<=0.3' read as a bare number, and stream_tps (tokens/s) was drawn in seconds."""
    from loadgen.html.figures import sweep_figures

    doc = report([("concurrency=1", 10.0), ("concurrency=4", 10.0)])
    for phase, values in zip(doc["phases"], ((0.2, 40.0), (0.5, 8.0)), strict=True):
        phase["slo"] = {
            "percentile": 95.0,
            "objectives": ["ttft<=0.3", "stream_tps>=10"],
            "values": {"ttft<=0.3": values[0], "stream_tps>=10": values[1]},
        }
    doc["sweep"] = {"capacity": 1.0, "first_failing": 4.0, "unit": "concurrent users"}
    titles = {title: figure for title, _, figure in sweep_figures(doc)}
    assert set(titles) == {"Throughput against load", "SLO ttft <= 300 ms", "SLO stream_tps >= 10 tok/s"}
    assert titles["SLO stream_tps >= 10 tok/s"]["layout"]["yaxis"]["ticksuffix"] == " tok/s"
    assert titles["SLO ttft <= 300 ms"]["layout"]["yaxis"]["ticksuffix"] == " ms"
