"""Plotly figures of a run: latency CDFs per phase, time series per window, a sweep against its levels.

Each returns a plotly figure dict (or None when there is nothing to draw, so the page says so in words
instead of drawing an empty frame). Looks, palette and units come from the dashboards' snapshot
(grafana.snapshot), so a report and a snapshot read alike.
"""

from __future__ import annotations

import math
import re
from itertools import accumulate

from grafana.snapshot.figures import PALETTE, base_layout
from grafana.snapshot.units import format_value, scale_for
from loadgen.html.data import RunData

__all__ = ["cdf_figure", "level_of", "percentile", "sweep_figures", "time_figures", "x_title"]

_LEVEL = re.compile(r"(?:concurrency|rate)=([0-9]+(?:\.[0-9]+)?)")
CDF_POINTS = 800


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest rank, as the JSON report's percentiles."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def level_of(phase: dict) -> float | None:
    """A phase's load level: its `level` field, else the `concurrency=N` / `rate=R` in its name."""
    if isinstance(phase.get("level"), (int, float)):
        return float(phase["level"])
    match = _LEVEL.search(str(phase.get("phase", "")))
    return float(match.group(1)) if match else None


def x_title(layout: dict, text: str) -> None:
    """An x-axis title with the legend below it, not beside it on the same line (where a legend of a few
    entries ran into the title and neither could be read)."""
    layout["xaxis"]["title"] = {"text": text, "font": {"size": 10}, "standoff": 4}
    if layout.get("showlegend", True) and layout["legend"].get("orientation") == "h":
        layout["legend"].update(yref="container", y=0, yanchor="bottom")
        layout["margin"]["b"] = 64


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _cdf_points(values: list[float], weights: list[int] | None = None) -> tuple[list[float], list[float]]:
    """At most CDF_POINTS (value, fraction) points of sorted `values`, every point of the last 1 % kept
    (the tail); value i counts `weights[i]` times when given (the tokens an ITL value stands for)."""
    n = len(values)
    if n <= CDF_POINTS:
        ranks = range(n)
    else:
        tail = max(0, n - max(1, n // 100))
        body = {round(i * (tail - 1) / (CDF_POINTS // 2)) for i in range(CDF_POINTS // 2 + 1)}
        ranks = sorted(body | set(range(tail, n, max(1, (n - tail) // (CDF_POINTS // 2)))) | {n - 1})
    if weights is None:
        return [values[r] for r in ranks], [(r + 1) / n for r in ranks]
    below = list(accumulate(weights))
    return [values[r] for r in ranks], [below[r] / below[-1] for r in ranks]


def cdf_figure(runs: list[tuple[str, RunData]], metric: str, height: int = 320) -> tuple[dict | None, str]:
    """CDF of one latency per phase (and per run), overlaid; from the JSONL's samples, else from the
    report's percentiles (marked as such). Returns the figure and a note on its source."""
    traces, notes, biggest = [], set(), 0.0
    for run_name, data in runs:
        for phase in data.report.get("phases", []):
            name = phase["phase"] if len(runs) == 1 else f"{run_name}: {phase['phase']}"
            values, weights = data.weighted(phase["phase"], metric)
            if values:
                xs, ys = _cdf_points(values, weights)
                mode = "lines"
                if data.sample_count(phase["phase"], metric) > len(values):
                    notes.add(f"a uniform sample of {len(values):,} values per phase")
            else:
                xs, ys = _summary_points(phase.get("latency_s", {}).get(metric) or {})
                mode = "lines+markers"
                if xs:
                    notes.add("phases without per-request records: from the report's percentiles only")
            if xs:
                biggest = max(biggest, max(xs))
                traces.append((name, xs, ys, mode))
    if not traces:
        return None, ""
    scale = scale_for("s", biggest)
    data_out = [
        {
            "type": "scatter",
            "mode": mode,
            "name": name,
            "x": [_round(x * scale.factor) for x in xs],
            "y": [_round(y) for y in ys],
            "line": {"width": 1.6, "color": _color(i), "shape": "hv" if mode == "lines" else "linear"},
            "hovertemplate": f"%{{x:.4~g}}{scale.suffix}: %{{y:.2%}} at or below<extra>{name}</extra>",
        }
        for i, (name, xs, ys, mode) in enumerate(traces)
    ]
    layout = base_layout(height, time_axis=False, series=len(data_out))
    layout["xaxis"].update(ticksuffix=scale.suffix)
    x_title(layout, metric.upper())
    layout["yaxis"].update(tickformat=".0%", range=[0, 1.02])
    return {"data": data_out, "layout": layout}, "; ".join(sorted(notes))


def _summary_points(summary: dict) -> tuple[list[float], list[float]]:
    keys = (("min", 0.0), ("median", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    points = [(summary.get(k), q) for k, q in keys]
    points = [(float(v), q) for v, q in points if isinstance(v, (int, float)) and math.isfinite(v)]
    return [v for v, _ in points], [q for _, q in points]


# ---------------------------------------------------------------------------------------------- time series


def _phase_bands(data: RunData, layout: dict) -> None:
    shapes, notes = [], []
    for i, phase in enumerate(data.phases):
        span = data.phase_span.get(phase)
        if span is None:
            continue
        start, end = (t - data.offset_s for t in span)
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": start,
                "x1": end,
                "y0": 0,
                "y1": 1,
                "fillcolor": "#f0f3f7" if i % 2 == 0 else "#ffffff",
                "line": {"width": 0},
                "layer": "below",
            }
        )
        notes.append(
            {
                "x": start,
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "text": phase,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"size": 9, "color": "#59636e"},
            }
        )
    layout["shapes"] = shapes
    layout["annotations"] = notes
    layout["margin"]["t"] = 18


def _series(name: str, xs: list[float], ys: list[float | None], i: int, suffix: str) -> dict:
    return {
        "type": "scatter",
        "mode": "lines+markers" if len(xs) < 4 else "lines",
        "name": name,
        "x": xs,
        "y": [None if y is None else _round(y) for y in ys],
        "line": {"width": 1.6, "color": _color(i)},
        "hovertemplate": f"%{{y:.4~g}}{suffix}<extra>{name}</extra>",
    }


def time_figures(data: RunData, height: int = 300) -> list[tuple[str, str, dict | None]]:
    """(title, what it shows, figure) for each time series of the run, per window."""
    if not data.windows:
        return []
    width = data.window_s
    indices = list(range(min(data.windows), max(data.windows) + 1))
    xs = [_round(i * width - data.offset_s) for i in indices]
    windows = [data.windows.get(i) for i in indices]

    covered = [data.covered_s(i) for i in indices]

    def per_s(get) -> list[float | None]:
        """Per second of the window the run covers (a partial last window is not a drop)."""
        return [
            (get(w) if w else 0) / c if c >= 0.2 * width else None
            for w, c in zip(windows, covered, strict=True)
        ]

    def pct(metric: str, p: float) -> list[float | None]:
        out = []
        for w in windows:
            values = sorted(getattr(w, metric).values) if w else []
            out.append(percentile(values, p))
        return out

    figures = []

    def figure(title: str, what: str, series: list[tuple[str, list]], unit: str) -> None:
        if all(y is None for _, ys in series for y in ys):
            figures.append((title, "No values: no request of the run has this figure.", None))
            return
        biggest = max((abs(y) for _, ys in series for y in ys if y is not None), default=0.0)
        scale = scale_for(unit, biggest)
        traces = [_series(name, xs, scale.apply(ys), i, scale.suffix) for i, (name, ys) in enumerate(series)]
        layout = base_layout(height, scale, time_axis=False, series=len(traces))
        x_title(layout, "seconds since the first request")
        _phase_bands(data, layout)
        figures.append((title, what, {"data": traces, "layout": layout}))

    span = f"per {width:g} s window"
    figure(
        "Requests per second",
        f"Requests sent and succeeded {span} (succeeded: by completion time).",
        [("sent", per_s(lambda w: w.sent)), ("succeeded", per_s(lambda w: w.succeeded))],
        "reqps",
    )
    figure(
        "Output tokens per second",
        f"Output tokens of succeeded requests {span}, by completion time.",
        [("output tokens/s", per_s(lambda w: w.output_tokens))],
        "tokps",
    )
    figure(
        "Requests in flight",
        f"Mean requests in flight {span} (time-weighted).",
        [("in flight", per_s(lambda w: w.busy_s))],
        "short",
    )
    figure(
        "TTFT percentiles",
        f"TTFT p50 and p95 {span}, by first-token time.",
        [("p50", pct("ttft", 50)), ("p95", pct("ttft", 95))],
        "s",
    )
    figure(
        "TPOT percentiles",
        f"TPOT p50 and p95 {span}, by completion time.",
        [("p50", pct("tpot", 50)), ("p95", pct("tpot", 95))],
        "s",
    )
    outcomes = sorted({o for w in windows if w for o in w.errors})
    if outcomes:
        figure(
            "Errors by class",
            f"Failed requests per second by outcome {span}.",
            [(o, per_s(lambda w, o=o: w.errors.get(o, 0))) for o in outcomes],
            "reqps",
        )
    else:
        figures.append(("Errors by class", "No request failed.", None))
    return figures


# ---------------------------------------------------------------------------------------------- sweep


def _objective(text: str) -> tuple[str, str, float] | None:
    match = re.fullmatch(r"(\w+)(<=|>=)(.+)", text)
    if not match:
        return None
    try:
        return match.group(1), match.group(2), float(match.group(3))
    except ValueError:
        return None


def sweep_figures(report: dict, height: int = 320) -> list[tuple[str, str, dict]]:
    """Throughput and each SLO's figure against the sweep's levels, SLO lines and the capacity marked."""
    phases = [(level_of(p), p) for p in report.get("phases", [])]
    phases = [(level, p) for level, p in phases if level is not None]
    if not phases:
        return []
    sweep = report.get("sweep") or {}
    unit = sweep.get("unit", "level")
    levels = [level for level, _ in phases]
    marks = _verdict_marks(sweep)
    out = []
    throughput = [
        ("requests/s", [p["throughput"].get("requests_per_s") for _, p in phases], "y"),
        ("output tokens/s", [p["throughput"].get("output_tokens_per_s") for _, p in phases], "y2"),
    ]
    traces = []
    for i, (name, ys, axis) in enumerate(throughput):
        trace = _series(name, levels, ys, i, "")
        trace.update(mode="lines+markers", yaxis=axis)
        traces.append(trace)
    layout = _level_layout(height, unit, marks)
    layout["yaxis"]["title"] = {"text": "requests/s", "font": {"size": 10}}
    layout["yaxis2"] = {
        "overlaying": "y",
        "side": "right",
        "title": {"text": "tokens/s", "font": {"size": 10}},
        "rangemode": "tozero",
        "showgrid": False,
        "automargin": True,
    }
    layout["margin"]["r"] = 56
    out.append(
        (
            "Throughput against load",
            f"Succeeded requests/s and output tokens/s at each level ({unit}).",
            {"data": traces, "layout": layout},
        )
    )
    for objective in (phases[0][1].get("slo") or {}).get("objectives", []):
        parsed = _objective(objective)
        if parsed is None:
            continue
        metric, op, threshold = parsed
        values = [(p.get("slo") or {}).get("values", {}).get(objective) for _, p in phases]
        unit_id = {"error_ratio": "percentunit", "user_tps": "tokps", "stream_tps": "tokps"}.get(metric, "s")
        biggest = max([abs(v) for v in values if isinstance(v, (int, float))] + [threshold])
        scale = scale_for(unit_id, biggest)
        judged = (phases[0][1].get("slo") or {}).get("percentile", 95)
        label = (
            "error ratio"
            if metric == "error_ratio"
            else f"p{judged if op == '<=' else 100 - judged:g} {metric}"
        )
        trace = _series(label, levels, scale.apply(values), 0, scale.suffix)
        trace["mode"] = "lines+markers"
        layout = _level_layout(height, unit, marks)
        layout["yaxis"]["ticksuffix"] = scale.suffix
        layout["shapes"].append(
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": threshold * scale.factor,
                "y1": threshold * scale.factor,
                "line": {"color": "#b42318", "dash": "dash"},
            }
        )
        readable = f"{metric} {op} {format_value(threshold, unit_id)}"  # ttft<=0.3 reads ttft <= 300 ms
        layout["annotations"].append(
            {
                "xref": "paper",
                "x": 1,
                "y": threshold * scale.factor,
                "showarrow": False,
                "text": f"SLO {readable}",
                "xanchor": "right",
                "yanchor": "bottom",
                "font": {"size": 10, "color": "#b42318"},
            }
        )
        what = f"The figure the SLO {readable} is judged on, at each level; dashed: the objective."
        out.append((f"SLO {readable}", what, {"data": [trace], "layout": layout}))
    return out


def _verdict_marks(sweep: dict) -> list[tuple[float, str, str]]:
    marks = []
    if isinstance(sweep.get("capacity"), (int, float)):
        marks.append((float(sweep["capacity"]), "capacity", "#1a7f37"))
    if isinstance(sweep.get("first_failing"), (int, float)):
        marks.append((float(sweep["first_failing"]), "first miss", "#b42318"))
    return marks


def _level_layout(height: int, unit: str, marks: list[tuple[float, str, str]]) -> dict:
    layout = base_layout(height, time_axis=False)
    x_title(layout, unit)
    layout["shapes"] = [
        {
            "type": "line",
            "yref": "paper",
            "x0": x,
            "x1": x,
            "y0": 0,
            "y1": 1,
            "line": {"color": color, "dash": "dot", "width": 1.5},
        }
        for x, _, color in marks
    ]
    layout["annotations"] = [
        {
            "x": x,
            "yref": "paper",
            "y": 1,
            "text": text,
            "showarrow": False,
            "yanchor": "bottom",
            "font": {"size": 10, "color": color},
        }
        for x, text, color in marks
    ]
    layout["margin"]["t"] = 18
    return layout


def _round(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, 5 - math.floor(math.log10(abs(value))))
