"""Run a catalog panel's queries against Prometheus over a window: the data a figure is drawn from.

Range panels (time series, stats, heatmaps, state timelines) use query_range over the window; tables use
an instant query at its end, as Grafana does for `instant` targets. A query that fails leaves its error
in the panel's data (the page shows it) and the other queries go on; a panel keeps at most
`max_series` series and says how many it left out. Losing Prometheus altogether (Unreachable) or running
out of time (BudgetExceeded) stops the job: the caller marks the panels not yet queried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from grafana.model import Panel, Query
from grafana.snapshot.prometheus import BudgetExceeded, Prometheus, PrometheusError, Series, Unreachable
from grafana.snapshot.resolve import ResolveError, Window, substitute

__all__ = ["Line", "PanelData", "fetch_panel", "legend_text"]

_PLACEHOLDER = re.compile(r"\{\{\s*([^}\s]+)\s*\}\}")


@dataclass(frozen=True)
class Line:
    query: int  # index of the panel's query it came from
    legend: str
    series: Series


@dataclass
class PanelData:
    panel: Panel
    lines: list[Line] = field(default_factory=list)
    left_out: int = 0  # series beyond the budget
    errors: list[str] = field(default_factory=list)
    exprs: list[str] = field(default_factory=list)  # the queries as sent

    @property
    def has_data(self) -> bool:
        return any(any(value == value for _, value in line.series.points) for line in self.lines)


def legend_text(legend: str, labels: dict[str, str], expr: str) -> str:
    """Grafana's legendFormat: `{{label}}` placeholders (a missing label gives ''); `__auto` or none gives
    the metric name and labels, or the expression when the series has no labels."""
    if legend and legend != "__auto":
        return _PLACEHOLDER.sub(lambda m: labels.get(m.group(1), ""), legend).strip()
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    if not name and not rest:
        return " ".join(expr.split())[:80]
    return f"{name}{{{rest}}}" if rest else name


def fetch_panel(prom: Prometheus, panel: Panel, values: dict[str, str], window: Window) -> PanelData:
    data = PanelData(panel)
    variables = {**values, **window.builtins()}
    found: list[Line] = []
    for index, query in enumerate(panel.queries):
        try:
            expr = substitute(query.expr, variables)
        except ResolveError as exc:
            data.errors.append(f"query {_ref(index)}: {exc}")
            continue
        data.exprs.append(expr)
        try:
            result = _run(prom, query, expr, window)
        except (Unreachable, BudgetExceeded) as exc:
            if isinstance(exc, BudgetExceeded) and "time budget" not in str(exc):
                data.errors.append(f"query {_ref(index)}: {exc}")
                continue
            raise
        except PrometheusError as exc:
            data.errors.append(f"query {_ref(index)}: {exc}")
            continue
        found += [Line(index, legend_text(query.legend, s.labels, expr), s) for s in result]
    found.sort(key=lambda line: (line.query, line.legend))  # the same series kept on every run
    limit = prom.budget.max_series
    data.lines, data.left_out = found[:limit], max(0, len(found) - limit)
    return data


def _run(prom: Prometheus, query: Query, expr: str, window: Window) -> list[Series]:
    if query.instant:
        return prom.query(expr, window.end)
    return prom.query_range(expr, window.start, window.end, window.step)


def _ref(index: int) -> str:
    return chr(ord("A") + index)
