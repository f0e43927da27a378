"""Reading a run's files for the pages, and comparing runs, without a browser: budgets on hostile JSONL,
windows and samples, the gate grammar and a seeded bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.html import data as run_data
from loadgen.html.compare import Gate, GateError, compare
from loadgen.html.data import ReportDataError, load_report, read_run


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
