"""A panel's data as people see it: plotly figures for time series, heatmaps and state timelines, a
value for a stat, an HTML table for a table. The same units, legends, thresholds and y-range as the
Grafana panel, from the same catalog entry.

Gaps stay gaps (Grafana's spanNulls false): a point more than 1.5 steps after the previous one starts a
new segment. NaN and ±Inf are not drawn.
"""

from __future__ import annotations

import math

from grafana.model import Panel, Step
from grafana.snapshot.fetch import PanelData
from grafana.snapshot.page import esc
from grafana.snapshot.units import Scale, format_value, scale_for

__all__ = [
    "PALETTE",
    "base_layout",
    "heatmap_figure",
    "stat_body",
    "table_body",
    "threshold_color",
    "time_tickformat",
    "timeline_figure",
    "timeseries_figure",
]

# Grafana's classic palette, so a snapshot looks like the dashboard.
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62",
           "#584477"]  # fmt: skip
CSS_COLOR = {"green": "green", "orange": "orange", "red": "red"}


def base_layout(height_px: int, scale: Scale | None = None, time_axis: bool = True, series: int = 1) -> dict:
    """Grafana-like looks: white, light grid, legend under the plot (beside it when there are many)."""
    layout: dict = {
        "height": height_px,
        "margin": {"l": 56, "r": 12, "t": 6, "b": 28},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "font": {"family": "system-ui, sans-serif", "size": 11, "color": "#1f2328"},
        "showlegend": True,
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.1, "x": 0, "font": {"size": 10}},
        "hovermode": "x unified" if time_axis else "closest",
        "xaxis": {"gridcolor": "#eef1f4", "zeroline": False},
        "yaxis": {"gridcolor": "#eef1f4", "zeroline": False, "rangemode": "tozero", "automargin": True},
    }
    if series > 6:
        layout["legend"] = {"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 10}}
    if time_axis:
        # one line of tick labels (the page's header says the day), so the legend below never covers them
        layout["xaxis"].update(type="date", tickformat="%H:%M", hoverformat="%Y-%m-%d %H:%M:%S UTC")
    if scale is not None:
        layout["yaxis"]["ticksuffix"] = scale.suffix
        if scale.tickformat:
            layout["yaxis"]["tickformat"] = scale.tickformat
    return layout


def time_tickformat(span_s: float) -> str:
    """Tick labels that tell a window's ticks apart on one line: seconds for a short window (a 2-minute
    run's ticks 20 s apart all read 20:55 with minutes only), the day for one of several days."""
    if span_s <= 20 * 60:
        return "%H:%M:%S"
    if span_s > 2 * 86400:
        return "%m-%d %H:%M"
    return "%H:%M"


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _magnitude(data: PanelData) -> float:
    values = [abs(v) for line in data.lines for _, v in line.series.points if _finite(v)]
    return max(values, default=0.0)


def _segments(
    points: list[tuple[float, float]], step: float
) -> tuple[list[float | None], list[float | None]]:
    """x (ms) and y with a None between points further apart than 1.5 steps, and for NaN/Inf."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    previous = None
    for t, v in points:
        if previous is not None and t - previous > 1.5 * step:
            xs.append(None)
            ys.append(None)
        xs.append(round(t * 1000))
        ys.append(v if _finite(v) else None)
        previous = t
    return xs, ys


def timeseries_figure(data: PanelData, height_px: int, step: float) -> dict:
    panel = data.panel
    scale = scale_for(panel.unit, _magnitude(data))
    traces = []
    for i, line in enumerate(data.lines):
        xs, ys = _segments(line.series.points, step)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": esc(line.legend) or " ",
                "x": xs,
                "y": [None if y is None else _round(y * scale.factor) for y in ys],
                "line": {"width": 1.5, "color": PALETTE[i % len(PALETTE)]},
                "fill": "tozeroy" if len(data.lines) == 1 else "none",
                "fillcolor": _alpha(PALETTE[i % len(PALETTE)], 0.1),
                "hovertemplate": f"%{{y:.4~g}}{esc(scale.suffix)}",
                "connectgaps": False,
            }
        )
    layout = base_layout(height_px, scale, series=len(traces))
    _y_range(layout, panel, scale)
    _threshold_lines(layout, panel, scale)
    return {"data": traces, "layout": layout}


def _y_range(layout: dict, panel: Panel, scale: Scale) -> None:
    if panel.min is not None and panel.max is not None:
        layout["yaxis"]["range"] = [panel.min * scale.factor, panel.max * scale.factor]
    elif panel.min is not None:
        layout["yaxis"]["rangemode"] = "tozero" if panel.min == 0 else "normal"


def _threshold_lines(layout: dict, panel: Panel, scale: Scale) -> None:
    """Dashed lines at a panel's thresholds when it has more than the default single step."""
    shapes = [
        {
            "type": "line",
            "xref": "paper",
            "x0": 0,
            "x1": 1,
            "y0": value * scale.factor,
            "y1": value * scale.factor,
            "line": {"color": color, "dash": "dash", "width": 1},
        }
        for value, color in panel.thresholds
        if value is not None
    ]
    if shapes:
        layout["shapes"] = shapes


def heatmap_figure(data: PanelData, height_px: int) -> dict:
    """Cumulative `le` buckets per time step, de-accumulated into counts per bucket (Grafana's heatmap
    format)."""
    panel = data.panel
    buckets = sorted(
        ((_le(line.series.labels.get("le", "")), line) for line in data.lines), key=lambda item: item[0]
    )
    times = sorted({t for _, line in buckets for t, _ in line.series.points})
    columns = {t: i for i, t in enumerate(times)}
    previous = [0.0] * len(times)
    rows, names = [], []
    for bound, line in buckets:
        cumulative = [0.0] * len(times)
        for t, v in line.series.points:
            cumulative[columns[t]] = v if _finite(v) else 0.0
        counts = [max(0.0, c - p) for c, p in zip(cumulative, previous, strict=True)]
        rows.append([_round(count) if count > 0 else None for count in counts])  # empty cells stay blank
        previous = cumulative
        names.append("+Inf" if math.isinf(bound) else format_value(bound, panel.unit))
    trace = {
        "type": "heatmap",
        "x": [round(t * 1000) for t in times],
        "y": names,
        "z": rows,
        "colorscale": [[0, "#fdd0a2"], [0.5, "#f16913"], [1, "#7f2704"]],
        "showscale": False,
        "hovertemplate": "%{y}: %{z:.3~g}<extra></extra>",
    }
    layout = base_layout(height_px)
    layout["yaxis"].update(type="category", rangemode="normal")
    layout["showlegend"] = False
    return {"data": [trace], "layout": layout}


def timeline_figure(data: PanelData, height_px: int, step: float) -> dict:
    """One row per series: coloured while its value is non-zero (Grafana's state timeline)."""
    times = sorted({t for line in data.lines for t, _ in line.series.points})
    columns = {t: i for i, t in enumerate(times)}
    rows, names = [], []
    for line in data.lines:
        row: list[float | None] = [None] * len(times)
        for t, v in line.series.points:
            row[columns[t]] = v if _finite(v) else None
        rows.append(row)
        names.append(esc(line.legend))
    trace = {
        "type": "heatmap",
        "x": [round(t * 1000) for t in times],
        "y": names,
        "z": rows,
        "zmin": 0,
        "zmax": 1,
        "colorscale": [[0, "#eef1f4"], [1, "#5794f2"]],
        "showscale": False,
        "xgap": 0,
        "ygap": 2,
        "hovertemplate": "%{y}: %{z}<extra></extra>",
    }
    layout = base_layout(height_px)
    layout["yaxis"].update(type="category", rangemode="normal", automargin=True)
    layout["showlegend"] = False
    return {"data": [trace], "layout": layout}


def threshold_color(steps: tuple[Step, ...], value: float) -> str:
    color = steps[0][1]
    for bound, step_color in steps[1:]:
        if bound is not None and value >= bound:
            color = step_color
    return CSS_COLOR.get(color, "")


def stat_body(data: PanelData) -> str:
    """The last non-null value of each series (Grafana's lastNotNull), coloured by the thresholds."""
    panel = data.panel
    parts = []
    for line in data.lines[:4]:
        finite = [v for _, v in line.series.points if _finite(v)]
        if not finite:
            continue
        value = finite[-1]
        color = threshold_color(panel.thresholds, value)
        label = f"<small>{esc(line.legend)}</small>" if len(data.lines) > 1 else ""
        parts.append(
            f'<div class="stat {color}" data-value="{value!r}">'
            f"{esc(format_value(value, panel.unit))}{label}</div>"
        )
    return "".join(parts)


def table_body(data: PanelData) -> str:
    """Instant results as rows: one column per label (Time, Value and __name__ hidden, as the dashboard
    does)."""
    columns = sorted({k for line in data.lines for k in line.series.labels if k != "__name__"})
    head = "".join(f'<th class="text">{esc(c)}</th>' for c in columns)
    rows = sorted(tuple(line.series.labels.get(c, "") for c in columns) for line in data.lines)
    body = "".join("<tr>" + "".join(f'<td class="text">{esc(v)}</td>' for v in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _le(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def _round(value: float) -> float:
    """Six significant digits: the page stays small and nothing a person reads changes."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, 5 - math.floor(math.log10(abs(value))))


def _alpha(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
