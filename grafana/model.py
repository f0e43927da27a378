"""The panel catalog's vocabulary: panels, their queries, units, legends and thresholds, template variables,
annotations and dashboards, as plain frozen data that knows nothing about any renderer.

`render_grafana` turns a `Dashboard` into Grafana's JSON model; `grafana.snapshot` runs the same queries
against Prometheus and draws the same panels into one HTML file. A panel's position comes from the order
of the catalog: rows start a new line, panels pack left to right in a 24-column grid (`layout`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ATTAINMENT",
    "ERRORS",
    "GREEN",
    "RATIO_HIGH_BAD",
    "Annotation",
    "CustomVariable",
    "Dashboard",
    "Panel",
    "PanelKind",
    "Placed",
    "Query",
    "QueryVariable",
    "Step",
    "Variable",
    "heatmap",
    "layout",
    "q",
    "row",
    "stat",
    "table",
    "thresholds",
    "timeline",
    "timeseries",
]

PanelKind = Literal["timeseries", "stat", "table", "heatmap", "state-timeline", "row"]
GRID_COLUMNS = 24

Step = tuple[float | None, str]  # (lower bound, colour); the first step has no lower bound


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""  # Grafana's legendFormat: "{{label}}" placeholders, "" = automatic
    instant: bool = False
    table: bool = False
    heatmap: bool = False


@dataclass(frozen=True)
class Panel:
    kind: PanelKind
    title: str
    description: str
    queries: tuple[Query, ...] = ()
    unit: str = "short"  # Grafana's unit ids: s, percentunit, bytes, reqps, watt, ...
    width: int = 12
    height: int = 8
    thresholds: tuple[Step, ...] = ((None, "green"),)
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class QueryVariable:
    """A multi-value variable whose choices come from label values; "All" means the regex `.*`."""

    name: str
    label: str
    query: str  # label_values(selector, label)
    all_value: str = ".*"


@dataclass(frozen=True)
class CustomVariable:
    """A single-value variable with fixed choices (the SLO thresholds)."""

    name: str
    label: str
    values: tuple[str, ...]
    default: str
    description: str


Variable = QueryVariable | CustomVariable


@dataclass(frozen=True)
class Annotation:
    """Events from a query: one marker per series while it is non-zero, titled from its labels."""

    name: str
    expr: str
    title_format: str
    tag_keys: str = ""
    step: str = "5s"
    color: str = "purple"


@dataclass(frozen=True)
class Dashboard:
    name: str  # file stem under grafana/dashboards/ and the snapshot's --dashboard choice
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: tuple[Panel, ...]
    annotations: tuple[Annotation, ...] = field(default=())


@dataclass(frozen=True)
class Placed:
    """A panel with its id and position in the 24-column grid (Grafana's gridPos)."""

    panel: Panel
    id: int
    x: int
    y: int


def layout(panels: Iterable[Panel]) -> list[Placed]:
    """Pack panels left to right into the 24-column grid; rows start on a new line."""
    out, x, y, line_height = [], 0, 0, 0
    for panel_id, panel in enumerate(panels, start=1):
        if panel.kind == "row" or x + panel.width > GRID_COLUMNS:
            x, y, line_height = 0, y + line_height, 0
        out.append(Placed(panel, panel_id, x, y))
        x += panel.width
        line_height = max(line_height, panel.height)
        if panel.kind == "row":
            x, y, line_height = 0, y + panel.height, 0
    return out


# ---------------------------------------------------------------------------------------------- builders


def thresholds(*steps: Step) -> tuple[Step, ...]:
    return steps


GREEN: Step = (None, "green")
RATIO_HIGH_BAD = thresholds(GREEN, (0.9, "orange"), (0.98, "red"))
ATTAINMENT = thresholds((None, "red"), (0.9, "orange"), (0.99, "green"))
ERRORS = thresholds(GREEN, (0.001, "orange"), (0.01, "red"))


def q(expr: str, legend: str = "", **kwargs: bool) -> Query:
    return Query(expr, legend, **kwargs)


def timeseries(title: str, description: str, queries: Sequence[Query], unit: str = "short", **kw) -> Panel:
    return Panel("timeseries", title, description, tuple(queries), unit, **kw)


def stat(title: str, description: str, query: Query, unit: str = "short", **kw) -> Panel:
    kw.setdefault("width", 4)
    kw.setdefault("height", 4)
    return Panel("stat", title, description, (query,), unit, **kw)


def table(title: str, description: str, query: Query, **kw) -> Panel:
    query = Query(query.expr, query.legend, instant=True, table=True)
    return Panel("table", title, description, (query,), **kw)


def heatmap(title: str, description: str, expr: str, unit: str = "s", **kw) -> Panel:
    return Panel("heatmap", title, description, (Query(expr, "{{le}}", heatmap=True),), unit, **kw)


def timeline(title: str, description: str, queries: Sequence[Query], **kw) -> Panel:
    return Panel("state-timeline", title, description, tuple(queries), **kw)


def row(title: str) -> Panel:
    return Panel("row", title, "", width=GRID_COLUMNS, height=1)
